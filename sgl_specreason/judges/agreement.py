"""Agreement of forked drafts: a draft scores 10 x the share of the other drafts that end on the
same number (``agreement``) or write the same numbers (``agreement-set``); no base call."""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

from sgl_specreason.judges.base import NOTHING, Judge, JudgeScore, register

#: a number as written in a step: 1,250 / 3.5 / 18 (a leading minus sign is an operator as
#: often as a sign, so it is left out)
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
#: a list item's number at the start of a line ("2. ", "3) "): a label, not a quantity
_LIST_MARK = re.compile(r"(?m)^[ \t>*#-]*\d+[.)](?=\s)")


def step_numbers(text: str) -> Tuple[float, ...]:
    """The values of the numbers a step writes, in order (thousands commas dropped, a trailing
    ``.0`` ignored).

    >>> step_numbers("So 3 + 4 = 7 eggs, and $1,250.50 / 2.0")
    (3.0, 4.0, 7.0, 1250.5, 2.0)
    >>> step_numbers("1. She sold 48.\\n2. **In May:** 48 / 2 = 24.")
    (48.0, 48.0, 2.0, 24.0)
    """
    out = []
    for match in _NUMBER.finditer(_LIST_MARK.sub("", text)):
        try:
            out.append(round(float(match.group().rstrip(",").replace(",", "")), 6))
        except ValueError:
            continue
    return tuple(out)


#: what two drafts must share to agree: ``last``: the last number each writes (the step's
#: result); ``set``: the set of numbers each writes
AGREEMENT_KEYS = ("last", "set")


def agreement_key(text: str, key: str = "last"):
    """What a draft is compared on (None: a step without numbers; two such steps agree).

    >>> agreement_key("16 - 3 - 4 = 9 eggs", "last"), agreement_key("9 = 16 - 7", "set")
    (9.0, frozenset({16.0, 9.0, 7.0}))
    """
    numbers = step_numbers(text)
    if key == "last":
        return numbers[-1] if numbers else None
    if key == "set":
        return frozenset(numbers)
    raise ValueError(f"agreement key must be one of {', '.join(AGREEMENT_KEYS)}, got {key!r}")


def agreement_scores(texts: Sequence[str], key: str = "last") -> List[float]:
    """Per draft, 10 x the share of the *other* drafts that agree with it (one draft alone: 0,
    nothing to agree with).

    >>> agreement_scores(["so 7", "= 7", "it is 8"])
    [5.0, 5.0, 0.0]
    """
    keys = [agreement_key(t, key) for t in texts]
    if len(keys) < 2:
        return [0.0] * len(keys)
    return [10.0 * sum(k == other for j, other in enumerate(keys) if j != i) / (len(keys) - 1)
            for i, k in enumerate(keys)]


def _agreement(key):
    return lambda c: [JudgeScore(v, "") for v in agreement_scores(c.texts, key)]


register(Judge("agreement", "10 x the share of the other drafts ending on the same number "
                            "(needs --num-drafts >= 2, no base call)", NOTHING, _agreement("last"),
               min_drafts=2))
register(Judge("agreement-set", "... writing the same numbers", NOTHING, _agreement("set"),
               min_drafts=2))
