"""The report's files: report.jsonl (a row per line, then one line of the costs, acceptance per
step, projection and comparisons), report.md, and two plots (accuracy against speedup with the
random control as a line, acceptance per step)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from sgl_specreason.eval.report.control import control_rows, is_random
from sgl_specreason.trace import BASE


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
