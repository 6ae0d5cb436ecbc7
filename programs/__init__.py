"""SpecReason as SGLang frontend-language programs."""

from sgl_specreason.programs.specreason import continuation, one_gen, reason, specreason, steps_for
from sgl_specreason.programs.steps import Context, Steps
from sgl_specreason.programs.subprograms import (
    base_step,
    constrained_gen,
    draft_steps,
    final_answer,
    judge_steps,
)

__all__ = ["draft_steps", "judge_steps", "base_step", "final_answer", "specreason", "reason",
           "continuation", "constrained_gen", "one_gen", "steps_for", "Context", "Steps"]
