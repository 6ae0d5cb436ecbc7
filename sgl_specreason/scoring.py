"""The arithmetic of scoring a drafted step (0..10, higher is better); the judges that use it,
and what each asks of the base runtime, are in ``sgl_specreason.judges``.

Two kinds of signal, both from one prefill of the new step on the base runtime:

- the paper's judge: the base model is asked for a 0-9 score and answers one token; *greedy*
  takes that token, *average* the expected digit under its top-k distribution;
- the likelihood judge: the base model's own log-probabilities of the drafted step's tokens
  (``input_token_logprobs``), as ``10 + log-prob`` (nats, clipped to 0..10) of the mean over
  the whole step (*likelihood*), of its worst window of a few tokens (*likelihood-min*), or of
  its worst token that holds a digit (*likelihood-numbers*: arithmetic slips live in numbers).
  A threshold of 6 then reads "log-prob at least -4", i.e. probability at least 1.8 %.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

#: the signals of the two kinds of reply (the judges that read them: ``sgl_specreason.judges``)
PAPER_METHODS = ("greedy", "average")
LIKELIHOOD_METHODS = ("likelihood", "likelihood-min", "likelihood-numbers")


@dataclass(frozen=True)
class JudgeScore:
    #: the score compared with the threshold: 0..9 for the paper's digit judges, 0..10 for the others
    value: float
    #: the token the judge produced (temperature 0)
    token: str
    #: probability of each digit among the top-k entries, renormalised over the digits
    digits: Dict[int, float] = field(default_factory=dict)
    #: every signal the reply carried, by method name (the paper's or the likelihood ones)
    signals: Dict[str, float] = field(default_factory=dict)


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
    ``top_logprobs_num=k`` and ``return_text_in_logprobs=True``."""
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
    scores = {m: score_step(token, entries, m) for m in PAPER_METHODS}
    score = scores[method] if method in scores else score_step(token, entries, method)  # raises
    return JudgeScore(score.value, score.token, score.digits,
                      {m: float(s.value) for m, s in scores.items()})


#: tokens in the window of ``likelihood-min``
WINDOW = 3


def _scaled(logprob: float) -> float:
    """A log-prob (nats) as a 0..10 score: ``10 + logprob``, clipped."""
    return min(10.0, max(0.0, 10.0 + logprob))


def likelihood_signals(entries: Sequence[Tuple[float, str]], window: int = WINDOW) -> Dict[str, float]:
    """Scores of a step from its tokens' ``(log-prob, text)``.

    >>> lp = [(math.log(0.9), "He"), (math.log(0.9), " pays"), (math.log(0.9), " 1"),
    ...       (math.log(0.01), "7"), (math.log(0.9), ".")]
    >>> {k: round(v, 2) for k, v in likelihood_signals(lp, window=2).items()}
    {'likelihood': 8.99, 'likelihood-min': 7.64, 'likelihood-numbers': 5.39}
    """
    lps = [lp for lp, _ in entries]
    if not lps:  # an empty step: nothing worth keeping
        return {method: 0.0 for method in LIKELIHOOD_METHODS}
    width = min(window, len(lps))
    worst = min(sum(lps[i:i + width]) / width for i in range(len(lps) - width + 1))
    digits = [lp for lp, text in entries if any(ch.isdigit() for ch in text)]
    return {
        "likelihood": _scaled(sum(lps) / len(lps)),
        "likelihood-min": _scaled(worst),
        # a step without numbers has nothing to check there: its worst window stands in
        "likelihood-numbers": _scaled(min(digits)) if digits else _scaled(worst),
    }


def step_token_logprobs(meta_info: dict, count: int) -> List[Tuple[float, str]]:
    """The first ``count`` scored prompt tokens of a reply asked with ``logprob_start_len`` one
    token before the step (SGLang gives no log-prob for the first position it reports)."""
    entries = meta_info.get("input_token_logprobs")
    if not entries:
        raise ValueError("the judge's reply carries no input logprobs; was it asked with "
                         "return_logprob=True and logprob_start_len >= 0?")
    return [(e[0], e[2] or "") for e in entries[1:1 + count] if e[0] is not None]


def score_reply(meta_info: dict, method: str, step_tokens: Optional[int] = None) -> JudgeScore:
    """The score of ``method`` from a judge reply; ``step_tokens`` (the drafted step's length in
    base-model tokens) is needed for the likelihood methods."""
    if method in PAPER_METHODS:
        return score_from_meta(meta_info, method)
    if method not in LIKELIHOOD_METHODS:
        raise ValueError(f"unknown score method {method!r}")
    if step_tokens is None:
        raise ValueError(f"score method {method!r} needs the step's token count")
    signals = likelihood_signals(step_token_logprobs(meta_info, step_tokens))
    produced = (meta_info.get("output_token_logprobs") or [[None, None, ""]])[0]
    return JudgeScore(value=signals.get(method, 0.0), token=produced[2] or "", signals=signals)




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


def log_ratio_score(base: Sequence[Tuple[float, str]], draft_sum: float) -> float:
    """``llr``: 5 + 5 x (the base model's log-prob of the step - the draft model's), per base
    token, clipped to 0..10. 5 reads "the base model finds the step as likely as the draft
    model did"; sums, not per-token means, so that the two tokenizers may differ.

    >>> log_ratio_score([(-0.5, "a"), (-0.5, "b")], -2.0)
    7.5
    """
    if not base:
        return 0.0
    ratio = (sum(lp for lp, _ in base) - draft_sum) / len(base)
    return min(10.0, max(0.0, 5.0 + 5.0 * ratio))


def random_score(*key) -> float:
    """``random``: a score uniform on [0, 10) that depends only on ``key`` (the problem, the
    step's index, the seed), so that a rerun keeps the same steps, and modes with two
    thresholds keep nested sets of steps.

    >>> random_score("q", 3) == random_score("q", 3), 0 <= random_score("q", 4) < 10
    (True, True)
    """
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return 10.0 * int.from_bytes(digest[:8], "big") / 2**64


def draft_logprob_sum(meta_info: dict) -> float:
    """The draft model's log-prob of its own step, from a reply asked with ``return_logprob``."""
    entries = meta_info.get("output_token_logprobs")
    if entries is None:
        raise ValueError("the draft's reply carries no output logprobs; was it asked with "
                         "return_logprob=True?")
    return float(sum(e[0] for e in entries if e[0] is not None))
