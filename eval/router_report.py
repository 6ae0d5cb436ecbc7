"""The report of ``eval.router_bench``: throughput and cache share per scale-out set-up, the
targets checked (the cache-aware router's cache share within 5 points of the comma list's, or
better; nothing lost with a worker killed), and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from sgl_specreason.eval.report.tables import fmt
from sgl_specreason.trace import BASE, DRAFT

#: the cache-aware router's share of cached prompt tokens may trail the list's by this much
CACHE_POINTS = 0.05


def _share(line: dict, role: str) -> Optional[float]:
    return (line["other"].get("cache_hit_ratio") or {}).get(role)


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    held = [v for v in values if v is not None]
    return sum(held) / len(held) if held else None


def _spread(values: Sequence[float], scale: float = 1, digits: str = ".4f") -> str:
    """The mean of ``values`` and, with more than one, their range."""
    mean = f"{scale * _mean(values):{digits}}"
    return mean if len(values) < 2 else f"{mean} ({scale * min(values):{digits}}-{scale * max(values):{digits}})"


def verdicts(records: Sequence[dict]) -> List[str]:
    """The targets, on each set-up's mean over its rounds (the range of the rounds in brackets)."""
    runs: dict = {}
    for r in records:
        if "other" in r:
            runs.setdefault(r["setup"], []).append(r)
    out = []
    aware, listed = runs.get("router cache_aware"), runs.get("comma list")
    if aware and listed:
        for role in (DRAFT, BASE):
            a, b = [_share(r, role) for r in aware], [_share(r, role) for r in listed]
            if None in a or None in b:
                continue
            met = _mean(a) >= _mean(b) - CACHE_POINTS
            out.append(f"- {'met' if met else 'NOT met'}: {role} cache share through the cache-aware router "
                       f"{_spread(a, 100, '.1f')} % against the comma list's {_spread(b, 100, '.1f')} % "
                       f"(within {100 * CACHE_POINTS:.0f} points, or better)")
        ta, tb = ([r["other"]["problems_per_s"] for r in group] for group in (aware, listed))
        out.append(f"- throughput: cache-aware router {_spread(ta)} problems/s, comma list {_spread(tb)} "
                   f"({_mean(ta) / _mean(tb):.2f}x)")
    fault = next((r for r in records if r["setup"].startswith("fault")), None)
    if fault:
        ok = fault["lost"] == 0 and fault["duplicated"] == 0
        out.append(f"- {'met' if ok else 'NOT met'}: a base worker killed half-way: {fault['lost']} lost, "
                   f"{fault['duplicated']} duplicated, {fault['errors']} failed of {fault['expected']}; the router "
                   f"lists {fault['healthy_base_workers_after']} of {fault['base_workers']} base workers healthy after")
    return out


def table(records: Sequence[dict]) -> str:
    rows = ["| set-up | round | problems | errors | problems/s | latency p50 / p99 s "
            "| cached prompt tokens draft / base | acceptance |",
            "|---|---:|---:|---:|---:|---|---|---:|"]
    for r in records:
        if "other" not in r:
            continue
        o = r["other"]
        lat = o["problem_latency_s"]
        rows.append(f"| {r['setup']} | {r.get('round', 1)} | {r['num_requests']} | {o['errors']} | {fmt(o['problems_per_s'], '.4f')} | "
                    f"{fmt(lat['p50'], '.1f')} / {fmt(lat['p99'], '.1f')} | {fmt(_share(r, DRAFT), pct=True)} / "
                    f"{fmt(_share(r, BASE), pct=True)} | {fmt(o['acceptance_rate'], pct=True)} |")
    return "\n".join(rows)


def plot(records: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if "other" in r]
    names = [f"{r['setup']} #{r.get('round', 1)}" for r in runs]
    fig, (thr, cache) = plt.subplots(1, 2, figsize=(9, 3.2))
    thr.bar(names, [r["other"]["problems_per_s"] for r in runs])
    thr.set_ylabel("problems/s")
    width = 0.4
    xs = range(len(runs))
    cache.bar([x - width / 2 for x in xs], [100 * (_share(r, DRAFT) or 0) for r in runs], width, label="draft")
    cache.bar([x + width / 2 for x in xs], [100 * (_share(r, BASE) or 0) for r in runs], width, label="base")
    cache.set_xticks(list(xs), names)
    cache.set_ylabel("prompt tokens from cache, %")
    cache.legend(fontsize=7)
    for ax in (thr, cache):
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured_command(out_dir: Path) -> Optional[str]:
    """The arguments of the run a report in ``out_dir`` was written from, if there is one."""
    readme = out_dir / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines() if readme.exists() else []
    prefix = "python -m eval.router_bench"
    return next((line[len(prefix):].strip() for line in lines if line.startswith(prefix)), None)


def write_report(records: Sequence[dict], out_dir: Path, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(records, out_dir / "router.png")
    text = ["# Scale-out: SGLang's router, and the replica list it replaced", "",
            "```", f"python -m eval.router_bench {command}".rstrip(), "```", "",
            table(records), "", "## Targets", ""] + verdicts(records) + ["", "![router](router.png)", ""]
    notes = out_dir / "notes.md"  # what the figures say, written by hand after a run
    if notes.exists():
        text += ["## What it says", "", notes.read_text(encoding="utf-8").strip(), ""]
    (out_dir / "README.md").write_text("\n".join(text), encoding="utf-8")
