"""Where step-level speculation stops paying: the speculation policies measured on the real pair
at every concurrency, in problems/s and correct answers/s, the simulator calibrated on those
levels, and its projection onto an H100 pair up to c = 256.

    python -m eval.speculation_crossover eval/reports/speculation-crossover \\
        --measured eval/reports/speculate-under-load eval/reports/speculation-crossover/measured \\
        --dev eval/reports/gsm8k-train-frontier/records.jsonl

Writes ``report.md``, ``crossover.png`` and ``simulated.json`` into the folder. Each measured
folder is a load test's (``scripts/load_test.py --speculate always never auto``); where two
hold the same level and policy, the later folder's run counts. ``--repeats`` folders hold levels
run again: each is reported beside its first run and replayed by the simulator, whose costs are
fitted without it, and counts nowhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgl_specreason.eval.report.tables import fmt
from sgl_specreason.eval.sim.costs import alone_calls, cpu_costs, h100_costs
from sgl_specreason.eval.sim.project import crossover, project, replay_level
from sgl_specreason.eval.speculation_load import policy_of, read, step_costs
from sgl_specreason.meters import DECODE_MOMENTS
from sgl_specreason.speculation import BASE, SPECULATE
from sgl_specreason.store import read_records
from sgl_specreason.trace import BASE as BASE_ROLE
from sgl_specreason.trace import DRAFT

POLICIES = ("always", "never", "auto")
#: the rule of the dev-split records pooled with each fixed policy's (the local default)
DEV_MODES = {"always": "specreason-likelihood-numbers-9+base1", "never": "base"}
KEEP_UP = 0.95
CALIBRATED_WITHIN = 0.15
PROJECTED_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RNG_SEED = 0

Key = Tuple[int, str]  # (concurrency, policy)


def measured(folders: Sequence[Path]) -> Dict[Key, Tuple[dict, List[dict]]]:
    """The summary line and the problems of each closed-loop level and policy."""
    out = {}
    for folder in folders:
        lines, problems = read(folder)
        for line in lines:
            o = line["other"]
            if o["loop"] == "closed" and policy_of(line["backend"]) in POLICIES:
                out[(int(o["concurrency"]), policy_of(line["backend"]))] = (line, problems[o["run_id"]])
    return dict(sorted(out.items()))


def bootstrap(values: Sequence[float], stat=np.mean, n: int = 2000) -> Tuple[float, float]:
    """A 95 % percentile bootstrap interval of ``stat`` over ``values``."""
    rng = np.random.default_rng(RNG_SEED)
    a = np.asarray(values, float)
    draws = [stat(a[rng.integers(0, len(a), len(a))]) for _ in range(n)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def pooled_pass(runs: Dict[Key, Tuple[dict, List[dict]]], dev: Sequence[dict]) -> Dict[str, dict]:
    """Each fixed policy's pass@1 over every level and the dev-split records of the same rule
    (a fixed policy's accuracy does not depend on the load), with its bootstrap interval."""
    out = {}
    for policy in ("always", "never"):
        marks = [bool(r.get("correct")) for (c, p), (_, recs) in runs.items() if p == policy for r in recs]
        marks += [bool(r.get("correct")) for r in dev if r.get("mode") == DEV_MODES[policy]]
        lo, hi = bootstrap(marks) if marks else (None, None)
        out[policy] = {"pass_at_1": float(np.mean(marks)) if marks else None, "n": len(marks), "ci": (lo, hi)}
    return out


def throughput_interval(line: dict, records: Sequence[dict]) -> Tuple[float, float]:
    """problems/s of a closed loop with c clients goes as c / mean latency (Little's law): its
    interval is the measured figure scaled by the bootstrapped spread of the mean latency (so it
    holds the figure itself, ramp and drain included)."""
    walls = [r["wall_s"] for r in records if not r.get("error")]
    lo, hi = bootstrap(walls)
    got, mean = line["other"]["problems_per_s"], float(np.mean(walls))
    return got * mean / hi, got * mean / lo


def oracle_agreement(auto_records: Sequence[dict], others: Sequence[dict]) -> Optional[float]:
    """The share of auto's choices (probes and first steps aside) that are the cheaper choice by
    the costs the level measured: seconds per kept token of speculated and base-written steps
    (from auto's run where it took both, else from the level's other runs)."""
    costs = step_costs(auto_records)
    if costs["speculated"] is None or costs["base"] is None:
        both = step_costs([*auto_records, *others])
        costs = {k: costs[k] if costs[k] is not None else both[k] for k in costs}
    if costs["speculated"] is None or costs["base"] is None:
        return None
    cheaper = SPECULATE if costs["speculated"] <= costs["base"] else BASE
    choices = [s.get("choice") for r in auto_records for s in r["steps"] if s.get("choice") in (SPECULATE, BASE)]
    return sum(ch == cheaper for ch in choices) / len(choices) if choices else None


def loaded_counters(runs: Dict[Key, Tuple[dict, List[dict]]], extra: Optional[dict]) -> Dict[str, dict]:
    """SGLang's counters summed over the runs that recorded them (and ``extra`` readings)."""
    total = {role: dict.fromkeys(DECODE_MOMENTS, 0.0) for role in (DRAFT, BASE_ROLE)}
    sources = [line["other"].get("runtime_counters") or {} for line, _ in runs.values()] + [extra or {}]
    for counters in sources:
        for role, figures in counters.items():
            if figures and role in total:
                for name in DECODE_MOMENTS:
                    total[role][name] += figures.get(name, 0.0)
    return total


def simulate_measured(runs, counters) -> Tuple[dict, Dict[Key, dict]]:
    """The CPU costs fitted (``eval.sim.costs.cpu_costs``), and every measured level replayed."""
    alone = [call for (c, _), (_, recs) in runs.items() for call in alone_calls(recs, c)]
    loaded = [(line["other"].get("runtime_counters") or {}, recs) for (c, _), (line, recs) in runs.items() if c > 1]
    costs = cpu_costs(alone, counters, loaded)
    sims = {key: replay_level(costs, recs, key[0]) for key, (_, recs) in runs.items()}
    return costs, sims


def level_rows(runs, sims, passes) -> List[str]:
    rows = ["| c | policy | problems/s | steady window | drain s | sim / measured | correct answers/s "
            "| kept tok/s | latency p50 / p99 s | pass@1 here | speculated | busy draft / base "
            "| server CPU draft / base |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"]
    for (c, policy), (line, recs) in runs.items():
        o = line["other"]
        steady = o.get("steady") or {}
        sim = sims[(c, policy)]["problems_per_s"]
        # auto runs always's rule: its accuracy is always's, whatever share it speculated
        pooled = passes["always" if policy == "auto" else policy]["pass_at_1"]
        cpu = o.get("server_cpu_share") or {}
        busy = o.get("busy_share") or {}
        lat = o["problem_latency_s"]
        rows.append(
            f"| {c} | {policy} | {fmt(o['problems_per_s'], '.4f')} | {fmt(steady.get('problems_per_s'), '.4f')} "
            f"| {fmt(steady.get('drain_s'), '.0f')} | {fmt(sim / o['problems_per_s'] if sim else None, '.2f')} "
            f"| {fmt(o['problems_per_s'] * pooled, '.4f')} | {fmt(o['kept_tokens_per_s'], '.2f')} "
            f"| {fmt(lat['p50'], '.0f')} / {fmt(lat['p99'], '.0f')} | {fmt(100 * line['accuracy'], '.0f')} % "
            f"| {fmt(100 * o['speculated_share'] if o.get('speculated_share') is not None else None, '.0f')} % "
            f"| {fmt(100 * (busy.get(DRAFT) or 0), '.0f')} / {fmt(100 * (busy.get(BASE_ROLE) or 0), '.0f')} % "
            f"| {fmt(100 * sum((cpu.get(DRAFT) or {}).values()), '.0f')} / "
            f"{fmt(100 * sum((cpu.get(BASE_ROLE) or {}).values()), '.0f')} % |")
    return rows


def checks(runs, sims, passes) -> Tuple[List[str], Optional[int]]:
    """auto against the better fixed policy, the oracle agreement, the simulator's error, and
    the measured crossover (the first level at which never reaches always in problems/s)."""
    out, crossing = [], None
    levels = sorted({c for c, _ in runs})
    for c in levels:
        have = {p: runs[(c, p)] for p in POLICIES if (c, p) in runs}
        if "always" in have and "never" in have and crossing is None:
            if have["never"][0]["other"]["problems_per_s"] >= have["always"][0]["other"]["problems_per_s"]:
                crossing = c
        if len(have) == 3:
            out.append(f"- c={c}: {auto_check(have)}")
    errors = [abs(sims[k]["problems_per_s"] / runs[k][0]["other"]["problems_per_s"] - 1) for k in runs]
    worst = max(errors) if errors else None
    out.append(f"- simulator: worst error {fmt(100 * worst if worst is not None else None, '.0f')} % over "
               f"{len(errors)} measured levels and policies (target {100 * CALIBRATED_WITHIN:.0f} %); within "
               f"target at {sum(e <= CALIBRATED_WITHIN for e in errors)} of them")
    return out, crossing


def auto_check(have: Dict[str, Tuple[dict, List[dict]]]) -> str:
    """auto against the better fixed policy of one level (``have``: each policy's run, auto and
    at least one fixed policy), and how often its choices were the oracle's."""
    fixed = [p for p in ("always", "never") if p in have]
    better = max(fixed, key=lambda p: have[p][0]["other"]["problems_per_s"])
    ratio = have["auto"][0]["other"]["problems_per_s"] / have[better][0]["other"]["problems_per_s"]
    lo, hi = throughput_interval(*have[better])
    inside = lo <= have["auto"][0]["other"]["problems_per_s"] <= hi
    agree = oracle_agreement(have["auto"][1], [r for p in fixed for r in have[p][1]])
    return (f"auto / {better} = {ratio:.2f} in problems/s ({better}'s interval {lo:.4f}-{hi:.4f}): "
            f"{'met' if ratio >= KEEP_UP or inside else 'NOT met'}; auto's choices match the oracle's on "
            f"{fmt(100 * agree if agree is not None else None, '.0f')} % of its steps")


def repeat_section(runs, repeats, costs) -> List[str]:
    """Levels and policies run again: beside their first run, replayed on the costs fitted
    without them (the simulator's check on runs it never saw), and auto's check within the
    repeat, against the fixed policies run again beside it (a repeat may run on another machine
    or day, so it is compared only with itself)."""
    out = ["| c | policy | first run problems/s | repeat problems/s | repeat / first | repeat: simulated / measured |",
           "|---:|---|---:|---:|---:|---:|"]
    for (c, policy), (line, recs) in sorted(repeats.items()):
        got = line["other"]["problems_per_s"]
        first = runs[(c, policy)][0]["other"]["problems_per_s"] if (c, policy) in runs else None
        sim = replay_level(costs, recs, c)["problems_per_s"]
        out.append(f"| {c} | {policy} | {fmt(first, '.4f')} | {got:.4f} | "
                   f"{fmt(got / first if first else None, '.2f')} | {fmt(sim / got if got else None, '.2f')} |")
    out.append("")
    for c in sorted({c for c, _ in repeats}):
        have = {p: repeats[(c, p)] for p in POLICIES if (c, p) in repeats}
        if "auto" in have and len(have) > 1:
            out.append(f"- c={c}, the repeat ({', '.join(have)}): {auto_check(have)}")
    return out


def projection(runs, passes, base_tp: int) -> dict:
    pools = {p: [r for (c, q), (_, recs) in runs.items() if q == p for r in recs] for p in ("always", "never")}
    projected = project(h100_costs(base_tp), pools, PROJECTED_LEVELS)
    scale = {p: passes[p]["pass_at_1"] for p in ("always", "never")}
    scale["auto"] = scale["always"]
    return {"levels": projected, "crossover_problems": crossover(projected),
            "crossover_correct": crossover(projected, scale=scale), "pass_scale": scale}


def projection_rows(proj: dict, label: str) -> List[str]:
    rows = [f"| c | always | never | auto | auto speculated | auto = oracle | never / always "
            f"| correct/s never / always ({label}) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lv, scale = proj["levels"], proj["pass_scale"]
    for c in PROJECTED_LEVELS:
        a, n, u = (lv[p][c]["steady_problems_per_s"] for p in POLICIES)
        rows.append(f"| {c} | {fmt(a, '.2f')} | {fmt(n, '.2f')} | {fmt(u, '.2f')} "
                    f"| {fmt(100 * (lv['auto'][c]['speculated_share'] or 0), '.0f')} % "
                    f"| {fmt(100 * lv['auto'][c]['oracle_agreement'] if lv['auto'][c]['oracle_agreement'] is not None else None, '.0f')} % "
                    f"| {fmt(n / a if a else None, '.2f')} "
                    f"| {fmt(n * scale['never'] / (a * scale['always']) if a else None, '.2f')} |")
    return rows


def plot(runs, sims, passes, projections: Dict[int, dict], path: Path) -> None:
    """problems/s and correct answers/s against concurrency: measured and simulated on the CPU
    pair (left), projected on the H100 pair (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, gpu_ax, right_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for policy, color in zip(POLICIES, ("C0", "C1", "C2")):
        levels = sorted(c for c, p in runs if p == policy)
        if not levels:
            continue
        pace = [runs[(c, policy)][0]["other"]["problems_per_s"] for c in levels]
        scale = (passes.get(policy) or passes["always"])["pass_at_1"] if policy != "never" else passes["never"]["pass_at_1"]
        cpu_ax.plot(levels, pace, "o-", color=color, label=f"{policy} problems/s")
        cpu_ax.plot(levels, [x * scale for x in pace], "s:", color=color, label=f"{policy} correct/s")
        cpu_ax.plot(levels, [sims[(c, policy)]["problems_per_s"] for c in levels], "x--", color=color, alpha=0.6,
                    label=f"{policy} simulated")
    for tp, style in sorted(projections.items()):
        lv, scale = projections[tp]["levels"], projections[tp]["pass_scale"]
        for policy, color in zip(POLICIES, ("C0", "C1", "C2")):
            ys = [lv[policy][c]["steady_problems_per_s"] for c in PROJECTED_LEVELS]
            gpu_ax.plot(PROJECTED_LEVELS, ys, "o-" if tp == 2 else "o:", color=color, label=f"{policy}, base TP={tp}")
            right_ax.plot(PROJECTED_LEVELS, [y * scale[policy] for y in ys], "s-" if tp == 2 else "s:", color=color,
                          label=f"{policy}, base TP={tp}")
    for ax, title in ((cpu_ax, "CPU pair: measured (o), correct answers (s), simulated (x)"),
                      (gpu_ax, "H100 pair, projected: problems/s"),
                      (right_ax, "H100 pair, projected: correct answers/s (pooled pass@1)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("problems at once (closed loop)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    cpu_ax.set_ylabel("per second")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(folder: Path, measured_dirs: Sequence[Path], dev_path: Optional[Path],
           counters_path: Optional[Path], repeat_dirs: Sequence[Path] = ()) -> str:
    runs = measured(measured_dirs)
    repeats = measured(repeat_dirs)
    dev = list(read_records(dev_path, require="mode")) if dev_path and dev_path.exists() else []
    extra = json.loads(counters_path.read_text()) if counters_path and counters_path.exists() else None
    passes = pooled_pass(runs, dev)
    costs, sims = simulate_measured(runs, loaded_counters(runs, extra))
    check_lines, crossing = checks(runs, sims, passes)
    projections = {tp: projection(runs, passes, tp) for tp in (2, 1)}
    out = ["# Speculation crossover: measured, simulated, projected", "",
           "## Measured on the CPU pair (closed loop, GSM8K train)", "", *level_rows(runs, sims, passes), "",
           "correct answers/s = problems/s x the policy's pooled pass@1 (auto: always's, the rule it runs). "
           "Pooled pass@1, every level and the dev-split records of the same rule:", ""]
    for policy, p in passes.items():
        out.append(f"- {policy}: {fmt(100 * p['pass_at_1'], '.1f')} % of {p['n']} "
                   f"(95 % bootstrap {fmt(100 * p['ci'][0], '.1f')}-{fmt(100 * p['ci'][1], '.1f')} %)")
    out += ["", "## Checks", "", *check_lines,
            f"- measured crossover (never reaches always in problems/s): "
            f"{'c=' + str(crossing) if crossing else 'none up to c=' + str(max(c for c, _ in runs))}", "",
            "## Simulator costs fitted on the CPU (seconds)", ""]
    for role, c in costs.items():
        out.append(f"- {role}: decode step {c.decode_fixed:.3f} + {c.decode_per_seq:.4f} x batch + "
                   f"{1e6 * c.decode_per_ctx:.1f}e-6 x context tokens of the batch, x {1 + c.contention:.2f} unless "
                   f"it runs alone (one request, the other runtime idle); prefill {c.prefill_fixed:.3f} + "
                   f"{c.prefill_per_token:.4f} x new tokens + {c.prefill_per_ctx:.4f} x prompt tokens, "
                   f"x {c.slowdown(prefill=True):.2f} unless it runs alone")
    if repeats:
        out += ["", "## Repeated runs (not in the tables above, nor in the fitted costs)", "",
                *repeat_section(runs, repeats, costs)]
    for tp in (2, 1):
        proj = projections[tp]
        out += ["", f"## Projected: R1-Distill-Qwen-1.5B -> QwQ-32B on H100s, base TP={tp} (a simulation)", "",
                *projection_rows(proj, f"TP={tp}"), "",
                f"- never overtakes always in problems/s at: {fmt(proj['crossover_problems'], 'd')}; "
                f"in correct answers/s at: {fmt(proj['crossover_correct'], 'd')} (- : not up to c=256)"]
    (folder / "simulated.json").write_text(json.dumps(
        {"cpu_costs": {r: c.__dict__ for r, c in costs.items()},
         "cpu_levels": {f"{c}/{p}": v for (c, p), v in sims.items()},
         "projections": {str(tp): {"crossover_problems": pr["crossover_problems"],
                                   "crossover_correct": pr["crossover_correct"],
                                   "levels": {p: {str(c): v for c, v in lv.items()} for p, lv in pr["levels"].items()}}
                         for tp, pr in projections.items()}}, indent=1, default=float) + "\n")
    plot(runs, sims, passes, projections, folder / "crossover.png")
    text = "\n".join(out) + "\n"
    (folder / "report.md").write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.speculation_crossover", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where report.md, crossover.png and simulated.json go")
    parser.add_argument("--measured", type=Path, nargs="+", required=True, help="load-test folders")
    parser.add_argument("--dev", type=Path, help="evaluation records of the dev split, pooled into pass@1")
    parser.add_argument("--counters", type=Path,
                        help="SGLang counters by role (JSON) of loaded runs that did not record their own")
    parser.add_argument("--repeats", type=Path, nargs="+", default=[],
                        help="load-test folders of levels run again: reported beside their first run")
    args = parser.parse_args(argv)
    for path in [*args.measured, *args.repeats]:
        if not (path / "load_test.jsonl").exists():
            print(f"error: {path} has no load_test.jsonl (a load test's --out-dir)", file=sys.stderr)
            return 2
    args.folder.mkdir(parents=True, exist_ok=True)
    print(report(args.folder, args.measured, args.dev, args.counters, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
