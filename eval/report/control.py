"""The random control: the modes that keep a random share of the drafts, and the line through
them (with the base model alone at 0 % and the draft model alone at 100 % kept) that each
speculating mode's pass@1 is compared with at its own acceptance rate, over the problems both
ran."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from sgl_specreason.eval.report.records import merged_totals, pass_at_1
from sgl_specreason.eval.report.tables import fmt
from sgl_specreason.trace import BASE, DRAFT


def is_random(mode: str) -> bool:
    """A mode of the random control (``specreason-random-T``, any options)."""
    return mode.split("+")[0].startswith(("specreason-random-", "dropin-random-"))


def control_rows(rows: Sequence[dict], dataset: str) -> List[dict]:
    """The rows of the random control and the two models alone (its ends) on ``dataset``."""
    return [r for r in rows if r["dataset"] == dataset and (is_random(r["mode"]) or r["mode"] in (BASE, DRAFT))]


def random_line(rows: Sequence[dict], dataset: str) -> List[tuple]:
    """(acceptance, pass@1) of the random control on ``dataset``: its measured modes, with the
    base model alone at 0 and the draft model alone at 1 where they were run, sorted."""
    points = []
    for r in rows:
        if r["dataset"] != dataset or r["pass_at_1"] is None:
            continue
        if is_random(r["mode"]) and r["acceptance_rate"] is not None:
            points.append((r["acceptance_rate"], r["pass_at_1"]))
        elif r["mode"] in (BASE, DRAFT):
            points.append((0.0 if r["mode"] == BASE else 1.0, r["pass_at_1"]))
    return sorted(points)


def interpolate(points: Sequence[tuple], x: float) -> Optional[float]:
    """The value at ``x`` of the piecewise linear line through ``points`` (None outside them).

    >>> interpolate([(0.0, 0.4), (0.5, 0.3), (1.0, 0.2)], 0.75)
    0.25
    """
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def shared_problems(rows: Sequence[dict], chosen: Dict[tuple, List[dict]], rule: dict) -> set:
    """The problems of ``rule`` that every mode of the random control and the two models alone on
    its data set also ran: the set it is compared with random over."""
    ids = {r["problem_id"] for r in chosen[rule["dataset"], rule["mode"]]}
    for row in control_rows(rows, rule["dataset"]):
        ids &= {r["problem_id"] for r in chosen[row["dataset"], row["mode"]]}
    return ids


def same_problem_rows(rows: Sequence[dict], chosen: Dict[tuple, List[dict]], dataset: str,
                      ids: set) -> List[dict]:
    """The rows of the random control and the two models alone, recomputed over the problems
    ``ids`` (which each of them ran): modes run on more problems than a rule must not be compared
    with it over a different set."""
    out = []
    for row in control_rows(rows, dataset):
        mine = [r for r in chosen[row["dataset"], row["mode"]] if r["problem_id"] in ids]
        out.append({**row, "pass_at_1": pass_at_1(mine)[1],
                    "acceptance_rate": merged_totals(mine).acceptance_rate if is_random(row["mode"]) else None})
    return out


def against_random(rows: Sequence[dict], chosen: Optional[Dict[tuple, List[dict]]] = None) -> List[dict]:
    """Each speculating mode's pass@1 against the random control at its own acceptance rate,
    read off the line through the random modes (and the two models alone at 0 and 1). With
    ``chosen`` (each (dataset, mode)'s records), both sides are taken over the problems the rule
    shares with the control (``shared_problems``): the rule's own, unless the control ran fewer."""
    out = []
    for r in rows:
        if r["acceptance_rate"] is None or is_random(r["mode"]) or r["pass_at_1"] is None:
            continue
        if not any(is_random(x["mode"]) for x in rows if x["dataset"] == r["dataset"]):
            continue
        problems, reference = r.get("problems"), rows
        if chosen is not None:
            ids = shared_problems(rows, chosen, r)
            mine = [x for x in chosen[r["dataset"], r["mode"]] if x["problem_id"] in ids]
            if not mine:
                continue
            reference = same_problem_rows(rows, chosen, r["dataset"], ids)
            problems = len(ids)
            r = {**r, "pass_at_1": pass_at_1(mine)[1], "acceptance_rate": merged_totals(mine).acceptance_rate}
        expected = interpolate(random_line(reference, r["dataset"]), r["acceptance_rate"])
        out.append({"dataset": r["dataset"], "mode": r["mode"], "problems": problems,
                    "acceptance": r["acceptance_rate"], "pass_at_1": r["pass_at_1"],
                    "random_pass_at_1": expected,
                    "margin": None if expected is None else r["pass_at_1"] - expected})
    return out


def against_random_markdown(comparisons: Sequence[dict]) -> List[str]:
    if not comparisons:
        return []
    lines = ["", "Against the random control (a rule must beat random acceptance at its own rate; "
             "random's pass@1 there is read off the line through the measured random modes, with the "
             "base model alone at 0 % and the draft model alone at 100 %, all over the problems the rule shares with "
             "them):", "",
             "| dataset | mode | problems | acceptance | pass@1 | random at that acceptance | margin |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in comparisons:
        margin = "-" if c["margin"] is None else f"{100 * c['margin']:+.1f} pp"
        lines.append(f"| {c['dataset']} | {c['mode']} | {c['problems']} | {fmt(c['acceptance'], pct=True)} "
                     f"| {fmt(c['pass_at_1'], pct=True)} | {fmt(c['random_pass_at_1'], pct=True)} "
                     f"| {margin} |")
    return lines
