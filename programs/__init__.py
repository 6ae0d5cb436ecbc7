"""SpecReason as SGLang frontend-language programs."""

from programs.specreason import (
    base_step,
    draft_steps,
    final_answer,
    judge_steps,
    reason,
    specreason,
)

__all__ = ["draft_steps", "judge_steps", "base_step", "final_answer", "specreason", "reason"]
