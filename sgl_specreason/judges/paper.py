"""The paper's judge: the base model is asked for a 0-9 score of the step and answers one token;
*greedy* takes that token, *average* the expected digit under its top-k distribution."""

from __future__ import annotations

import math  # noqa: F401 (the doctests use it)
from typing import Dict, Iterable, Sequence, Tuple

from sgl_specreason.judges.base import QUESTION, Judge, JudgeScore, register

#: the judges of this family: both read the same reply
METHODS = ("greedy", "average")


def _digit(text: str):
    """A single decimal digit token ('7', ' 7'), else None."""
    stripped = text.strip()
    if len(stripped) == 1 and stripped in "0123456789":
        return int(stripped)
    return None


def digit_distribution(top_logprobs: Iterable[Tuple[float, str]]) -> Dict[int, float]:
    """Probabilities of the digit entries of a top-k list, renormalised to sum to 1.

    Entries that are not a single digit are dropped; two entries for the same digit (such as
    '7' and ' 7') are added. No digit at all gives an empty dict.

    >>> dist = digit_distribution([(math.log(0.6), "9"), (math.log(0.2), "x"), (math.log(0.2), "8")])
    >>> {d: round(p, 6) for d, p in dist.items()}
    {9: 0.75, 8: 0.25}
    """
    probs: Dict[int, float] = {}
    for logprob, text in top_logprobs:
        d = _digit(text)
        if d is None or logprob is None:
            continue
        probs[d] = probs.get(d, 0.0) + math.exp(logprob)
    total = sum(probs.values())
    if total <= 0:
        return {}
    return {d: p / total for d, p in probs.items()}


def score_step(token: str, top_logprobs: Sequence[Tuple[float, str]], method: str) -> JudgeScore:
    """Score of the judged step.

    ``greedy``: the produced token if it is a digit, else 0.
    ``average``: the expected digit under ``digit_distribution`` (0 when no digit is listed).

    >>> score_step("8", [(-0.1, "8"), (-2.5, "9")], "greedy").value
    8
    >>> round(score_step("8", [(math.log(0.5), "8"), (math.log(0.5), "9")], "average").value, 3)
    8.5
    """
    digits = digit_distribution(top_logprobs)
    if method == "greedy":
        d = _digit(token)
        value = 0 if d is None else d
    elif method == "average":
        value = sum(d * p for d, p in digits.items())
    else:
        raise ValueError(f"score method must be 'greedy' or 'average', got {method!r}")
    return JudgeScore(value=value, token=token, digits=digits)


def score_from_meta(meta_info: dict, method: str) -> JudgeScore:
    """Score from an SGLang ``meta_info`` of a one-token gen with ``return_logprob=True``,
    ``top_logprobs_num=k`` and ``return_text_in_logprobs=True``; its ``signals`` hold both
    methods' scores."""
    try:
        produced = meta_info["output_token_logprobs"][0]
        top = meta_info["output_top_logprobs"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(
            "the judge's reply carries no output logprobs; was it asked with return_logprob=True, "
            "top_logprobs_num>0 and return_text_in_logprobs=True?"
        ) from e
    token = produced[2] if produced[2] is not None else ""
    entries = [(entry[0], entry[2] or "") for entry in top]
    scores = {m: score_step(token, entries, m) for m in METHODS}
    score = scores[method] if method in scores else score_step(token, entries, method)  # raises
    return JudgeScore(score.value, score.token, score.digits,
                      {m: float(s.value) for m, s in scores.items()})


def _paper(method):
    return lambda c: [score_from_meta(v, method) for v in c.verdicts]


register(Judge("greedy", "the judge's digit (the paper's question)", QUESTION, _paper("greedy")))
register(Judge("average", "the expected digit over the judge's top-k (the paper's question)",
               QUESTION, _paper("average")))
