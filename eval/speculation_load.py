"""The report of a load test of the speculation policies (``scripts/load_test.py --speculate
always never auto``): throughput and latency per concurrency level, whether ``auto`` kept up
with the better fixed policy, what a step cost each way under that load, and the same curves
projected onto a GPU costs file.

    python -m eval.speculation_load eval/reports/speculate-under-load \\
        --costs eval/hardware/h100-r1-distill-1.5b-qwq-32b.json

Writes ``report.md`` and ``projection.png`` into the folder. The projection is a simulation,
not a measurement: it prices the calls the c=1 runs recorded with the costs file, scales each
runtime's per-token decode cost by the batch it would hold at each level (``--batch-scaling``,
measured on an H100 for R1-Distill-1.5B's forks), and applies ``auto``'s rule to those prices.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sgl_specreason.eval.costs import Costs
from sgl_specreason.eval.report.tables import fmt
from sgl_specreason.speculation import PROBE_EVERY, speculates
from sgl_specreason.store import read_records
from sgl_specreason.trace import BASE, DRAFT

POLICIES = ("always", "never", "auto")
#: auto's throughput must reach this share of the better fixed policy's at every level
KEEP_UP = 0.95
#: measured on one H100 (eval/hardware/measured-h100-forks.json): R1-Distill-1.5B's decode step
#: with b forks against one, b -> ratio
H100_FORK_SCALING = {1: 1.0, 2: 1.125, 3: 1.216, 4: 1.286, 8: 1.567}


def read(folder: Path) -> Tuple[List[dict], Dict[str, List[dict]]]:
    """The summary line of each level and variant (the latest, as the load test keeps them), and
    the problems of each line's run, by run id."""
    lines = {}
    for line in read_records(folder / "load_test.jsonl", require="backend"):
        lines[(line["other"]["loop"], line["other"]["concurrency"], line["backend"])] = line
    runs = {line["other"]["run_id"] for line in lines.values()}
    problems: Dict[str, List[dict]] = {run: [] for run in runs}
    for record in read_records(folder / "problems.jsonl", require="run_id"):
        if record["run_id"] in problems:
            problems[record["run_id"]].append(record)
    return list(lines.values()), problems


def policy_of(label: str) -> Optional[str]:
    return label.rsplit("/", 1)[1] if "/" in label else None


def step_costs(records: Sequence[dict]) -> Dict[str, Optional[float]]:
    """Wall seconds per kept token of the steps that were speculated (drafted, judged and, if
    rejected, rewritten) and of those the base model wrote, as the run paid them."""
    sums = {"speculated": [0.0, 0], "base": [0.0, 0]}
    for record in records:
        for step in record["steps"]:
            side = "speculated" if speculates(step.get("choice", "")) else "base"
            sums[side][0] += step["wall_s"]
            sums[side][1] += step["kept_tokens"]
    return {side: (s / n if n else None) for side, (s, n) in sums.items()}


def verdicts(lines: Sequence[dict]) -> List[str]:
    """Per level: auto against the better of always and never, as the target reads."""
    out = []
    levels = sorted({line["other"]["concurrency"] for line in lines if line["other"]["loop"] == "closed"})
    for level in levels:
        at = {policy_of(line["backend"]): line["other"] for line in lines
              if line["other"]["loop"] == "closed" and line["other"]["concurrency"] == level}
        if not all(p in at for p in POLICIES):
            continue
        for key, unit in (("kept_tokens_per_s", "kept tok/s"), ("problems_per_s", "problems/s")):
            by = {p: at[p][key] for p in POLICIES}
            best_fixed = max(by["always"], by["never"])
            better = "always" if by["always"] >= by["never"] else "never"
            ratio = by["auto"] / best_fixed if best_fixed else None
            met = ratio is not None and ratio >= KEEP_UP
            strictly = by["auto"] > best_fixed
            out.append(f"- c={level:g}, {unit}: auto {by['auto']:.4f}, {ratio:.2f}x the better fixed policy "
                       f"({better}, {best_fixed:.4f}): {'met' if met else 'NOT met'} (>= {KEEP_UP:.2f})"
                       f"{'; strictly better than both' if strictly else ''}")
    return out


def table(lines: Sequence[dict], problems: Dict[str, List[dict]]) -> str:
    def f(x, spec=".2f"):
        return fmt(x, spec)

    def pct(x):
        return fmt(x, pct=True)

    out = ["| level | policy | problems | errors | problems/s | kept tok/s | latency p50 / p99 s | pass@1 "
           "| acceptance | steps speculated | busy draft / base | s per kept token: speculated / base steps |",
           "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for line in sorted(lines, key=lambda x: (x["other"]["concurrency"] or 0, POLICIES.index(policy_of(x["backend"]) or "always"))):
        o = line["other"]
        lat, busy = o["problem_latency_s"], o.get("busy_share") or {}
        costs = step_costs(problems.get(o["run_id"], []))
        out.append(f"| c={o['concurrency']:g} | {policy_of(line['backend']) or line['backend']} | "
                   f"{line['num_requests']} | {o['errors']} | {f(o['problems_per_s'], '.4f')} | "
                   f"{f(o['kept_tokens_per_s'], '.1f')} | {f(lat['p50'], '.0f')} / {f(lat['p99'], '.0f')} | "
                   f"{pct(line['accuracy'])} | {pct(o['acceptance_rate'])} | {pct(o.get('speculated_share'))} | "
                   f"{pct(busy.get(DRAFT))} / {pct(busy.get(BASE))} | "
                   f"{f(costs['speculated'], '.3f')} / {f(costs['base'], '.3f')} |")
    return "\n".join(out)


# -- the projection onto a costs file ----------------------------------------------------------------

def scaling(batch: float, curve: Dict[int, float]) -> float:
    """The per-step decode cost at ``batch`` against batch 1, linear between measured points and
    beyond the last.

    >>> scaling(6, {1: 1.0, 4: 1.3, 8: 1.7})
    1.5
    """
    points = sorted(curve.items())
    for (b0, r0), (b1, r1) in zip(points, points[1:]):
        if batch <= b1:
            return r0 + (r1 - r0) * (batch - b0) / (b1 - b0)
    (b0, r0), (b1, r1) = points[-2], points[-1]
    return r1 + (r1 - r0) * (batch - b1) / (b1 - b0)


def problem_seconds(record: dict, costs: Costs, batch: float, curve: Dict[int, float]) -> float:
    """A recorded problem's calls priced with ``costs``, each runtime holding ``batch`` requests:
    the decode of every call costs ``scaling(batch)`` times its batch-1 price (prefill and request
    costs stay)."""
    total = 0.0
    calls = [c for step in record["steps"] for c in step["calls"]]
    if record.get("answer_call"):
        calls.append(record["answer_call"])
    factor = scaling(batch, curve)
    for call in calls:
        judge = call["kind"] == "judge"
        cost = costs.judge if judge and costs.judge is not None else costs.draft if call["role"] == DRAFT else costs.base
        decode = cost.decode_ms_per_token * call["completion_tokens"] / 1000
        total += cost.seconds(call) + (factor - 1) * decode
    return total


def probe_share(records: Sequence[dict]) -> Optional[float]:
    """The share of auto's policy steps that were probes (None: no auto steps recorded)."""
    choices = [s.get("choice", "") for r in records for s in r["steps"]]
    policy = [c for c in choices if c in ("speculate", "base", "probe-speculate", "probe-base")]
    return sum(c.startswith("probe") for c in policy) / len(policy) if policy else None


def project(records: Dict[str, Sequence[dict]], costs: Costs, levels: Sequence[int],
            curve: Dict[int, float], probes: Optional[float] = None) -> Dict[str, Dict[int, float]]:
    """Projected problems/s of always and never at each level (closed loop: ``c`` clients, each
    problem's latency priced at batch ``c``), and of auto: the cheaper of the two at that level,
    but for its probes of the other (``probes``: the share auto's own records show; at most one
    step in ``PROBE_EVERY`` when not known)."""
    probes = 1 / PROBE_EVERY if probes is None else probes
    out: Dict[str, Dict[int, float]] = {"always": {}, "never": {}, "auto": {}}
    for c in levels:
        latency = {p: sum(problem_seconds(r, costs, c, curve) for r in records[p]) / len(records[p])
                   for p in ("always", "never")}
        for p in ("always", "never"):
            out[p][c] = c / latency[p]
        cheaper, other = sorted(("always", "never"), key=lambda p: latency[p])
        mixed = (1 - probes) * latency[cheaper] + probes * latency[other]
        out["auto"][c] = c / mixed
    return out


def plot(lines: Sequence[dict], projected: Optional[Dict[str, Dict[int, float]]], path: Path,
         costs_name: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if projected else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.0 * panels, 3.5))
    for i, policy in enumerate(POLICIES):
        colour = f"C{i}"
        sel = sorted((line for line in lines if policy_of(line["backend"]) == policy),
                     key=lambda x: x["other"]["concurrency"])
        xs = [line["other"]["concurrency"] for line in sel]
        axes[0].plot(xs, [line["other"]["problems_per_s"] for line in sel], marker="o", color=colour, label=policy)
        axes[1].plot(xs, [line["other"]["kept_tokens_per_s"] for line in sel], marker="o", color=colour,
                     label=policy)
        axes[2].plot(xs, [line["other"]["problem_latency_s"]["p50"] for line in sel], marker="o", color=colour,
                     label=f"{policy} p50")
        axes[2].plot(xs, [line["other"]["problem_latency_s"]["p99"] for line in sel], marker="o", color=colour,
                     linestyle="--", label=f"{policy} p99")
        if projected:
            levels = sorted(projected[policy])
            axes[3].plot(levels, [projected[policy][c] for c in levels], marker="s", color=colour, label=policy)
    axes[0].set_title("measured: problems/s", fontsize=9)
    axes[1].set_title("measured: kept tokens/s", fontsize=9)
    axes[2].set_title("measured: latency per problem, s", fontsize=9)
    if projected:
        axes[3].set_title(f"PROJECTION: {costs_name[:40]}", fontsize=8)
        axes[3].set_ylabel("problems/s (projected)")
    for ax in axes:
        ax.set_xlabel("concurrency (clients)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(folder: Path, costs_path: Optional[Path], levels: Sequence[int]) -> str:
    lines, problems = read(folder)
    closed = [line for line in lines if line["other"]["loop"] == "closed"]
    text = ["# Speculation policies under load: report", "",
            "Generated by `python -m eval.speculation_load` from `load_test.jsonl` and `problems.jsonl`.",
            "", table(closed, problems), "", "## auto against the better fixed policy", ""]
    text += verdicts(closed) or ["- not every policy has run at any level yet"]
    projected = None
    if costs_path is not None:
        costs = Costs.load(costs_path)
        first = {policy_of(line["backend"]): problems[line["other"]["run_id"]] for line in closed
                 if line["other"]["concurrency"] == 1}
        if all(first.get(p) for p in ("always", "never")):
            probes = probe_share([r for line in closed if policy_of(line["backend"]) == "auto"
                                  for r in problems[line["other"]["run_id"]]])
            projected = project(first, costs, levels, H100_FORK_SCALING, probes)
            text += ["", f"## PROJECTION onto {costs.name} (a simulation, not a measurement)", "",
                     "The c=1 records of always and never, every call priced with the costs file, "
                     "each runtime's decode scaled by its batch at level c (H100 forks of "
                     "R1-Distill-1.5B, applied to both models); auto takes the cheaper policy but for "
                     f"its probes of the other, {100 * (probes if probes is not None else 1 / PROBE_EVERY):.0f} % "
                     "of its steps as its records here show.", "",
                     "| level | always | never | auto | auto / better |", "|---|---:|---:|---:|---:|"]
            for c in levels:
                best = max(projected["always"][c], projected["never"][c])
                text.append(f"| c={c} | {projected['always'][c]:.3f} | {projected['never'][c]:.3f} | "
                            f"{projected['auto'][c]:.3f} | {projected['auto'][c] / best:.2f} |")
    plot(closed, projected, folder / "projection.png", costs_path.stem if costs_path else "")
    return "\n".join(text) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.speculation_load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the load test's --out-dir")
    parser.add_argument("--costs", type=Path, help="a costs file to project onto (eval/hardware/*.json)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="concurrency levels of the projection (the batch scaling is measured up to 8)")
    args = parser.parse_args(argv)
    if not (args.folder / "load_test.jsonl").exists():
        print(f"error: {args.folder} holds no load_test.jsonl", file=sys.stderr)
        return 2
    text = report(args.folder, args.costs, args.levels)
    (args.folder / "report.md").write_text(text, encoding="utf-8")
    print(text)
    print(json.dumps({"report": str(args.folder / "report.md"), "plot": str(args.folder / "projection.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
