"""The time one runtime request costs outside the runtime's own measure of it.

    python scripts/request_overhead.py --url http://127.0.0.1:30000 --requests 200

The load test's "client time per step" is a step's wall time minus the ``e2e_latency`` its calls
report; SGLang starts that clock when its tokenizer manager takes the request, so every request
also carries what lies outside it: the HTTP round trip, the server's web framework, and the
encoding and decoding of the JSON on both sides. This sends requests one at a time over the same
pooled keep-alive client the programs use (``Endpoint``), with nothing else of the library in
the way, and prints per request, p50 / p90 / p99 in ms:

- ``/generate`` of one token: wall time, the runtime's ``e2e_latency``, and wall minus it;
- ``/get_model_info``: wall time of a request that never reaches the model (the HTTP stack alone).

A SpecReason step sends 3-4 requests, so 3-4 times the ``/generate`` figure is what its client
time cannot go under on this machine, whatever the client does.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgl_specreason.backend import Endpoint  # noqa: E402
from sgl_specreason.flags import guarded, positive_float, positive_int  # noqa: E402
from sgl_specreason.loadtest import percentiles  # noqa: E402

#: about 100 tokens of prompt, like the newest step of a judge call (the rest is cached)
PROMPT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
          "in May. How many clips did Natalia sell altogether in April and May? ") * 2


def measure(endpoint: Endpoint, requests: int) -> dict:
    generate = {"wall": [], "e2e": [], "outside": []}
    info = []
    for _ in range(requests):
        started = time.perf_counter()
        reply = endpoint.request("/generate", {"text": PROMPT, "sampling_params": {
            "max_new_tokens": 1, "temperature": 0.0}})
        wall = (time.perf_counter() - started) * 1000
        e2e = reply["meta_info"]["e2e_latency"] * 1000
        generate["wall"].append(wall)
        generate["e2e"].append(e2e)
        generate["outside"].append(wall - e2e)
        started = time.perf_counter()
        endpoint.request("/get_model_info")
        info.append((time.perf_counter() - started) * 1000)
    return {"generate": {k: percentiles(v) for k, v in generate.items()},
            "get_model_info": percentiles(info)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a running SGLang server")
    parser.add_argument("--requests", type=positive_int, default=200)
    parser.add_argument("--warmup", type=int, default=10, help="requests sent first, not counted")
    parser.add_argument("--keep-alive", type=positive_float, default=119.0, metavar="SECONDS",
                        help="seconds an idle connection is kept (the server must keep it as long)")
    parser.add_argument("--out", type=Path, help="also write the figures here, JSON")
    args = parser.parse_args(argv)

    def run() -> int:
        endpoint = Endpoint(args.url, role="measured", keepalive=args.keep_alive)
        try:
            if args.warmup:
                measure(endpoint, args.warmup)
            figures = measure(endpoint, args.requests)
        finally:
            endpoint.close()
        figures["url"], figures["model"], figures["requests"] = args.url, endpoint.model_path, args.requests
        print(f"{args.requests} requests of each kind, one at a time, to {args.url} ({endpoint.model_path})")
        for name, row in [(f"/generate {k}", v) for k, v in figures["generate"].items()] + [
                ("/get_model_info wall", figures["get_model_info"])]:
            print(f"{name:24s} p50 {row['p50']:7.2f}  p90 {row['p90']:7.2f}  p99 {row['p99']:7.2f} ms")
        if args.out:
            args.out.write_text(json.dumps(figures, indent=1) + "\n")
        return 0

    return guarded(run, "interrupted")


if __name__ == "__main__":
    sys.exit(main())
