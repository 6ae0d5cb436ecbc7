"""When reasoning stops, and the one edge case a kept step is cleaned of."""

from __future__ import annotations

from typing import Optional, Sequence

from sgl_specreason.templates import THINK_CLOSE

ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")

FINISHED = "finished"
REPEATED = "repeated"
BUDGET = "budget"


def has_answer(step: str) -> bool:
    """A step that states the final answer ends the reasoning."""
    return any(marker in step for marker in ANSWER_MARKERS)


def clean_step(step: str) -> str:
    """Drop a stray ``</think>`` from a step that gives no answer: the reasoning goes on, and a
    closed thinking block would hide the earlier steps from some chat formats."""
    if THINK_CLOSE in step and not has_answer(step):
        return step.replace(THINK_CLOSE, "")
    return step


def stop_reason(steps: Sequence[str], kept_tokens: int, token_budget: int) -> Optional[str]:
    """Why reasoning stops after the last kept step, or None to go on.

    An answer wins over the budget (the problem was answered); two identical steps in a row
    mean the model is looping.

    >>> stop_reason(["a", "so \\\\boxed{3}"], 10, 100)
    'finished'
    >>> stop_reason(["a", "a"], 10, 100)
    'repeated'
    >>> stop_reason(["a", "b"], 100, 100)
    'budget'
    >>> stop_reason(["a", "b"], 99, 100) is None
    True
    """
    if steps and has_answer(steps[-1]):
        return FINISHED
    if len(steps) >= 2 and steps[-1] == steps[-2]:
        return REPEATED
    if kept_tokens >= token_budget:
        return BUDGET
    return None
