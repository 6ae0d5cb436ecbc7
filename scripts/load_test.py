"""Load test: SpecReason and base-only side by side under concurrent load, on two runtimes.

    python scripts/load_test.py --concurrency 1 2 4 8 --num-problems 16 --max-seconds 600
    python scripts/load_test.py --request-rates 0.05 0.1 --draft-url http://gpu0:30000 \\
        --base-url http://gpu1:30000 --concurrency 1 8 32 64 --num-problems 256

Closed loop at each ``--concurrency`` (clients that start a new problem when their last one is
done) and open loop at each ``--request-rates`` (seeded Poisson arrivals); each level is bounded
by ``--num-problems`` and ``--max-seconds`` and runs every ``--modes`` on the same GSM8K problems
(or ``--data-path``), each mode from emptied radix caches. Writes ``load_test.jsonl`` (SGLang's
benchmark style), ``load_test.md`` and ``load_test.png`` to ``--out-dir``. Traffic goes only to
the given URLs, or to the local runtimes it starts on loopback.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgl_specreason import data  # noqa: E402
from sgl_specreason.flags import (  # noqa: E402
    add_config_flags,
    add_runtime_flags,
    config_from_args,
    guarded,
    positive_int,
    runtime_options,
)
from sgl_specreason.loadtest import (  # noqa: E402
    ClientMeter,
    Level,
    closed_loop,
    count_connections,
    level_line,
    markdown,
    open_loop,
    plot,
    solve_one,
)
from sgl_specreason.problems import read_jsonl  # noqa: E402
from sgl_specreason.modes import MODES, roles_for  # noqa: E402
from sgl_specreason.runner import dry_run, flush_caches, open_runtimes  # noqa: E402
from sgl_specreason.store import ResultStore  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="load_test.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", nargs="*", type=positive_int, default=[1, 2, 4],
                        help="closed-loop levels: clients at once")
    parser.add_argument("--request-rates", nargs="*", type=float, default=[],
                        help="open-loop levels: Poisson arrivals, problems per second")
    parser.add_argument("--modes", nargs="+", default=["specreason", "base"],
                        choices=list(MODES))
    parser.add_argument("--num-problems", type=positive_int, default=8,
                        help="problems per level and mode at most")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="no new problem starts after this long, per level and mode")
    parser.add_argument("--data-path", type=Path, help="problems JSONL (default: GSM8K test problems)")
    parser.add_argument("--arrival-seed", type=int, default=0, help="seed of the open-loop arrivals")
    parser.add_argument("--out-dir", type=Path, default=Path("results/load_test"))
    add_config_flags(parser)
    add_runtime_flags(parser)
    return parser


def clients_at_most(args) -> int:
    """Problems in flight at once at the busiest level (an open loop has at least two)."""
    return max([*args.concurrency, 2 if args.request_rates else 1])


def run(args) -> int:
    cfg = config_from_args(args)
    if args.data_path:
        problems = read_jsonl(args.data_path).problems
    else:
        problems = data.gsm8k(args.num_problems, 0)
    if not problems:
        print("error: no problems to send", file=sys.stderr)
        return 2
    levels = [Level("closed", c) for c in args.concurrency] + [Level("open", r) for r in args.request_rates]
    if any(level.value <= 0 for level in levels):
        print("error: concurrency and request rates must be positive", file=sys.stderr)
        return 2
    roles_needed = sorted({r for m in args.modes for r in roles_for(m)})
    if args.dry_run:
        return dry_run(runtime_options(args, clients_at_most(args)), cfg, roles_needed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    count_connections()
    lines = []
    with open_runtimes(runtime_options(args, clients_at_most(args)), cfg, roles_needed) as roles, \
            ResultStore(args.out_dir / "load_test.jsonl").append(start_over=True) as writer:
        for level in levels:
            for mode in args.modes:
                flush_caches(roles)

                def solve(problem, mode=mode):
                    return solve_one(problem, mode, cfg, roles)

                started = time.perf_counter()
                with ClientMeter() as meter:
                    if level.kind == "closed":
                        results = closed_loop(problems, int(level.value), args.num_problems, args.max_seconds,
                                              solve)
                    else:
                        results = open_loop(problems, level.value, args.num_problems, args.max_seconds, solve,
                                            seed=args.arrival_seed)
                line = level_line(level, mode, results, time.perf_counter() - started, "load_test", meter)
                writer.write(line)
                lines.append(line)
                o = line["other"]
                print(f"{level.label}, {mode}: {line['num_requests']} problems in {line['latency']:.1f} s, "
                      f"{o['problems_per_s']:.3f} problems/s, p50 {o['problem_latency_s']['p50'] or 0:.1f} s, "
                      f"{o['errors']} errors; client {o['client_overhead_ms_per_step']['p50'] or 0:.2f} ms/step "
                      f"p50, {o['client_cpu_ms_per_step'] or 0:.2f} CPU ms/step, "
                      f"{o['client_connections_per_problem'] or 0:.1f} connections/problem", flush=True)
    table = markdown(lines)
    (args.out_dir / "load_test.md").write_text("# Load test\n\n" + table + "\n", encoding="utf-8")
    plot(lines, args.out_dir / "load_test.png")
    print("\n" + table)
    print(f"\nresults: {args.out_dir / 'load_test.jsonl'}, {args.out_dir / 'load_test.md'}, "
          f"{args.out_dir / 'load_test.png'}")
    return 1 if any(line["other"]["errors"] for line in lines) else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), "interrupted; local runtimes stopped")


if __name__ == "__main__":
    sys.exit(main())
