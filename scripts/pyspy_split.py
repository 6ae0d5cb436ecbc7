"""Where a client process's CPU time went, from a py-spy raw profile: seconds and shares by part.

    py-spy record --nonblocking --threads --format raw --rate 100 -o client.txt -- \\
        python scripts/load_test.py --concurrency 8 ...
    python scripts/pyspy_split.py client.txt --rate 100 [--wall-s 64 --threads 9]

py-spy samples only threads on the CPU unless given ``--idle``, so the samples over the rate are
the CPU seconds of the process's threads. Each sample counts for the innermost frame that falls
into one of ``PARTS`` (the HTTP client, the tokenizer, JSON, the SGLang frontend, ...). With
``--wall-s`` and ``--threads`` it also prints the time the threads spent off the CPU (waiting
for the runtimes, for each other or for the GIL): threads x wall time less the CPU seconds.
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Dict, Iterable, Tuple

#: (part, file name pieces of its frames), the first that matches a frame wins
PARTS = (
    ("tokenizer", ("tokenizers", "transformers/", "sgl_specreason/tokens")),
    ("HTTP client (Endpoint, httpx, urllib, sockets)",
     ("sgl_specreason/backend", "httpx/", "httpcore/", "h11/", "urllib/", "http/client", "requests/",
      "socket.py", "ssl.py", "selectors.py", "sglang/utils")),
    ("JSON", ("orjson", "json/")),
    ("judging (scores, numpy)", ("numpy/", "sgl_specreason/judges")),
    ("SGLang frontend (programs' interpreter)", ("sglang/",)),
    ("SpecReason programs and library", ("sgl_specreason/", "programs/")),
    ("threads, queues, futures", ("threading.py", "queue.py", "concurrent/")),
    ("imports and start-up", ("importlib", "<frozen")),
)


def part_of(frames: Iterable[str]) -> str:
    """The part of the innermost frame that belongs to one (frames from the outermost on).

    >>> part_of(["<module> (load_test.py:1)", "Endpoint.request (sgl_specreason/backend.py:160)",
    ...          "Client.send (httpx/_client.py:914)"])
    'HTTP client (Endpoint, httpx, urllib, sockets)'
    """
    for frame in reversed(list(frames)):
        for part, pieces in PARTS:
            if any(piece in frame for piece in pieces):
                return part
    return "other"


def split(lines: Iterable[str]) -> Tuple[int, Dict[str, int]]:
    """Samples in all, and by part, of py-spy's raw (collapsed stack) lines.

    >>> split(["thread (1);main (a.py:1);dumps (json/encoder.py:2) 3", "thread (2);wait (threading.py:9) 1"])
    (4, {'JSON': 3, 'threads, queues, futures': 1})
    """
    total, parts = 0, collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            frames = frames[1:]
        total += int(count)
        parts[part_of(frames)] += int(count)
    return total, dict(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyspy_split.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's --rate (samples/s)")
    parser.add_argument("--wall-s", type=float, help="wall time the threads ran, to print their waiting")
    parser.add_argument("--threads", type=int, help="client threads over that wall time")
    args = parser.parse_args(argv)
    with open(args.profile, encoding="utf-8", errors="replace") as handle:
        total, parts = split(handle)
    if not total:
        print(f"no samples in {args.profile}", file=sys.stderr)
        return 1
    cpu = total / args.rate
    print(f"on the CPU: {total} samples = {cpu:.2f} CPU s at {args.rate:g} Hz")
    for part, count in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {part:48s} {count / args.rate:8.2f} s  {100 * count / total:5.1f} %")
    if args.wall_s and args.threads:
        held = args.wall_s * args.threads
        print(f"off the CPU (waiting): {held - cpu:.1f} of {held:.1f} thread-seconds "
              f"({100 * (held - cpu) / held:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
