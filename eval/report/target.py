"""The target a rule must meet: pass@1 within two points of the baseline's on the same problems,
a wall speedup of 1.3x or more, above random acceptance at the same rate; and the rule chosen
per data set (the fastest that meets it, or else the fastest that keeps accuracy)."""

from __future__ import annotations

from typing import List, Sequence

from sgl_specreason.eval.report.control import is_random


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
