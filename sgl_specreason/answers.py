"""Reading the final answer out of a solution and comparing it with a reference."""

from __future__ import annotations

import re
from typing import Optional

_ANSWER_MARK = re.compile(r"(?:Answer|ANSWER)\s*:")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched.

    >>> last_boxed(r"so \\boxed{\\frac{1}{2}} and")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed 5") 
    '5'
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len("\\boxed"):] if rest.startswith("\\boxed") else rest[len("\\fbox"):]
    if rest.startswith(" "):
        token = rest.strip().split()
        return token[0].rstrip(".$") if token else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i].strip()
    return None


def extract_answer(text: str) -> Optional[str]:
    """The final answer: last boxed expression, else the text after the last ``Answer:``."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    marks = list(_ANSWER_MARK.finditer(text))
    if not marks:
        return None
    # "**Final Answer:**\n- 42." -> "42": skip markdown emphasis, bullets and blank lines.
    rest = text[marks[-1].end():].lstrip("*_ \t\n-")
    line = rest.split("\n", 1)[0].strip().rstrip(".").strip("*_ ")
    return line or None


def gsm8k_reference(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution."""
    return solution.split("####")[-1].strip().replace(",", "")


def _as_number(text: str) -> Optional[float]:
    cleaned = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    cleaned = re.sub(r"\\text\{[^}]*\}", "", cleaned)
    numbers = _NUMBER.findall(cleaned)
    if len(numbers) != 1:
        return None
    try:
        return float(numbers[0].replace(",", ""))
    except ValueError:
        return None


def is_correct(answer: str, reference: str) -> bool:
    """Numeric equality when both are single numbers, else exact match after removing spaces: the
    number part of ``grading.grade``, which is what grades a solution.

    >>> is_correct("1,200", "1200")
    True
    >>> is_correct("\\\\$18.00", "18")
    True
    """
    a, r = _as_number(answer), _as_number(reference)
    if a is not None and r is not None:
        return abs(a - r) < 1e-6 * max(1.0, abs(r))
    return answer.replace(" ", "") == reference.replace(" ", "")
