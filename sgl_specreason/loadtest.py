"""Throughput and latency of SpecReason and its baselines under concurrent load.

Closed loop: ``c`` clients, each solving one problem after another, for ``c`` in the levels
given. Open loop: problems arrive as a seeded Poisson process at a given rate, whatever is still
running. Each level is bounded by a number of problems and by a time limit, and runs every
variant (a mode, under a speculation policy) on the same problems, one after the other. Per
level and variant: problems/s, output and kept tokens/s, latency percentiles per problem and
per step, pass@1, acceptance, the share of steps speculated, judge calls/s, cache hits per
runtime (from ``meta_info``), each runtime's busy time (some request of this process in flight
to it), errors, and what the client itself costs: its own time per step (step wall
time minus the server time of its calls, as the runtimes report it; p50 and p99), its CPU time
per step (all of the process's threads), the TCP connections it opened per problem (every
``connect`` of the process counted, whatever HTTP client makes it: ``count_connections``), and
its peak memory.
"""

from __future__ import annotations

import random
import resource
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from sgl_specreason.calls import POLL_S, wait_result
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.meters import ClientMeter
from sgl_specreason.modes import Variant, get_mode, program_call
from sgl_specreason.problems import Problem
from sgl_specreason.runner import summary
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import BASE, DRAFT, ProblemResult


@dataclass(frozen=True)
class Level:
    kind: str  # "closed" (value = concurrency) or "open" (value = request rate, problems/s)
    value: float

    @property
    def label(self) -> str:
        return f"concurrency {self.value:g}" if self.kind == "closed" else f"rate {self.value:g}/s"


def variants(modes: Sequence[str], cfg: SpecReasonConfig, policies: Sequence[str] = ()) -> List[Variant]:
    """Each mode under ``cfg``; with ``policies``, each mode that drafts and judges once per
    policy, labelled ``mode/policy``.

    >>> [v.label for v in variants(["specreason", "base"], SpecReasonConfig(), ["always", "auto"])]
    ['specreason/always', 'specreason/auto', 'base']
    """
    out = []
    for mode in modes:
        if policies and get_mode(mode).judged:
            out += [Variant(f"{mode}/{p}", mode, cfg.replace(speculate=p)) for p in policies]
        else:
            out.append(Variant(mode, mode, cfg))
    return out


def solve_one(problem: Problem, mode: str, cfg: SpecReasonConfig, roles: dict) -> ProblemResult:
    """One problem through the program of ``mode``, on this thread."""
    program, arguments, backend = program_call(mode, problem, cfg, roles)
    state = program.run(backend=backend, **arguments)
    result = state.ret_value
    if result is None:  # the program itself failed before it could record anything
        result = ProblemResult(problem.id, problem.question, mode, error=str(state.error()))
    return result


def closed_loop(problems: Sequence[Problem], concurrency: int, max_problems: int, max_seconds: float,
                solve: Callable[[Problem], ProblemResult]) -> List[ProblemResult]:
    """``concurrency`` clients, each starting a new problem when its last one is done, until
    ``max_problems`` have started or ``max_seconds`` have passed."""
    results: List[ProblemResult] = []
    lock = threading.Lock()
    started = [0]
    deadline = time.monotonic() + max_seconds

    def client():
        while True:
            with lock:
                if started[0] >= max_problems or time.monotonic() >= deadline:
                    return
                problem = problems[started[0] % len(problems)]
                started[0] += 1
            result = solve(problem)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(POLL_S)
    return results


def open_loop(problems: Sequence[Problem], rate: float, max_problems: int, max_seconds: float,
              solve: Callable[[Problem], ProblemResult], seed: int = 0,
              max_in_flight: int = 256) -> List[ProblemResult]:
    """Problems arrive at ``arrivals(rate, max_problems, seed)`` seconds from the start, whatever
    is running, until ``max_problems`` have arrived or ``max_seconds`` have passed; then all
    finish."""
    futures = []
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        for i, offset in enumerate(arrivals(rate, max_problems, seed)):
            if offset >= max_seconds:
                break
            wait = start + offset - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            futures.append(pool.submit(solve, problems[i % len(problems)]))
    return [wait_result(f) for f in futures]


def arrivals(rate: float, count: int, seed: int = 0) -> List[float]:
    """When each of ``count`` problems arrives, in seconds from the start: a Poisson process,
    exponential gaps of mean ``1/rate`` s drawn from ``seed``.

    >>> arrivals(2.0, 3, seed=7) == arrivals(2.0, 3, seed=7)
    True
    """
    rng = random.Random(seed)
    out, at = [], 0.0
    for _ in range(count):
        at += rng.expovariate(rate)
        out.append(at)
    return out


def percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50 / p90 / p99 of ``values`` (None for none).

    >>> percentiles([1.0, 2.0, 3.0])
    {'p50': 2.0, 'p90': 2.8, 'p99': 2.98}
    """
    if not len(values):
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(np.asarray(values, float), [50, 90, 99])
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}


def client_overheads(results: Sequence[ProblemResult]) -> List[float]:
    """Per step: its wall time minus the server time its calls report (the library's and the
    frontend's own time, plus HTTP). Only meaningful when nothing else waits in between, i.e.
    at concurrency 1."""
    return [step.wall_s - sum(c.latency_s for c in step.calls)
            for r in results if not r.error for step in r.steps]


def judge_server_ms(results: Sequence[ProblemResult]) -> Optional[float]:
    """Mean server milliseconds of the base runtime's calls on one drafted step (kinds ``judge``
    and ``logprobs``), over the drafted steps of ``results``."""
    spent = [sum(c.latency_s for c in s.calls if c.role == BASE and c.kind in ("judge", "logprobs"))
             for r in results for s in r.steps if s.draft_text is not None]
    return 1000 * float(np.mean(spent)) if spent else None


def steady_window(spans: Sequence[Tuple[float, float]], clients: int) -> Optional[dict]:
    """A closed loop's steady window, from the problems' (start, end) seconds: from the moment
    all ``clients`` are busy (the ``clients``-th start) until the first client finds no problem
    left (the first end after the last start). Problems/s over it counts the problems that ended
    inside it; the drain (from its end to the last end) is reported beside it. None when the
    loop never had every client busy, or nothing ended inside the window.

    >>> w = steady_window([(0, 10), (0, 12), (10, 20), (12, 25)], clients=2)
    >>> w["start_s"], w["end_s"], w["problems"], w["problems_per_s"], w["drain_s"]
    (0, 20, 3, 0.15, 5)
    """
    if len(spans) < clients:
        return None
    starts = sorted(s for s, _ in spans)
    start, last_start = starts[clients - 1], starts[-1]
    end = min((e for _, e in spans if e > last_start), default=None)
    if end is None or end <= start:
        return None
    done = sum(1 for _, e in spans if start < e <= end)
    return {"start_s": start, "end_s": end, "problems": done,
            "problems_per_s": done / (end - start) if done else None,
            "drain_s": max(e for _, e in spans) - end}


def level_line(level: Level, mode: str, results: Sequence[ProblemResult], duration: float,
               task: str, meter: Optional[ClientMeter] = None,
               busy_s: Optional[Dict[str, float]] = None,
               spans: Optional[Sequence[Tuple[float, float]]] = None,
               server_cpu_s: Optional[Dict[str, Dict[str, float]]] = None) -> dict:
    """One JSON line in SGLang's benchmark style: the run summary plus the load figures; with
    ``meter`` (the level measured by a ``ClientMeter``), the client's CPU time and connections;
    with ``busy_s``, each runtime's busy seconds over the level; with ``spans`` (each problem's
    start and end, seconds from the level's start), a closed loop's steady window
    (``steady_window``); with ``server_cpu_s``, each server process's CPU seconds over the
    level, by role."""
    line = summary(results, mode, task, duration)
    o = line["other"]
    ok = [r for r in results if not r.error]
    steps = sum(len(r.steps) for r in results)

    def per_s(count):
        return count / duration if duration > 0 else None

    o.update({
        "loop": level.kind,
        "concurrency": level.value if level.kind == "closed" else None,
        "request_rate": level.value if level.kind == "open" else None,
        "problems_per_s": per_s(len(ok)),
        "output_tokens_per_s": per_s(o["draft_tokens"] + o["base_tokens"]),
        "kept_tokens_per_s": per_s(o["kept_draft_tokens"] + o["kept_base_tokens"]),
        "problem_latency_s": percentiles([r.wall_s for r in ok]),
        "step_latency_s": percentiles([s.wall_s for r in ok for s in r.steps]),
        "judge_calls_per_s": per_s(o["judge_calls"]),
        # the base runtime's server time on a drafted step: its judge call (and, where the judge
        # asks nothing, the prefill for ``logprobs``); what asking for logprobs adds shows here
        "judge_server_ms_per_drafted_step": judge_server_ms(ok),
        "client_overhead_ms_per_step": percentiles([1000 * x for x in client_overheads(ok)]),
        "client_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    })
    if busy_s is not None:
        o["busy_s"] = busy_s
        o["busy_share"] = {role: (s / duration if duration > 0 else None) for role, s in busy_s.items()}
    if spans is not None and level.kind == "closed":
        o["steady"] = steady_window(spans, int(level.value))
    if server_cpu_s is not None:
        o["server_cpu_s"] = server_cpu_s
        o["server_cpu_share"] = {role: {name: (s / duration if duration > 0 else None) for name, s in procs.items()}
                                 for role, procs in server_cpu_s.items()}
    if meter is not None:
        opened = sum(meter.connections.values())
        o.update({
            "client_cpu_s": meter.cpu_s,
            "client_cpu_ms_per_step": 1000 * meter.cpu_s / steps if steps else None,
            "client_connections": opened,
            "client_connections_per_problem": opened / len(results) if results else None,
            "client_connections_by_peer": meter.connections,
        })
    return line


def markdown(lines: Sequence[dict]) -> str:
    def f(x, spec=".2f"):
        return "-" if x is None else format(x, spec)

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    out = ["| level | mode | problems | errors | problems/s | output tok/s | kept tok/s "
           "| latency p50 / p90 / p99 s | step p50 s | pass@1 | acceptance | speculated "
           "| judge calls/s | busy draft / base | cache draft / base | client ms/step p50 / p99 "
           "| client CPU ms/step | TCP connections/problem | client peak MB |",
           "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for line in lines:
        o = line["other"]
        level = f"c={o['concurrency']:g}" if o["loop"] == "closed" else f"{o['request_rate']:g}/s"
        lat, cache, busy = o["problem_latency_s"], o["cache_hit_ratio"], o.get("busy_share") or {}
        out.append(
            f"| {level} | {line['backend']} | {line['num_requests']} | {o['errors']} | "
            f"{f(o['problems_per_s'], '.3f')} | {f(o['output_tokens_per_s'], '.1f')} | "
            f"{f(o['kept_tokens_per_s'], '.1f')} | "
            f"{f(lat['p50'], '.1f')} / {f(lat['p90'], '.1f')} / {f(lat['p99'], '.1f')} | "
            f"{f(o['step_latency_s']['p50'])} | {pct(line['accuracy'])} | "
            f"{pct(o['acceptance_rate'])} | {pct(o.get('speculated_share'))} | "
            f"{f(o['judge_calls_per_s'])} | {pct(busy.get(DRAFT))} / {pct(busy.get(BASE))} | "
            f"{pct(cache[DRAFT])} / {pct(cache[BASE])} | "
            f"{f(o['client_overhead_ms_per_step']['p50'], '.2f')} / "
            f"{f(o['client_overhead_ms_per_step']['p99'], '.2f')} | "
            f"{f(o.get('client_cpu_ms_per_step'), '.2f')} | "
            f"{f(o.get('client_connections_per_problem'), '.2f')} | "
            f"{f(o.get('client_max_rss_mb'), '.0f')} |")
    return "\n".join(out)


class LoadRecords:
    """A load test's results in ``out_dir``, kept so that a stopped run goes on where it left off.

    ``load_test.jsonl`` holds one summary line per level and variant that ran to its end;
    ``problems.jsonl`` every problem as it finished, tagged with its level, its variant and the
    id of the run of that level and variant (``run_id``). A rerun skips what has a summary and
    runs the rest again from its start (a level's throughput is only meaningful whole); the
    problems of a run that did not finish stay in the file under a ``run_id`` that no summary
    names, so nothing is lost and nothing is counted twice.
    """

    def __init__(self, out_dir: Path, start_over: bool = False, log=print):
        self.summaries = ResultStore(Path(out_dir) / "load_test.jsonl", log=log)
        self.problems = ResultStore(Path(out_dir) / "problems.jsonl", log=log)
        if start_over:
            for store in (self.summaries, self.problems):
                with store.append(start_over=True):
                    pass

    @staticmethod
    def key(level: Level, label: str) -> Tuple[str, float, str]:
        return level.kind, float(level.value), label

    def finished(self) -> Dict[Tuple[str, float, str], dict]:
        """The summary line of each level and variant that ran to its end (the latest one)."""
        out = {}
        for line in self.summaries.read("backend"):
            o = line.get("other") or {}
            value = o.get("concurrency") if o.get("loop") == "closed" else o.get("request_rate")
            out[(o.get("loop"), float(value), line["backend"])] = line
        return out

    def problems_of(self, run_id: str) -> List[dict]:
        return [r for r in self.problems.read("run_id") if r["run_id"] == run_id]

    @contextmanager
    def run(self, level: Level, label: str) -> Iterator[Tuple[str, Callable[[ProblemResult], None]]]:
        """A new run of ``level`` and ``label``: its id, and a function that appends a finished
        problem (any thread) at once, with any more fields given (``started_s=``...)."""
        run_id = uuid.uuid4().hex
        lock = threading.Lock()
        with self.problems.append() as writer:
            def record(result: ProblemResult, **extra) -> None:
                with lock:
                    writer.write({**result.to_dict(), "level": level.label, "variant": label,
                                  "run_id": run_id, **extra})
            yield run_id, record

    def finish(self, line: dict, run_id: str) -> None:
        """The summary of a run that ended: from now on its level and variant are done."""
        line["other"]["run_id"] = run_id
        with self.summaries.append() as writer:
            writer.write(line)


def plot(lines: Sequence[dict], path) -> None:
    """Latency (p50, p90) and throughput against the load level, one curve per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat_ax, thr_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for loop, marker in (("closed", "o"), ("open", "s")):
        for mode in sorted({line["backend"] for line in lines}):
            sel = [line for line in lines if line["backend"] == mode and line["other"]["loop"] == loop]
            if not sel:
                continue
            key = "concurrency" if loop == "closed" else "request_rate"
            xs = [line["other"][key] for line in sel]
            label = f"{mode} ({'clients' if loop == 'closed' else 'rate'})"
            lat_ax.plot(xs, [line["other"]["problem_latency_s"]["p50"] for line in sel], marker=marker,
                        label=f"{label} p50")
            lat_ax.plot(xs, [line["other"]["problem_latency_s"]["p90"] for line in sel], marker=marker,
                        linestyle="--", label=f"{label} p90")
            thr_ax.plot(xs, [line["other"]["problems_per_s"] for line in sel], marker=marker, label=label)
    lat_ax.set_xlabel("concurrency (clients) / request rate (problems/s)")
    lat_ax.set_ylabel("latency per problem, s")
    thr_ax.set_xlabel("concurrency (clients) / request rate (problems/s)")
    thr_ax.set_ylabel("problems/s")
    lat_ax.legend(fontsize=7)
    thr_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
