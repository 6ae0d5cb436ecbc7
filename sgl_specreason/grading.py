"""Grading a model's solution against a reference answer: the one grader, used when a problem is
recorded (``calls.recording``), so batch, eval and every other command give the same verdict on
the same text.

Three kinds of reference: a GSM8K-style number (commas, units, a trailing period), a
multiple-choice letter, and a math expression compared through ``math-verify`` (symbolic
equivalence). math-verify's own timeouts use ``signal.alarm``, which only works in the main
thread; the runner grades in worker threads, so they are switched off here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from sgl_specreason.answers import extract_answer, is_correct, last_boxed

NUMBER = "number"
CHOICE = "choice"
MATH = "math"
KINDS = (NUMBER, CHOICE, MATH)

_LETTER = re.compile(r"\b([A-J])\b")


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: Optional[str]  # the answer read out of the solution (None: none found)


def extract_letter(text: str) -> Optional[str]:
    """The chosen letter: the boxed one, else the one after the last ``Answer:``."""
    answer = extract_answer(text)
    if answer is None:
        return None
    cleaned = answer.replace("\\text{", "").replace("}", "").replace("(", " ").replace(")", " ")
    match = _LETTER.search(cleaned.upper() if len(cleaned.strip()) == 1 else cleaned)
    return match.group(1) if match else None


def _math_equal(answer: str, reference: str) -> bool:
    from math_verify import parse, verify

    def parsed(text):
        boxed = text if "\\boxed" in text else f"\\boxed{{{text}}}"
        return parse(boxed, parsing_timeout=None)

    try:
        gold, pred = parsed(reference), parsed(answer)
        if not gold or not pred:
            return False
        return bool(verify(gold, pred, timeout_seconds=None))
    except Exception:  # an expression sympy cannot handle is simply not a match
        return False


def kind_of(problem) -> str:
    """How a problem's answer is graded: its own ``kind`` where it has one (eval's data sets),
    else a letter for multiple choice and a math expression otherwise (which also takes every
    number the number grader takes)."""
    if problem.kind is not None:
        return problem.kind
    return CHOICE if problem.choices else MATH


def extract(solution: str, kind: str) -> Optional[str]:
    """The answer ``grade`` reads out of a solution: the chosen letter, or the final answer."""
    return extract_letter(solution) if kind == CHOICE else extract_answer(solution)


def grade(solution: str, reference: str, kind: str) -> Grade:
    """Grade ``solution`` (the whole text a model wrote) against ``reference``.

    >>> grade("so the total is \\\\boxed{1,200}.", "1200", "number").correct
    True
    >>> grade("\\\\boxed{\\\\frac{1}{2}}", "0.5", "math").correct
    True
    >>> grade("Answer: (C)", "C", "choice")
    Grade(correct=True, extracted='C')
    """
    if kind not in KINDS:
        raise ValueError(f"grading kind must be one of {', '.join(KINDS)}, got {kind!r}")
    answer = extract(solution, kind)
    if kind == CHOICE:
        return Grade(answer is not None and answer == reference.strip().upper()[:1], answer)
    if answer is None:
        return Grade(False, None)
    if kind == NUMBER:
        return Grade(is_correct(answer, reference), answer)
    if answer.replace(" ", "") == reference.replace(" ", ""):
        return Grade(True, answer)
    return Grade(_math_equal(answer, reference) or is_correct(answer, reference), answer)


__all__ = ["Grade", "grade", "extract", "extract_letter", "kind_of", "last_boxed", "KINDS", "NUMBER", "CHOICE",
           "MATH"]
