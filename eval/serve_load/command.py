"""The serve load measurement's command line (``python -m eval.serve_load``): its flags, the plan
they make, and what it does with it: measure the runs still to do (or only show them with
``--dry-run``, or none with ``--report-only``), then write the report from the final record of
each run; also the commands as the report shows them, as a user would type them."""

from __future__ import annotations

import argparse
import shlex
import sys
from importlib import import_module
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from sgl_specreason.eval.serve_load.bench import bench_command
from sgl_specreason.eval.serve_load.measurement import measure
from sgl_specreason.eval.serve_load.runs import SERVE, Run, Setup, final_records, plan, remaining
from sgl_specreason.eval.serve_load.processes import REPO, Ports, batch_data_dir, serve_command
from sgl_specreason.eval.serve_load.report import verdicts, write_report
from sgl_specreason.store import ResultStore


def shown_commands(runs: Sequence[Run], setup: Setup) -> Tuple[str, List[str]]:
    """The serve command and the load generator's command of each run, as a user would type
    them: the default ports (the script picks free ones), paths under ``logs/serve-load``."""
    ports = Ports(8000, 30001, 30000)
    work = Path("logs/serve-load")
    folder = f"~/.cache/sgl-specreason/models/{setup.model}/hf" if "/" not in setup.model else setup.model
    max_queue = max([256] + [r.concurrency for r in runs])
    serve = shlex.join(["sgl-specreason"] + serve_command(setup, ports, work / "logs", max_queue,
                                                          data_dir=batch_data_dir(runs, work))[3:])
    benches = []
    for run in runs:
        through_serve = run.target == SERVE
        cmd = bench_command(run, ports.serve_url if through_serve else ports.base_url, setup, "MODEL_DIR",
                            work / "gsm8k-train-sharegpt.json", work / f"{run.name}.jsonl",
                            "specreason" if through_serve else None)
        benches.append(shlex.join(["python"] + cmd[1:]).replace("MODEL_DIR", folder))
    return serve, benches


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    d = Setup()
    p = argparse.ArgumentParser(prog="python -m eval.serve_load", description=import_module(__package__).__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "eval" / "reports" / "serve-load",
                   help="report.jsonl, README.md and the plot go here")
    p.add_argument("--work-dir", type=Path, default=REPO / "logs" / "serve-load",
                   help="logs, the prompt file and the load generator's raw output")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="the levels")
    p.add_argument("--num-prompts", type=int, nargs="+", default=[4, 16, 32],
                   help="requests per level, one per --concurrency value")
    p.add_argument("--input-len", type=int, default=128, help="--random-input-len")
    p.add_argument("--output-len", type=int, default=64, help="--random-output-len (serve's token budget)")
    p.add_argument("--range-ratio", type=float, default=d.range_ratio, help="--random-range-ratio")
    p.add_argument("--beside-batch-lines", type=int, default=0,
                   help="also run each level through serve while an OpenAI batch of this many chat lines runs on "
                        "serve's /v1/batches beside it (0: no such runs)")
    p.add_argument("--memory-requests", type=int, default=200, help="requests of the memory run (0: none)")
    p.add_argument("--memory-concurrency", type=int, default=32)
    p.add_argument("--memory-input-len", type=int, default=32)
    p.add_argument("--memory-output-len", type=int, default=8)
    p.add_argument("--model", default=d.model, help="draft and base model (an offline name or a folder)")
    p.add_argument("--threads", type=int, default=d.threads, help="OMP threads per runtime")
    p.add_argument("--max-total-tokens", type=int, default=d.max_total_tokens, help="KV pool per runtime")
    p.add_argument("--judge", default=d.judge)
    p.add_argument("--threshold", type=float, default=d.threshold)
    p.add_argument("--answer-max-tokens", type=int, default=d.answer_max_tokens)
    p.add_argument("--max-in-flight", type=int, default=d.max_in_flight, help="serve's runs at once")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--serve-flags", default="", help="more sgl-specreason serve flags, one string")
    p.add_argument("--run-timeout", type=float, default=1800,
                   help="seconds one load generator run may take (the 200-request memory run took 16 min "
                        "on 2 CPU cores)")
    p.add_argument("--start-timeout", type=float, default=900, help="seconds serve and its runtimes may take to start")
    p.add_argument("--sample-seconds", type=float, default=1.0, help="seconds between two memory samples")
    p.add_argument("--dry-run", action="store_true", help="print the commands; start nothing")
    p.add_argument("--report-only", action="store_true", help="write README.md and the plot from report.jsonl")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup = Setup(model=args.model, threads=args.threads, max_total_tokens=args.max_total_tokens,
                  judge=args.judge, threshold=args.threshold, answer_max_tokens=args.answer_max_tokens,
                  max_in_flight=args.max_in_flight, seed=args.seed, range_ratio=args.range_ratio,
                  serve_flags=args.serve_flags)
    memory = None
    if args.memory_requests > 0:
        memory = (args.memory_requests, args.memory_concurrency, args.memory_input_len, args.memory_output_len)
    try:
        runs = plan(args.concurrency, args.num_prompts, args.input_len, args.output_len, memory,
                    args.beside_batch_lines)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    store = ResultStore(args.out / "report.jsonl")
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    command = "python -m eval.serve_load " + shlex.join(given)  # the measurement, not the rewrite
    serve_cmd, examples = shown_commands(runs, setup)
    if args.dry_run:
        print("# serve (ports chosen free at the start):")
        print(serve_cmd)
        todo = remaining(runs, setup, store.read("key"))
        print(f"# {len(todo)} of {len(runs)} runs to do ({len(runs) - len(todo)} in {store.path}):")
        print("\n".join(shown_commands(todo, setup)[1]))
        return 0
    failed = False
    if not args.report_only:
        todo = remaining(runs, setup, store.read("key"))
        print(f"{len(todo)} of {len(runs)} runs to do; {len(runs) - len(todo)} already in {store.path}")
        if todo:
            try:
                measure(todo, setup, args, store)
            except KeyboardInterrupt:
                print(f"interrupted; what was started is stopped. A rerun resumes from {store.path}", file=sys.stderr)
                return 130
            except RuntimeError as e:  # serve did not start, or went away: report what was done
                print(f"error: {e}", file=sys.stderr)
                failed = True
    records = final_records(runs, setup, store.read("key"))
    if not records:
        return 2 if failed else 0
    path = write_report(records, setup, args.out, command.strip(), serve_cmd, examples[:2])
    print(f"report: {path} ({len(records)} of {len(runs)} runs)")
    print("\n".join(verdicts(records)))
    incomplete = failed or len(records) < len(runs) or any(r.get("error") or r["errors"] for r in records)
    return 1 if incomplete else 0
