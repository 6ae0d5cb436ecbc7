"""Scale-out on the same workers through SGLang's router, with ``cache_aware`` and with
``round_robin``. (The records in ``eval/reports/router`` hold a third set-up, the workers' URLs as
a comma-separated list: this project's own sticky replica choice, measured there side by side
with the router and then removed in the router's favour.) Per set-up: batch throughput and the
share of prompt tokens served from the radix caches, at one concurrency, through the load
test's closed loop, each set-up measured ``--rounds`` times in turn (A B, A B) so that the
spread of one set-up shows the noise.

    python -m eval.router_bench --workers 2 --concurrency 8 --num-problems 16 --rounds 2

It starts ``--workers`` SGLang workers per role (SmolLM2-135M on this CPU by default, one OMP
thread each, a small ``--max-total-tokens``), then for each set-up starts the routers it needs,
runs the load, and stops them; the workers are reused (their caches are flushed before each
set-up and round). Then, unless ``--no-fault``, it kills one base worker in the middle of a
batch behind the cache-aware router and counts what was lost. Writes ``records.jsonl`` (a
summary line per set-up and round, and the fault line; rerunning skips what is there),
``README.md`` and ``router.png`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List

from sgl_specreason import data, speculation
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.loadtest import Level, closed_loop, level_line, solve_one
from sgl_specreason.router import RouterSpec, worker_specs
from sgl_specreason.runner import RuntimeOptions, flush_caches, open_runtimes
from sgl_specreason.runtime import LocalServer, free_port
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import BASE, DRAFT

SETUPS = ("router cache_aware", "router round_robin")
MODEL = "smollm2-135m"


def runtime_options(urls: Dict[str, str], log_dir: Path, connections: int) -> RuntimeOptions:
    return RuntimeOptions(draft_url=urls[DRAFT], base_url=urls[BASE], log_dir=log_dir, connections=connections)


def measure(setup: str, urls: Dict[str, str], problems, cfg, args) -> dict:
    """One set-up: the load test's closed loop at ``args.concurrency`` over ``urls``."""
    with open_runtimes(runtime_options(urls, args.log_dir, 4 * args.concurrency), cfg, (DRAFT, BASE),
                       log=lambda _: None) as roles:
        flush_caches(roles)
        speculation.reset()
        started = time.perf_counter()
        results = closed_loop(problems, args.concurrency, args.num_problems, 1e9,
                              lambda p: solve_one(p, "specreason", cfg, roles))
        line = level_line(Level("closed", args.concurrency), setup, results, time.perf_counter() - started,
                          "router_bench")
    line["other"]["setup"] = setup
    line["other"]["ids"] = sorted(r.id for r in results)
    return line


def fault(urls: Dict[str, str], base_workers: List[LocalServer], problems, cfg, args) -> dict:
    """Kill one base worker behind the cache-aware router in the middle of a batch; count the
    problems lost (no record) and duplicated, and the failures."""
    with open_runtimes(runtime_options(urls, args.log_dir, 4 * args.concurrency), cfg, (DRAFT, BASE),
                       log=lambda _: None) as roles:
        flush_caches(roles)
        done: List = []
        lock = threading.Lock()

        def solve(problem):
            result = solve_one(problem, "specreason", cfg, roles)
            with lock:
                done.append(result)
                if len(done) == args.num_problems // 2:
                    base_workers[0].stop(grace=0.5)  # half-way: one base worker dies
            return result

        results = closed_loop(problems, args.concurrency, args.num_problems, 1e9, solve)
        listed = roles[BASE].backend.workers()
    ids = [r.id for r in results]
    return {"setup": "fault: a base worker killed half-way (router cache_aware)", "problems": len(ids),
            "expected": args.num_problems, "lost": args.num_problems - len(set(ids)),
            "duplicated": len(ids) - len(set(ids)), "errors": sum(1 for r in results if r.error),
            "healthy_base_workers_after": len(listed), "base_workers": len(base_workers)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.router_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="SGLang workers per role")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--num-problems", type=int, default=16, help="GSM8K train problems per set-up")
    parser.add_argument("--token-budget", type=int, default=96)
    parser.add_argument("--max-total-tokens", type=int, default=4096)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    parser.add_argument("--rounds", type=int, default=2, help="times each set-up is measured, in turn")
    parser.add_argument("--no-fault", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=Path("eval/reports/router"))
    parser.add_argument("--log-dir", type=Path, default=Path("logs/router-bench"))
    parser.add_argument("--report-only", action="store_true", help="write the report from the records")
    args = parser.parse_args(argv)
    store = ResultStore(args.out_dir / "records.jsonl")
    done = {(r["setup"], r.get("round", 1)) for r in store.read("setup")}
    todo = [] if args.report_only else [(s, n) for n in range(1, args.rounds + 1) for s in args.setups
                                        if (s, n) not in done]
    want_fault = not (args.no_fault or args.report_only or any(k.startswith("fault") for k, _ in done))
    if todo or want_fault:
        cfg = SpecReasonConfig(score_method="likelihood-numbers", threshold=6, token_budget=args.token_budget,
                               seed=0)
        problems = data.gsm8k(args.num_problems, 0, split="train")
        opts = RuntimeOptions(draft_model=MODEL, base_model=MODEL, threads=1,
                              max_total_tokens=args.max_total_tokens, log_dir=args.log_dir)
        with ExitStack() as stack, store.append() as writer:
            workers = {}
            for role in (DRAFT, BASE):
                workers[role] = [LocalServer(spec) for spec in worker_specs(opts, cfg, role, args.workers,
                                                                             _resolve)]
                for server in workers[role]:
                    stack.callback(server.stop)
                    server.start()
            for group in workers.values():
                for server in group:
                    server.wait_ready()
            for setup, round_ in todo:
                with ExitStack() as fronts:  # this set-up's routers live for its round only
                    urls = _front(setup, workers, args, fronts)
                    line = measure(setup, urls, problems, cfg, args)
                writer.write({"setup": setup, "round": round_, **line})
                print(json.dumps({"setup": setup, "round": round_,
                                  "problems_per_s": line["other"]["problems_per_s"],
                                  "cache": line["other"]["cache_hit_ratio"]}), flush=True)
            if want_fault:
                urls = _front("router cache_aware", workers, args, stack)
                record = fault(urls, workers[BASE], problems, cfg, args)
                writer.write(record)
                print(json.dumps(record), flush=True)
    from sgl_specreason.eval.router_report import measured_command, write_report

    command = " ".join(sys.argv[1:] if argv is None else argv)
    if args.report_only:  # the report keeps the command that measured its records
        command = measured_command(args.out_dir) or command
    write_report(store.read("setup"), args.out_dir, command)
    return 0


def _resolve(name: str) -> str:
    from sgl_specreason import models

    return str(models.resolve(name))


def _front(setup: str, workers, args, stack) -> Dict[str, str]:
    """The URL of each role under ``setup``: a router, started here."""
    urls = {}
    for role, group in workers.items():
        worker_urls = tuple(server.url for server in group)
        front = LocalServer(RouterSpec(worker_urls, free_port(), role, setup.split()[1], log_dir=args.log_dir))
        stack.callback(front.stop)
        front.start()
        front.wait_ready(timeout=120)
        urls[role] = front.url
    return urls


if __name__ == "__main__":
    sys.exit(main())
