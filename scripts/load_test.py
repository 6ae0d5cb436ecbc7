"""Load test: SpecReason and base-only side by side under concurrent load, on two runtimes.

    python scripts/load_test.py --concurrency 1 2 4 8 --num-problems 16 --max-seconds 600
    python scripts/load_test.py --request-rates 0.05 0.1 --draft-url http://gpu0:30000 \\
        --base-url http://gpu1:30000 --concurrency 1 8 32 64 --num-problems 256
    python scripts/load_test.py --dataset gsm8k-train --modes specreason \\
        --speculate always never auto --concurrency 1 2 4 --num-problems 8

Closed loop at each ``--concurrency`` (clients that start a new problem when their last one is
done) and open loop at each ``--request-rates`` (seeded Poisson arrivals); each level is bounded
by ``--num-problems`` and ``--max-seconds`` and runs every ``--modes`` (each judged mode once
per ``--speculate`` policy, as ``specreason/auto`` ...) on the same GSM8K problems (or
``--data-path``), each from emptied radix caches. Writes ``load_test.jsonl`` (one line per level
and mode in SGLang's benchmark style), ``problems.jsonl`` (every problem), ``load_test.md`` and
``load_test.png`` to ``--out-dir``. A rerun with the same ``--out-dir`` skips the levels and
modes that finished and runs the rest (``--start-over`` forgets them). Traffic goes only to the
given URLs, or to the local runtimes it starts on loopback.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgl_specreason import data, speculation  # noqa: E402
from sgl_specreason.flags import (  # noqa: E402
    add_config_flags,
    add_runtime_flags,
    config_from_args,
    guarded,
    positive_int,
    runtime_options,
)
from sgl_specreason.loadtest import (  # noqa: E402
    Level,
    LoadRecords,
    closed_loop,
    level_line,
    markdown,
    open_loop,
    plot,
    solve_one,
    variants,
)
from sgl_specreason.meters import (  # noqa: E402
    ClientMeter,
    count_connections,
    counters_between,
    cpu_seconds,
    runtime_counters,
    server_processes,
)
from sgl_specreason.modes import MODES, roles_for  # noqa: E402
from sgl_specreason.problems import read_jsonl  # noqa: E402
from sgl_specreason.runner import dry_run, flush_caches, open_runtimes  # noqa: E402
from sgl_specreason.speculation import POLICIES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="load_test.py", description=__doc__, conflict_handler="resolve",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", nargs="*", type=positive_int, default=[1, 2, 4],
                        help="closed-loop levels: clients at once")
    parser.add_argument("--request-rates", nargs="*", type=float, default=[],
                        help="open-loop levels: Poisson arrivals, problems per second")
    parser.add_argument("--modes", nargs="+", default=["specreason", "base"],
                        choices=list(MODES))
    parser.add_argument("--num-problems", type=positive_int, default=8,
                        help="problems per level and mode at most")
    parser.add_argument("--problems-per-client", type=positive_int,
                        help="closed loop: each level runs this many problems a client (c x N) instead "
                             "of --num-problems, so every level keeps its clients busy as long")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="no new problem starts after this long, per level and mode")
    parser.add_argument("--dataset", choices=("gsm8k", "gsm8k-train"), default="gsm8k",
                        help="GSM8K test problems, or train problems (the development split)")
    parser.add_argument("--data-path", type=Path, help="problems JSONL instead of --dataset")
    parser.add_argument("--arrival-seed", type=int, default=0, help="seed of the open-loop arrivals")
    parser.add_argument("--out-dir", type=Path, default=Path("results/load_test"))
    parser.add_argument("--start-over", action="store_true",
                        help="forget what --out-dir holds instead of going on from it")
    add_config_flags(parser)
    add_runtime_flags(parser)
    parser.add_argument("--speculate", nargs="+", choices=POLICIES,
                        help="speculation policies: each judged mode runs once per policy, "
                             "labelled MODE/POLICY (default: the mode alone, speculating always); "
                             "auto decides per step from the costs measured on the runtimes at "
                             "their current load and the acceptance so far")
    return parser


def clients_at_most(args) -> int:
    """Problems in flight at once at the busiest level (an open loop has at least two)."""
    return max([*args.concurrency, 2 if args.request_rates else 1])


def run(args) -> int:
    policies, args.speculate = args.speculate or (), None  # several here; the config takes one
    cfg = config_from_args(args)
    if args.data_path:
        problems = read_jsonl(args.data_path).problems
    else:
        most = max([args.num_problems] + [args.problems_per_client * c for c in args.concurrency
                                          if args.problems_per_client])
        problems = data.gsm8k(most, 0, split="train" if args.dataset == "gsm8k-train" else "test")
    if not problems:
        print("error: no problems to send", file=sys.stderr)
        return 2
    levels = [Level("closed", c) for c in args.concurrency] + [Level("open", r) for r in args.request_rates]
    if any(level.value <= 0 for level in levels):
        print("error: concurrency and request rates must be positive", file=sys.stderr)
        return 2
    columns = variants(args.modes, cfg, policies)
    roles_needed = sorted({r for v in columns for r in roles_for(v.mode)})
    if args.dry_run:
        return dry_run(runtime_options(args, clients_at_most(args)), cfg, roles_needed)
    store = LoadRecords(args.out_dir, start_over=args.start_over)
    finished = store.finished()
    todo = [(level, v) for level in levels for v in columns if store.key(level, v.label) not in finished]
    if len(todo) < len(levels) * len(columns):
        print(f"{args.out_dir}: {len(levels) * len(columns) - len(todo)} of {len(levels) * len(columns)} "
              "levels and modes done before; running the rest", flush=True)
    count_connections()
    if todo:
        with open_runtimes(runtime_options(args, clients_at_most(args)), cfg, roles_needed) as roles:
            for level, variant in todo:
                line = measure(level, variant, problems, roles, args, store)
                finished[store.key(level, variant.label)] = line
    lines = [finished[store.key(level, v.label)] for level in levels for v in columns]
    table = markdown(lines)
    (args.out_dir / "load_test.md").write_text("# Load test\n\n" + table + "\n", encoding="utf-8")
    plot(lines, args.out_dir / "load_test.png")
    print("\n" + table)
    print(f"\nresults: {args.out_dir / 'load_test.jsonl'}, {args.out_dir / 'load_test.md'}, "
          f"{args.out_dir / 'load_test.png'}")
    return 1 if any(line["other"]["errors"] for line in lines) else 0


def measure(level, variant, problems, roles, args, store: LoadRecords) -> dict:
    """One level of one variant, from emptied caches and with no speculation figures (``auto``
    learns them within the level): its summary line, recorded."""
    flush_caches(roles)
    speculation.reset()
    def busy():
        return {name: role.backend.load.busy_seconds() if hasattr(role.backend, "load") else 0
                for name, role in roles.items()}

    servers = {name: server_processes(role.backend.base_url) for name, role in roles.items()}
    spans = []

    def server_cpu():
        return {name: cpu_seconds(procs) for name, procs in servers.items()}

    with store.run(level, variant.label) as (run_id, record):
        def solve(problem):
            begun = time.perf_counter() - started
            result = solve_one(problem, variant.mode, variant.cfg, roles)
            span = (begun, time.perf_counter() - started)
            spans.append(span)
            record(result, started_s=span[0], ended_s=span[1])
            return result

        counters_before = {name: runtime_counters(role.backend) for name, role in roles.items()}
        cpu_before, busy_before, started = server_cpu(), busy(), time.perf_counter()
        with ClientMeter() as meter:
            if level.kind == "closed":
                count = args.problems_per_client * int(level.value) if args.problems_per_client else args.num_problems
                results = closed_loop(problems, int(level.value), count, args.max_seconds, solve)
            else:
                results = open_loop(problems, level.value, args.num_problems, args.max_seconds, solve,
                                    seed=args.arrival_seed)
        duration = time.perf_counter() - started
        busy_s = {name: s - busy_before[name] for name, s in busy().items()}
        cpu_s = {name: {proc: s - cpu_before[name].get(proc, 0.0) for proc, s in procs.items()}
                 for name, procs in server_cpu().items()}
        counters = {name: counters_between(counters_before[name], runtime_counters(role.backend))
                    for name, role in roles.items()}
    line = level_line(level, variant.label, results, duration, "load_test", meter, busy_s, spans, cpu_s)
    line["other"]["runtime_counters"] = counters  # SGLang's own: decode moments, prefill busy time
    store.finish(line, run_id)
    o = line["other"]
    speculated = "" if o["speculated_share"] is None else f", {100 * o['speculated_share']:.0f}% speculated"
    steady = o.get("steady")
    if steady and steady["problems_per_s"]:
        speculated += f"; steady window {steady['problems_per_s']:.4f} problems/s, drain {steady['drain_s']:.0f} s"
    print(f"{level.label}, {variant.label}: {line['num_requests']} problems in {line['latency']:.1f} s, "
          f"{o['problems_per_s']:.3f} problems/s, p50 {o['problem_latency_s']['p50'] or 0:.1f} s, "
          f"{o['errors']} errors{speculated}; client {o['client_overhead_ms_per_step']['p50'] or 0:.2f} ms/step "
          f"p50, {o['client_cpu_ms_per_step'] or 0:.2f} CPU ms/step, "
          f"{o['client_connections_per_problem'] or 0:.1f} connections/problem", flush=True)
    return line


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), "interrupted; local runtimes stopped")


if __name__ == "__main__":
    sys.exit(main())
