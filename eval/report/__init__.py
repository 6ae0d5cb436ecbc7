"""The evaluation report: per data set and mode, accuracy, measured and analytic speed,
acceptance, judge scores, tokens and cache hits; JSONL, a Markdown table and PNG plots.

``python -m eval`` writes it at the end of a run; ``python -m eval.report RESULT_FILE`` writes it
again from the records alone (no runtime needed), e.g. with another ``--baseline``, or with
``--costs COSTS.json`` a projection of the same records' calls on other hardware (``eval.costs``):
a simulation, marked as such.

One concept per module:

- ``records``: which records count (the final record per key) and what is read off them
  (calls, kept tokens, merged totals, pass@1, acceptance per step);
- ``speed``: measured costs, analytic latency, what an analytic speedup is made of, projections;
- ``control``: the random control and each rule's pass@1 against it at the same acceptance;
- ``target``: each rule against the target, and the rule chosen per data set;
- ``tables``: the Markdown tables of the rows;
- ``build``: the report (rows, comparisons, Markdown) built from a result file;
- ``output``: its files (report.jsonl, report.md, two plots);
- ``command``: the command line (``main``).
"""

from sgl_specreason.eval.report.build import build_report
from sgl_specreason.eval.report.command import main
from sgl_specreason.eval.report.control import (
    against_random,
    against_random_markdown,
    control_rows,
    interpolate,
    is_random,
    random_line,
    same_problem_rows,
    shared_problems,
)
from sgl_specreason.eval.report.output import write_report
from sgl_specreason.eval.report.records import (
    acceptance_by_step,
    final_records,
    kept_tokens,
    mean,
    merged_totals,
    pass_at_1,
    record_calls,
    record_key,
)
from sgl_specreason.eval.report.speed import (
    analytic_latency,
    judge_seconds,
    per_token_costs,
    projected,
    speedup_limits,
)
from sgl_specreason.eval.report.tables import fmt, markdown, projection_markdown
from sgl_specreason.eval.report.target import TARGET_DROP, TARGET_SPEEDUP, against_target, against_target_markdown

__all__ = [
    "build_report", "main", "write_report",
    "against_random", "against_random_markdown", "control_rows", "interpolate", "is_random", "random_line",
    "same_problem_rows", "shared_problems",
    "acceptance_by_step", "final_records", "kept_tokens", "mean", "merged_totals", "pass_at_1",
    "record_calls", "record_key",
    "analytic_latency", "judge_seconds", "per_token_costs", "projected", "speedup_limits",
    "fmt", "markdown", "projection_markdown",
    "TARGET_DROP", "TARGET_SPEEDUP", "against_target", "against_target_markdown",
]
