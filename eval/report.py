"""The evaluation report: per data set and mode, accuracy, measured and analytic speed,
acceptance, judge scores, tokens and cache hits; JSONL, a Markdown table and PNG plots.

``python -m eval`` writes it at the end of a run; ``python -m eval.report RESULT_FILE`` writes it
again from the records alone (no runtime needed), e.g. with another ``--baseline``, or with
``--costs COSTS.json`` a projection of the same records' calls on other hardware (``eval.costs``):
a simulation, marked as such."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sgl_specreason.eval.costs import Costs
from sgl_specreason.errors import ConfigError
from sgl_specreason.store import read_records
from sgl_specreason.trace import BASE, DRAFT, Totals


def record_key(record: dict) -> tuple:
    """What a record is the result of: (data set, problem, sample, mode)."""
    return (record["dataset"], record["problem_id"], record["sample"], record["mode"])


def final_records(records: Sequence[dict]) -> List[dict]:
    """One record per key: the last that succeeded, or the last failure where every try failed.
    A resumed run retries what failed and appends the retry, so earlier failures stay in the
    file; they must count neither as a wrong answer nor as a second sample."""
    final: Dict[tuple, dict] = {}
    for record in records:
        key = record_key(record)
        if key not in final or final[key].get("error") or not record.get("error"):
            final[key] = record
    return list(final.values())


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def merged_totals(records: Sequence[dict]) -> Totals:
    totals = Totals()
    for record in records:
        totals.merge(Totals.from_dict(record["totals"]))
    return totals


def per_token_costs(records: Sequence[dict]) -> dict:
    """Measured server seconds per generated token of each model, and per judge call, from
    every record of the run (judge calls left out of the base model's decode time)."""
    totals = merged_totals(records)

    def seconds(ms):
        return None if ms is None else ms / 1000

    return {
        "draft_s_per_token": seconds(totals.ms_per_token(DRAFT)),
        "base_s_per_token": seconds(totals.ms_per_token(BASE)),
        "judge_s": totals.judge_s_mean,
    }


def record_calls(record: dict) -> List[dict]:
    """Every runtime call of a record: its steps' and the answer's."""
    calls = [c for step in record["steps"] for c in step["calls"]]
    return calls + [record["answer_call"]] if record.get("answer_call") else calls


def analytic_latency(record: dict, costs: Costs) -> Optional[float]:
    """Every call of the record priced with ``costs``; with the run's measured costs
    (``Costs.measured``) that is tokens times each model's per-token time plus each judge call's
    mean, with a costs file's, a projection.

    For pipelined modes (``mode_info``: pipeline, race_base_step), as if each runtime had its own
    hardware: a step whose predecessor was kept had its draft begun with that predecessor's
    judgement (min(draft, judge) hidden); with the race, a rejected step's base step began with
    its judgement (min(base step, judge) hidden); aborted guesses ran beside the loop (not
    counted). A step's drafts are judged together: its judgement takes its longest judge call."""
    prices = [costs.call_s(c) for c in record_calls(record)]
    if any(price is None for price in prices):
        return None
    total = sum(prices)
    info = record.get("mode_info") or {}
    if not (info.get("pipeline") or info.get("race_base_step")):
        return total
    previous_kept = False
    for step in record["steps"]:
        seconds, judge = defaultdict(float), 0.0
        for c in step["calls"]:
            if c["kind"] == "judge":
                judge = max(judge, costs.call_s(c))
            else:
                seconds[c["kind"], c["role"]] += costs.call_s(c)
        total -= seconds["wasted", DRAFT] + seconds["wasted", BASE]
        judged = step["score"] is not None
        if info.get("pipeline") and previous_kept and judged:
            total -= min(seconds["draft", DRAFT], judge)
        if info.get("race_base_step") and judged and step["source"] == BASE:
            total -= min(seconds["step", BASE], judge)
        previous_kept = judged and step["source"] == DRAFT
    return total


def judge_seconds(record: dict, costs: Costs) -> float:
    """What the record's judge calls cost, priced with ``costs``."""
    return sum(costs.call_s(c) or 0.0 for c in record_calls(record) if c["kind"] == "judge")


def kept_tokens(record: dict) -> int:
    t = record["totals"]
    return t["kept_draft_tokens"] + t["kept_base_tokens"]


def speedup_limits(totals: Totals, samples: int, analytic: Optional[float], kept: Optional[float],
                   baseline: dict, costs: dict) -> Optional[dict]:
    """Where a judged mode's analytic speedup comes from, and what bounds it.

    analytic speedup = per-token speedup x length ratio: the baseline's analytic seconds per
    kept token over this mode's, times the baseline's kept tokens per problem over this mode's
    (shorter or longer solutions). The per-token part is bounded by the two models' per-token
    times and the judge's cost per drafted step: with every draft kept it would be
    base / (draft + judge / tokens per drafted step) -- the ceiling."""
    b, d, judge = costs["base_s_per_token"], costs["draft_s_per_token"], costs["judge_s"]
    if not (totals.judge_calls and analytic and kept and baseline.get("analytic") and baseline.get("kept")
            and b and d and judge is not None):
        return None
    step = totals.draft_tokens / totals.judge_calls
    baseline_per_token = baseline["analytic"] / baseline["kept"]
    return {
        "kept_tokens": kept, "baseline_kept_tokens": baseline["kept"],
        "length_ratio": baseline["kept"] / kept,
        "s_per_kept_token": analytic / kept, "baseline_s_per_kept_token": baseline_per_token,
        "per_token_speedup": baseline_per_token / (analytic / kept),
        "draft_tokens_per_step": step, "draft_over_base": d / b, "judge_in_draft_tokens": judge / d,
        "ceiling": b / (d + judge / step),
        "judge_share": totals.judge_calls * judge / (analytic * samples),
    }


def pass_at_1(records: Sequence[dict]) -> tuple:
    """(problems, pass@1, its standard error) over ``records``: each problem's share of right
    samples, averaged over the problems."""
    by_problem = defaultdict(list)
    for r in records:
        by_problem[r["problem_id"]].append(1.0 if r.get("correct") else 0.0)
    means = [sum(v) / len(v) for v in by_problem.values()]
    n = len(means)
    return (n, sum(means) / n if n else None,
            statistics.stdev(means) / math.sqrt(n) if n > 1 else None)


def _row(dataset: str, mode: str, records: List[dict], costs: dict, baseline: dict,
         projection: Optional[Costs] = None) -> dict:
    """``baseline``: wall, analytic, projected (s per problem), kept (tokens per problem) and
    pass@1 of the baseline mode over the same problems; ``projection``: the costs to project
    with."""
    n, pass1, se = pass_at_1(records)
    walls = [r["wall_s"] for r in records]
    wall = _mean(walls)
    analytic = _mean([analytic_latency(r, Costs.measured(costs)) for r in records])
    kept = _mean([kept_tokens(r) for r in records])
    totals = merged_totals(records)
    base_wall, base_analytic = baseline.get("wall"), baseline.get("analytic")
    histogram = [0] * 10
    for r in records:
        for step in r["steps"]:
            if step["score"] is not None:
                histogram[min(9, max(0, int(step["score"])))] += 1

    return {
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


def projected(records: List[dict], projection: Costs, baseline_s: Optional[float]) -> dict:
    """The mode's calls priced with ``projection``: seconds per problem, speedup over the
    baseline's projected seconds, and the judge calls' share of the time. A simulation."""
    seconds = _mean([analytic_latency(r, projection) for r in records])
    judge = _mean([judge_seconds(r, projection) for r in records])
    return {"costs": projection.name, "s_per_problem": seconds,
            "speedup": (baseline_s / seconds) if baseline_s and seconds else None,
            "judge_share": (judge / seconds) if seconds and judge is not None else None}


def acceptance_by_step(records: Sequence[dict]) -> Dict[int, float]:
    counts, kept = defaultdict(int), defaultdict(int)
    for r in records:
        for step in r["steps"]:
            if step["score"] is not None:
                counts[step["index"]] += 1
                kept[step["index"]] += step["source"] == DRAFT
    return {i: kept[i] / counts[i] for i in sorted(counts)}


def _fmt(x, spec=".2f", pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else format(x, spec)


def projection_markdown(rows: Sequence[dict], projection: Costs) -> List[str]:
    """The projected columns, in a table of their own that says they are no measurement."""
    source = f" ({projection.path})" if projection.path else ""
    lines = [f"PROJECTION, not a measurement: the same records' calls (new prompt tokens, generated "
             f"tokens, requests) priced with the costs of {projection.name}{source}: "
             f"{projection.describe()}. Every column above is measured on this run's hardware.", "",
             "| dataset | mode | projected s/problem | projected speedup | measured analytic speedup "
             "| projected judge share of time |",
             "|" + "|".join(["---"] * 6) + "|"]
    for r in rows:
        p = r["projected"]
        lines.append(f"| {r['dataset']} | {r['mode']} | {_fmt(p['s_per_problem'], '.1f')} "
                     f"| {_fmt(p['speedup'])}x | {_fmt(r['analytic_speedup'])}x "
                     f"| {_fmt(p['judge_share'], pct=True) if r['judge_calls'] else '-'} |")
    return lines + [""]


def markdown(rows: Sequence[dict], costs: dict, projection: Optional[Costs] = None) -> str:
    head = ("| dataset | mode | n | pass@1 (± se) | baseline's on these | wall s/problem | speedup | analytic s | analytic speedup "
            "| acceptance | draft tok | base tok | wasted tok | judge calls | cache draft | cache base | errors |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        pass1 = "-" if r["pass_at_1"] is None else (
            f"{100 * r['pass_at_1']:.1f}%" + (f" ± {100 * r['pass_at_1_se']:.1f}" if r["pass_at_1_se"] is not None else ""))
        lines.append(
            f"| {r['dataset']} | {r['mode']} | {r['problems']} | {pass1} "
            f"| {_fmt(r.get('baseline_pass_at_1'), pct=True)} | {_fmt(r['wall_s_per_problem'], '.1f')} "
            f"| {_fmt(r['speedup'])}x | {_fmt(r['analytic_s_per_problem'], '.1f')} | {_fmt(r['analytic_speedup'])}x "
            f"| {_fmt(r['acceptance_rate'], pct=True)} | {r['draft_tokens']} | {r['base_tokens']} "
            f"| {r['wasted_tokens']} | {r['judge_calls']} "
            f"| {_fmt(r['cache_hit_draft'], pct=True)} | {_fmt(r['cache_hit_base'], pct=True)} | {r['errors']} |")
    lines.append("")
    lines.append("Wasted tok: tokens of aborted guesses (pipelined drafts of rejected steps, base steps "
                 "that raced a kept draft), counted in draft/base tok too. "
                 "Measured per-token server time: draft "
                 f"{_fmt(costs['draft_s_per_token'] and 1000 * costs['draft_s_per_token'], '.0f')} ms, base "
                 f"{_fmt(costs['base_s_per_token'] and 1000 * costs['base_s_per_token'], '.0f')} ms; judge call "
                 f"{_fmt(costs['judge_s'] and 1000 * costs['judge_s'], '.0f')} ms.")
    limited = [r for r in rows if r["limits"]]
    if limited:
        lines += ["", "What the analytic speedup is made of (analytic speedup = per-token speedup x length "
                  "ratio; ceiling: the per-token speedup if every draft were kept, base / (draft + judge / "
                  "drafted tokens per step)):", "",
                  "| dataset | mode | kept tok/problem | baseline's | length ratio | ms per kept token "
                  "| baseline's | per-token speedup | tokens per drafted step | judge = draft tokens "
                  "| ceiling | judge share of time |",
                  "|" + "|".join(["---"] * 12) + "|"]
        for r in limited:
            x = r["limits"]
            lines.append(
                f"| {r['dataset']} | {r['mode']} | {x['kept_tokens']:.0f} | {x['baseline_kept_tokens']:.0f} "
                f"| {x['length_ratio']:.2f}x | {1000 * x['s_per_kept_token']:.0f} "
                f"| {1000 * x['baseline_s_per_kept_token']:.0f} | {x['per_token_speedup']:.2f}x "
                f"| {x['draft_tokens_per_step']:.1f} | {x['judge_in_draft_tokens']:.1f} | {x['ceiling']:.2f}x "
                f"| {100 * x['judge_share']:.0f}% |")
        lines.append("")
    if projection is not None:
        lines += projection_markdown(rows, projection)
    for r in rows:
        if any(r["judge_histogram"]):
            lines.append(f"Judge scores {r['dataset']}/{r['mode']} (steps per bin [0,1) .. [9,10]): "
                         f"{r['judge_histogram']}")
    return "\n".join(lines)


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
        lines.append(f"| {c['dataset']} | {c['mode']} | {c['problems']} | {_fmt(c['acceptance'], pct=True)} "
                     f"| {_fmt(c['pass_at_1'], pct=True)} | {_fmt(c['random_pass_at_1'], pct=True)} "
                     f"| {margin} |")
    return lines


TARGET_DROP = 0.02  # pass@1 at most this far under the baseline's, on the same problems
TARGET_SPEEDUP = 1.3  # measured wall-clock speedup at least


def against_target(rows: Sequence[dict], comparisons: Sequence[dict], max_drop: float = TARGET_DROP,
                   min_speedup: float = TARGET_SPEEDUP) -> dict:
    """Each rule (a speculating mode, not the random control) against the target: pass@1 within
    ``max_drop`` of the baseline's on its own problems, a wall speedup of ``min_speedup`` or more,
    and above random acceptance at its rate. ``choice`` per data set: the fastest rule that meets
    all three; failing that, the fastest that keeps accuracy and beats random (``met`` False);
    None where no rule keeps accuracy."""
    margins = {(c["dataset"], c["mode"]): c["margin"] for c in comparisons}
    checks = []
    for r in rows:
        if r["acceptance_rate"] is None or is_random(r["mode"]) or r["pass_at_1"] is None \
                or r["baseline_pass_at_1"] is None or r["speedup"] is None:
            continue
        margin = margins.get((r["dataset"], r["mode"]))
        gap = r["pass_at_1"] - r["baseline_pass_at_1"]
        checks.append({"dataset": r["dataset"], "mode": r["mode"], "problems": r["problems"], "gap": gap,
                       "speedup": r["speedup"], "margin": margin,
                       "keeps_accuracy": gap >= -max_drop - 1e-9, "fast_enough": r["speedup"] >= min_speedup,
                       "beats_random": margin is not None and margin > 0})
    choice = {}
    for ds in sorted({c["dataset"] for c in checks}):
        keeping = [c for c in checks if c["dataset"] == ds and c["keeps_accuracy"] and c["beats_random"]]
        met = [c for c in keeping if c["fast_enough"]]
        pick = max(met or keeping, key=lambda c: c["speedup"], default=None)
        choice[ds] = None if pick is None else {"mode": pick["mode"], "met": bool(met)}
    return {"max_drop": max_drop, "min_speedup": min_speedup, "rules": checks, "choice": choice}


def against_target_markdown(target: dict) -> List[str]:
    if not target["rules"]:
        return []
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    lines = ["", f"Against the target (pass@1 at most {100 * target['max_drop']:.0f} points under the "
                 f"baseline's on the same problems, a wall speedup of {target['min_speedup']:.2f}x or more, "
                 "above random acceptance at the same rate):", "",
             "| dataset | mode | problems | pass@1 - baseline's | wall speedup | keeps accuracy | fast enough "
             "| beats random |", "|---|---|---:|---:|---:|---|---|---|"]
    for c in target["rules"]:
        lines.append(f"| {c['dataset']} | {c['mode']} | {c['problems']} | {100 * c['gap']:+.1f} pp "
                     f"| {c['speedup']:.2f}x | {yes(c['keeps_accuracy'])} | {yes(c['fast_enough'])} "
                     f"| {yes(c['beats_random'])} |")
    lines.append("")
    for ds, pick in target["choice"].items():
        if pick is None:
            lines.append(f"{ds}: no rule keeps accuracy and beats random; none can be chosen.")
        elif pick["met"]:
            lines.append(f"{ds}: {pick['mode']} meets the target (the fastest that does).")
        else:
            lines.append(f"{ds}: no rule meets the speed target; the fastest that keeps accuracy is "
                         f"{pick['mode']}.")
    return lines


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
            baseline_same = {"wall": _mean([r["wall_s"] for r in base_same]),
                             "analytic": _mean([analytic_latency(r, Costs.measured(costs)) for r in base_same]),
                             "kept": _mean([kept_tokens(r) for r in base_same]),
                             "pass_at_1": pass_at_1(base_same)[1]}
            if projection is not None:
                baseline_same["projected"] = _mean([analytic_latency(r, projection) for r in base_same])
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


def write_report(report: dict, out_dir: Path) -> List[Path]:
    """report.jsonl, report.md and two PNG plots in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.jsonl", out_dir / "report.md"]
    with open(paths[0], "w", encoding="utf-8") as handle:
        for row in report["rows"]:
            handle.write(json.dumps(row) + "\n")
        handle.write(json.dumps({"costs": report["costs"], "acceptance_by_step": report["acceptance_by_step"],
                                 "projection": report.get("projection"),
                                 "against_random": report.get("against_random"),
                                 "against_target": report.get("against_target")}) + "\n")
    paths[1].write_text(report["markdown"] + "\n", encoding="utf-8")

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in report["rows"]:
        if row["pass_at_1"] is None or row["speedup"] is None:
            continue
        ax.scatter(row["speedup"], 100 * row["pass_at_1"], label=f"{row['dataset']}/{row['mode']}",
                   marker="x" if is_random(row["mode"]) else "o")
    for ds in sorted({r["dataset"] for r in report["rows"]}):  # the random control, as a line
        control = sorted((r["speedup"], 100 * r["pass_at_1"]) for r in control_rows(report["rows"], ds)
                         if r["speedup"] is not None and r["pass_at_1"] is not None)
        if len(control) > 1 and any(is_random(r["mode"]) for r in report["rows"] if r["dataset"] == ds):
            ax.plot(*zip(*control), linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel(f"measured speedup over {report.get('baseline', BASE)} (x)")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("Accuracy vs speedup")
    ax.grid(alpha=0.3)
    if ax.collections:  # a legend, not labels on the points: close points made them unreadable
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    paths.append(out_dir / "accuracy_vs_speedup.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in report["acceptance_by_step"].items():
        if curve:
            ax.plot(list(curve), [100 * v for v in curve.values()], marker="o", label=label)
    ax.set_xlabel("step index")
    ax.set_ylabel("drafts accepted (%)")
    ax.set_title("Acceptance per step")
    ax.grid(alpha=0.3)
    if report["acceptance_by_step"]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "acceptance_per_step.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.report",
        description="Write the report of an evaluation's result file again, from its records alone.")
    parser.add_argument("result_file", type=Path)
    parser.add_argument("--report-dir", type=Path, default=Path("results/report"))
    parser.add_argument("--baseline", default=BASE, help="the mode speedups are measured against")
    parser.add_argument("--modes", nargs="*", default=[], help="rows of these modes first, in this order")
    parser.add_argument("--dataset", help="only this data set (default: every one in the file)")
    parser.add_argument("--costs", type=Path, metavar="COSTS.json",
                        help="also project every mode's latency and speedup with these per-role costs "
                             "(decode ms per token, prefill ms per new prompt token, ms per request; "
                             "e.g. eval/costs/h100-r1-distill-1.5b-qwq-32b.json): a simulation from "
                             "the records' own calls, shown apart from the measured columns")
    args = parser.parse_args(argv)
    if not args.result_file.is_file():
        parser.error(f"{args.result_file}: no such file")
    try:
        projection = Costs.load(args.costs) if args.costs else None
    except ConfigError as e:
        parser.error(str(e))
    report = build_report(args.result_file, args.modes, args.dataset, args.baseline, projection)
    if not report["rows"]:
        parser.error(f"{args.result_file} holds no evaluation records"
                     + (f" of data set {args.dataset}" if args.dataset else ""))
    paths = write_report(report, args.report_dir)
    print(report["markdown"])
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
