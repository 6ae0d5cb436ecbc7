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


def verdicts(records: Sequence[dict]) -> List[str]:
    by = {r["setup"]: r for r in records}
    out = []
    aware, listed = by.get("router cache_aware"), by.get("comma list")
    if aware and listed:
        for role in (DRAFT, BASE):
            a, b = _share(aware, role), _share(listed, role)
            if a is None or b is None:
                continue
            met = a >= b - CACHE_POINTS
            out.append(f"- {'met' if met else 'NOT met'}: {role} cache share through the cache-aware router "
                       f"{100 * a:.1f} % against the comma list's {100 * b:.1f} % (within {100 * CACHE_POINTS:.0f} "
                       "points, or better)")
        ta, tb = aware["other"]["problems_per_s"], listed["other"]["problems_per_s"]
        out.append(f"- throughput: cache-aware router {ta:.4f} problems/s, comma list {tb:.4f} ({ta / tb:.2f}x)")
    fault = next((r for k, r in by.items() if k.startswith("fault")), None)
    if fault:
        ok = fault["lost"] == 0 and fault["duplicated"] == 0
        out.append(f"- {'met' if ok else 'NOT met'}: a base worker killed half-way: {fault['lost']} lost, "
                   f"{fault['duplicated']} duplicated, {fault['errors']} failed of {fault['expected']}; the router "
                   f"lists {fault['healthy_base_workers_after']} of {fault['base_workers']} base workers healthy after")
    return out


def table(records: Sequence[dict]) -> str:
    rows = ["| set-up | problems | errors | problems/s | latency p50 / p99 s | cached prompt tokens draft / base | acceptance |",
            "|---|---:|---:|---:|---|---|---:|"]
    for r in records:
        if "other" not in r:
            continue
        o = r["other"]
        lat = o["problem_latency_s"]
        rows.append(f"| {r['setup']} | {r['num_requests']} | {o['errors']} | {fmt(o['problems_per_s'], '.4f')} | "
                    f"{fmt(lat['p50'], '.1f')} / {fmt(lat['p99'], '.1f')} | {fmt(_share(r, DRAFT), pct=True)} / "
                    f"{fmt(_share(r, BASE), pct=True)} | {fmt(o['acceptance_rate'], pct=True)} |")
    return "\n".join(rows)


def plot(records: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in records if "other" in r]
    names = [r["setup"] for r in runs]
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


def write_report(records: Sequence[dict], out_dir: Path, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(records, out_dir / "router.png")
    text = ["# Scale-out: SGLang's router against this project's replica list", "",
            "```", f"python -m eval.router_bench {command}".rstrip(), "```", "",
            table(records), "", "## Targets", ""] + verdicts(records) + ["", "![router](router.png)", ""]
    (out_dir / "README.md").write_text("\n".join(text), encoding="utf-8")
