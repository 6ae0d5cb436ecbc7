"""Speed read off the records: the measured costs (server seconds per generated token of each
model, per judge call), each record's analytic latency (every call priced with costs, the
overlap of pipelined modes taken off), what a mode's analytic speedup is made of and bounded by,
and the projection of a mode's calls with another machine's costs (``eval.costs``)."""

from __future__ import annotations

from collections import defaultdict
from typing import List, Optional, Sequence

from sgl_specreason.eval.costs import Costs
from sgl_specreason.eval.report.records import mean, merged_totals, record_calls
from sgl_specreason.trace import BASE, DRAFT, Totals


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


def projected(records: List[dict], projection: Costs, baseline_s: Optional[float]) -> dict:
    """The mode's calls priced with ``projection``: seconds per problem, speedup over the
    baseline's projected seconds, and the judge calls' share of the time. A simulation."""
    seconds = mean([analytic_latency(r, projection) for r in records])
    judge = mean([judge_seconds(r, projection) for r in records])
    return {"costs": projection.name, "s_per_problem": seconds,
            "speedup": (baseline_s / seconds) if baseline_s and seconds else None,
            "judge_share": (judge / seconds) if seconds and judge is not None else None}
