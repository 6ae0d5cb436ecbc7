"""The serve load measurement's report: README.md (the setup, the targets checked against the
records, a table of every run, the commands) and serve_load.png (throughput and latency against
concurrency for serve and the base runtime, and serve's memory over the long run)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from sgl_specreason.eval.serve_load.bench import BENCH_MODULE
from sgl_specreason.eval.serve_load.runs import BASE, BESIDE, LEVEL, MEMORY, SERVE, Setup
from sgl_specreason.eval.serve_load.record import MEMORY_TOLERANCE

#: the target the issue sets: serve's own time per request under this, in ms
OVERHEAD_TARGET_MS = 5.0


def fmt(value, spec=".2f", scale=1.0):
    """A figure as the table and the measurement's log write it ("-" for none)."""
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
            f"{fmt(b.get('request_throughput'), '.3f')} | {fmt(b.get('output_throughput'), '.1f')} | "
            f"{fmt(b.get('median_ttft_ms'), '.2f', 1e-3)} / {fmt(b.get('p99_ttft_ms'), '.2f', 1e-3)} | "
            f"{fmt(b.get('median_e2e_latency_ms'), '.2f', 1e-3)} / {fmt(b.get('p99_e2e_latency_ms'), '.2f', 1e-3)} | "
            + (f"{fmt(over.get('p50'))} / {fmt(over.get('p99'))} | " if r["target"] == SERVE else "- | ")
            + (f"{fmt(rss.get('start_mb'), '.0f')} / {fmt(rss.get('max_mb'), '.0f')} |" if r["target"] == SERVE else "- |"))
    return "\n".join(rows)


def parts_note(record: dict) -> str:
    """Where serve's own time went in a run: each part's p50 (none for a record without them).

    >>> parts_note({"overhead_parts_ms": {"before_run": {"p50": 1.0}, "to_worker": {"p50": 0.25},
    ...                                   "after_run": {"p50": 2.0}}})
    '; p50 by part: before run 1.00, to worker 0.25, after run 2.00 ms'
    """
    parts = record.get("overhead_parts_ms") or {}
    cpu = record.get("serve_cpu_share")
    out = "" if cpu is None else f"; serve's own process used {100 * cpu:.0f} % of a core"
    if not parts:
        return out
    return "; p50 by part: " + ", ".join(f"{name.replace('_', ' ')} {fmt(parts[name].get('p50'))}"
                                          for name in parts) + " ms" + out


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
    beside = [r for r in records if r["kind"] == BESIDE]
    measured = [r for r in levels + beside if (r.get("overhead_ms") or {}).get("count")]
    if not measured:
        out.append(f"- serve's own time per request under {OVERHEAD_TARGET_MS:g} ms: not measured")
    for r in measured:
        p50 = r["overhead_ms"]["p50"]
        batch = r.get("batch") or {}
        while_batch = (f" while a batch ran beside the live requests ({batch.get('done_during_run')} of its "
                       f"{batch.get('lines')} lines answered during the run)" if r["kind"] == BESIDE else "")
        out.append(f"- {'met' if p50 < OVERHEAD_TARGET_MS and not r.get('error') else 'NOT met'}: serve's own "
                   f"time per request < {OVERHEAD_TARGET_MS:g} ms at concurrency {r['concurrency']}{while_batch}: "
                   f"p50 {p50:.2f} ms, p99 {r['overhead_ms']['p99']:.2f} ms, max {r['overhead_ms']['max']:.2f} ms "
                   f"({r['overhead_ms']['count']} requests){parts_note(r)}")
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
