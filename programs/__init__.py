"""SpecReason as SGLang frontend-language programs."""

from programs.specreason import (
    base_step,
    continuation,
    draft_steps,
    final_answer,
    judge_steps,
    one_gen,
    reason,
    specreason,
    speculated_steps,
)

__all__ = ["draft_steps", "judge_steps", "base_step", "final_answer", "specreason", "reason",
           "continuation", "one_gen", "speculated_steps"]
