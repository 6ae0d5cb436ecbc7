"""Which judge tells a good step from a bad one where the steps hold no arithmetic: real drafts of
general requests against their corrupted twins, the judge benchmark's method.

    python -m eval.general_judges --records eval/reports/general-requests/records.jsonl \\
        --out-dir eval/reports/general-requests/judges

The drafts are the draft model's own steps from ``eval.general_requests``'s records (each
``specreason`` reply's trace: every drafted step, kept or not, with the steps kept before it).
``eval.corrupt_text`` makes one twin per request and kind of corruption (a flipped polar word,
two words swapped, a step drafted for another request, the step before written again). Every
judge of ``eval.judge_bench`` scores both on the base runtime, in the conversation as ``serve``
frames it (``plain``): the report gives each judge's AUROC, overall and per kind, and the cut
that separates them best. Records are appended as they come; a rerun goes on where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.eval.corrupt_text import KINDS, make_pairs
from sgl_specreason.eval.datasets import general_requests as load_requests
from sgl_specreason.eval.judge_bench import build_report, judge_pair_step, show, write_report
from sgl_specreason.flags import add_config_flags, add_runtime_flags, config_from_args, guarded, runtime_options
from sgl_specreason.framing import PLAIN, frame
from sgl_specreason.runner import open_runtimes
from sgl_specreason.store import ResultStore, read_records
from sgl_specreason.trace import BASE


def drafted_steps(records: List[dict]) -> List[dict]:
    """Every drafted step of the ``specreason`` replies' traces, with the request's messages and
    the steps kept before it: ``{"request", "messages", "index", "earlier", "step"}``."""
    messages = {r["id"]: r["messages"] for r in load_requests()}
    out = []
    for record in records:
        if record.get("way") != "specreason" or not record.get("trace") or record["id"] not in messages:
            continue
        steps = record["trace"]["steps"]
        for i, step in enumerate(steps):
            if step.get("draft_text"):
                out.append({"request": record["id"], "messages": messages[record["id"]], "index": i,
                            "earlier": [s["text"] for s in steps[:i]], "step": step["draft_text"]})
    return out


def run(args) -> int:
    cfg: SpecReasonConfig = config_from_args(args)
    drafts = drafted_steps(read_records(args.records, require="way"))
    store = ResultStore(args.out_dir / "judge_records.jsonl")
    done = store.done(lambda r: (r["pair"], r["variant"]), require="pair")
    with open_runtimes(runtime_options(args, parallel=1), cfg, (BASE,)) as roles:
        base = roles[BASE]
        for d in drafts:  # the conversation as serve frames it for this runtime's template
            d["question"] = frame([(m["role"], m["content"]) for m in d["messages"]], PLAIN,
                                  templates=[base.template])
        pairs = make_pairs(drafts, args.corruption_seed, args.kinds)
        todo = [(p, v) for p in pairs for v in ("original", "corrupted") if (p.id, v) not in done]
        print(f"{len(drafts)} drafted steps of {len({d['request'] for d in drafts})} requests; "
              f"{len(pairs)} pairs; {len(todo)} steps to judge, {2 * len(pairs) - len(todo)} done before")
        started = time.perf_counter()
        with store.append() as writer:
            for i, (pair, variant) in enumerate(todo, 1):
                record = judge_pair_step(base, pair, variant, cfg)
                writer.write(record)
                shown = " ".join(f"{m} {v:.2f}" for m, v in record["scores"].items())
                print(f"[{i}/{len(todo)} {time.perf_counter() - started:6.0f} s] {pair.id} {variant:<9} {shown}",
                      flush=True)
    wanted = {p.id for p in pairs}
    records = [r for r in store.read("pair") if r["pair"] in wanted]
    report = build_report(records, kinds=args.kinds)
    return show(report, write_report(report, records, args.out_dir))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.general_judges", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("eval/reports/general-requests/judges"))
    add_config_flags(parser)
    add_runtime_flags(parser)
    parser.add_argument("--records", type=Path, default=Path("eval/reports/general-requests/records.jsonl"),
                        help="eval.general_requests's records, whose traces hold the drafts")
    parser.add_argument("--corruption-seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args(argv)
    return guarded(lambda: run(args), "interrupted; the local runtime stopped, judged steps kept: "
                                      "rerun the same command to go on")


if __name__ == "__main__":
    sys.exit(main())
