"""The report's Markdown tables of the rows: the measured table (accuracy, wall and analytic
speed, acceptance, tokens, cache hits, errors), what each analytic speedup is made of, the
projected columns (apart, marked as a simulation) and the judge score histograms."""

from __future__ import annotations

from typing import List, Optional, Sequence

from sgl_specreason.eval.costs import Costs


def fmt(x, spec=".2f", pct=False):
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
        lines.append(f"| {r['dataset']} | {r['mode']} | {fmt(p['s_per_problem'], '.1f')} "
                     f"| {fmt(p['speedup'])}x | {fmt(r['analytic_speedup'])}x "
                     f"| {fmt(p['judge_share'], pct=True) if r['judge_calls'] else '-'} |")
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
            f"| {fmt(r.get('baseline_pass_at_1'), pct=True)} | {fmt(r['wall_s_per_problem'], '.1f')} "
            f"| {fmt(r['speedup'])}x | {fmt(r['analytic_s_per_problem'], '.1f')} | {fmt(r['analytic_speedup'])}x "
            f"| {fmt(r['acceptance_rate'], pct=True)} | {r['draft_tokens']} | {r['base_tokens']} "
            f"| {r['wasted_tokens']} | {r['judge_calls']} "
            f"| {fmt(r['cache_hit_draft'], pct=True)} | {fmt(r['cache_hit_base'], pct=True)} | {r['errors']} |")
    lines.append("")
    lines.append("Wasted tok: tokens of aborted guesses (pipelined drafts of rejected steps, base steps "
                 "that raced a kept draft), counted in draft/base tok too. "
                 "Measured per-token server time: draft "
                 f"{fmt(costs['draft_s_per_token'] and 1000 * costs['draft_s_per_token'], '.0f')} ms, base "
                 f"{fmt(costs['base_s_per_token'] and 1000 * costs['base_s_per_token'], '.0f')} ms; judge call "
                 f"{fmt(costs['judge_s'] and 1000 * costs['judge_s'], '.0f')} ms.")
    chosen = [r for r in rows if r.get("speculated_share") is not None]
    if chosen:
        lines.append("Speculation policy: of the steps it chose for, the share drafted and judged: "
                     + "; ".join(f"{r['dataset']}/{r['mode']} {100 * r['speculated_share']:.0f} %" for r in chosen)
                     + ".")
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
