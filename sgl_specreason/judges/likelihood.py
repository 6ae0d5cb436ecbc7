"""Likelihood judges: 10 + the base model's own log-prob (nats) of the step's tokens, read from
one prefill of the step (no question; ``input_token_logprobs``), clipped to 0..10: of the mean
over the whole step (*likelihood*), of its worst window of a few tokens (*likelihood-min*), or of
its worst token that holds a digit (*likelihood-numbers*: arithmetic slips live in numbers).
A threshold of 6 then reads "log-prob at least -4", i.e. probability at least 1.8 %."""

from __future__ import annotations

import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from sgl_specreason.judges.base import STEP, Judge, JudgeScore, register

#: the judges of this family: all three read the same reply
METHODS = ("likelihood", "likelihood-min", "likelihood-numbers")
#: tokens in the window of ``likelihood-min``
WINDOW = 3


def _scaled(logprob: float) -> float:
    """A log-prob (nats) as a 0..10 score: ``10 + logprob``, clipped."""
    return min(10.0, max(0.0, 10.0 + logprob))


def prefix_signals(entries: Sequence[Tuple[float, str]], window: int = WINDOW) -> Iterator[Dict[str, float]]:
    """The scores of each leading part of a step, from its tokens' ``(log-prob, text)``: of its
    first token, its first two, ..., the whole step last (one pass)."""
    total, worst, digits = 0.0, math.inf, math.inf
    lps: List[float] = []
    for k, (lp, text) in enumerate(entries, 1):
        lps.append(lp)
        total += lp
        if any(ch.isdigit() for ch in text):
            digits = min(digits, lp)
        if k >= window:
            worst = min(worst, sum(lps[k - window:]) / window)
        low = worst if k >= window else total / k  # shorter than a window: the part is its window
        yield {
            "likelihood": _scaled(total / k),
            "likelihood-min": _scaled(low),
            # a step without numbers has nothing to check there: its worst window stands in
            "likelihood-numbers": _scaled(digits) if digits < math.inf else _scaled(low),
        }


def likelihood_signals(entries: Sequence[Tuple[float, str]], window: int = WINDOW) -> Dict[str, float]:
    """Scores of a step from its tokens' ``(log-prob, text)``.

    >>> lp = [(math.log(0.9), "He"), (math.log(0.9), " pays"), (math.log(0.9), " 1"),
    ...       (math.log(0.01), "7"), (math.log(0.9), ".")]
    >>> {k: round(v, 2) for k, v in likelihood_signals(lp, window=2).items()}
    {'likelihood': 8.99, 'likelihood-min': 7.64, 'likelihood-numbers': 5.39}
    """
    last = {method: 0.0 for method in METHODS}  # an empty step: nothing worth keeping
    for last in prefix_signals(entries, window):
        pass
    return last


def passing_lead(entries: Sequence[Tuple[float, str]], method: str, threshold: float) -> int:
    """Of a step the judge ``method`` rejected, how many leading tokens it would keep as a step
    of their own: the longest such part that ends where a word ends (the next token starts with
    white space), so that the base model can write on from there. 0: none.

    >>> lp = [(-0.1, "The"), (-0.2, " sky"), (-0.1, " is"), (-9.0, " green"), (-0.1, ".")]
    >>> passing_lead(lp, "likelihood-min", 6.0)  # "The sky is"; " green" sinks its windows
    3
    >>> passing_lead([(-20.0, "Green")] + lp[1:], "likelihood-min", 6.0)  # wrong from the start
    0
    """
    lead = 0
    for k, signals in enumerate(prefix_signals(entries), 1):
        if k < len(entries) and entries[k][1][:1].isspace() and signals[method] >= threshold:
            lead = k
    return lead


def step_token_logprobs(meta_info: dict, count: int) -> List[Tuple[float, str]]:
    """The first ``count`` scored prompt tokens of a reply asked with ``logprob_start_len`` one
    token before the step (SGLang gives no log-prob for the first position it reports)."""
    entries = meta_info.get("input_token_logprobs")
    if not entries:
        raise ValueError("the judge's reply carries no input logprobs; was it asked with "
                         "return_logprob=True and logprob_start_len >= 0?")
    return [(e[0], e[2] or "") for e in entries[1:1 + count] if e[0] is not None]


def score_likelihood(meta_info: dict, method: str, step_tokens: Optional[int]) -> JudgeScore:
    """The score of one of this family's ``METHODS`` from the reply to a prefill of the step;
    ``step_tokens`` is the step's length in base-model tokens. Its ``signals`` hold all three."""
    if method not in METHODS:
        raise ValueError(f"unknown score method {method!r}; the likelihood ones are "
                         f"{', '.join(METHODS)}")
    if step_tokens is None:
        raise ValueError(f"score method {method!r} needs the step's token count")
    signals = likelihood_signals(step_token_logprobs(meta_info, step_tokens))
    produced = (meta_info.get("output_token_logprobs") or [[None, None, ""]])[0]
    return JudgeScore(value=signals[method], token=produced[2] or "", signals=signals)


def _likelihood(method):
    return lambda c: [score_likelihood(v, method, n) for v, n in zip(c.verdicts, c.lengths)]


register(Judge("likelihood", "10 + the base model's mean log-prob of the step's tokens", STEP,
               _likelihood("likelihood")))
register(Judge("likelihood-min", "10 + its worst 3-token window's", STEP, _likelihood("likelihood-min")))
register(Judge("likelihood-numbers", "10 + its worst number token's", STEP,
               _likelihood("likelihood-numbers")))
