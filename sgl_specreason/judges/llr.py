"""``llr``: the base model's log-prob of the step over the draft model's own (one prefill of the
step, as for the likelihood judges, and the draft's log-probs from its reply)."""

from __future__ import annotations

from typing import Sequence, Tuple

from sgl_specreason.judges.base import STEP, Judge, JudgeScore, register
from sgl_specreason.judges.likelihood import step_token_logprobs


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


def draft_logprob_sum(meta_info: dict) -> float:
    """The draft model's log-prob of its own step, from a reply asked with ``return_logprob``."""
    entries = meta_info.get("output_token_logprobs")
    if entries is None:
        raise ValueError("the draft's reply carries no output logprobs; was it asked with "
                         "return_logprob=True?")
    return float(sum(e[0] for e in entries if e[0] is not None))


def _llr(c):
    return [JudgeScore(log_ratio_score(step_token_logprobs(v, n), draft_logprob_sum(m)), "")
            for v, n, m in zip(c.verdicts, c.lengths, c.metas)]


register(Judge("llr", "5 + 5 x (base - draft log-prob per token)", STEP, _llr,
               needs_draft_logprobs=True))
