"""The report built from a result file: the final records, one row per (data set, mode) with
its speedups over the baseline mode on the same problems, the comparison with the random control
and with the target, and the Markdown of it all."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from sgl_specreason.eval.costs import Costs
from sgl_specreason.eval.report.control import against_random, against_random_markdown
from sgl_specreason.eval.report.records import (
    acceptance_by_step,
    final_records,
    kept_tokens,
    mean,
    merged_totals,
    pass_at_1,
)
from sgl_specreason.eval.report.speed import analytic_latency, per_token_costs, projected, speedup_limits
from sgl_specreason.eval.report.tables import markdown
from sgl_specreason.eval.report.target import against_target, against_target_markdown
from sgl_specreason.store import read_records
from sgl_specreason.trace import BASE, DRAFT


def _row(dataset: str, mode: str, records: List[dict], costs: dict, baseline: dict,
         projection: Optional[Costs] = None) -> dict:
    """``baseline``: wall, analytic, projected (s per problem), kept (tokens per problem) and
    pass@1 of the baseline mode over the same problems; ``projection``: the costs to project
    with."""
    n, pass1, se = pass_at_1(records)
    walls = [r["wall_s"] for r in records]
    wall = mean(walls)
    analytic = mean([analytic_latency(r, Costs.measured(costs)) for r in records])
    kept = mean([kept_tokens(r) for r in records])
    totals = merged_totals(records)
    base_wall, base_analytic = baseline.get("wall"), baseline.get("analytic")
    histogram = [0] * 10
    for r in records:
        for step in r["steps"]:
            if step["score"] is not None:
                histogram[min(9, max(0, int(step["score"])))] += 1

    row = {
        "dataset": dataset, "mode": mode, "problems": n, "samples": len(records),
        "pass_at_1": pass1, "pass_at_1_se": se, "baseline_pass_at_1": baseline.get("pass_at_1"),
        "wall_s_per_problem": wall, "wall_s_total": sum(walls),
        "speedup": (base_wall / wall) if base_wall and wall else None,
        "analytic_s_per_problem": analytic,
        "analytic_speedup": (base_analytic / analytic) if base_analytic and analytic else None,
        "acceptance_rate": totals.acceptance_rate,
        "judge_histogram": histogram,
        "draft_tokens": totals.draft_tokens,
        "base_tokens": totals.base_tokens,
        "judge_calls": totals.judge_calls,
        "wasted_tokens": totals.wasted_tokens,
        "cache_hit_draft": totals.cache_hit_ratio(DRAFT), "cache_hit_base": totals.cache_hit_ratio(BASE),
        "errors": sum(1 for r in records if r.get("error")),
        "kept_tokens_per_problem": kept,
        "limits": speedup_limits(totals, len(records), analytic, kept, baseline, costs),
        "projected": None if projection is None else projected(records, projection, baseline.get("projected")),
    }
    if totals.speculated_share is not None:  # records that say how the speculation policy chose
        row["speculated_share"] = totals.speculated_share
    return row


def build_report(path: Path, modes: Sequence[str], dataset: Optional[str] = None,
                 baseline: str = BASE, projection: Optional[Costs] = None) -> dict:
    """Rows for every (data set, mode) in ``path`` (``modes`` first, in that order), speedups
    against the ``baseline`` mode (base-only unless told) of the same data set over the same
    problems; with ``projection``, also each mode's latency and speedup with those costs."""
    records = [r for r in final_records(read_records(path))
               if dataset is None or r["dataset"] == Path(dataset).stem or r["dataset"] == dataset]
    costs = per_token_costs(records)
    rows, by_step, by_mode = [], {}, {}
    for ds in sorted({r["dataset"] for r in records}):
        mine = [r for r in records if r["dataset"] == ds]
        present = {r["mode"] for r in mine}
        order = [m for m in modes if m in present] + sorted(present - set(modes))
        base = [r for r in mine if r["mode"] == baseline]
        base_ids = {r["problem_id"] for r in base}
        for mode in order:
            chosen = [r for r in mine if r["mode"] == mode and (not base_ids or r["problem_id"] in base_ids)]
            base_same = [r for r in base if r["problem_id"] in {c["problem_id"] for c in chosen}]
            baseline_same = {"wall": mean([r["wall_s"] for r in base_same]),
                             "analytic": mean([analytic_latency(r, Costs.measured(costs)) for r in base_same]),
                             "kept": mean([kept_tokens(r) for r in base_same]),
                             "pass_at_1": pass_at_1(base_same)[1]}
            if projection is not None:
                baseline_same["projected"] = mean([analytic_latency(r, projection) for r in base_same])
            rows.append(_row(ds, mode, chosen, costs, baseline_same, projection))
            by_mode[ds, mode] = chosen
            if any(step["score"] is not None for r in chosen for step in r["steps"]):
                by_step[f"{ds}/{mode}"] = acceptance_by_step(chosen)
    comparisons = against_random(rows, by_mode)
    target = against_target(rows, comparisons)
    return {"rows": rows, "costs": costs, "acceptance_by_step": by_step, "baseline": baseline,
            "projection": None if projection is None else projection.to_dict(),
            "against_random": comparisons, "against_target": target,
            "markdown": f"Speedups are over {baseline}, on the same problems.\n\n"
                        + markdown(rows, costs, projection)
                        + "\n".join(against_random_markdown(comparisons) + against_target_markdown(target))}
