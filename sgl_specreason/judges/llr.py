"""``llr``: the base model's log-prob of the step over the draft model's own (one prefill of the
step, as for the likelihood judges, and the draft's log-probs from its reply)."""

from sgl_specreason.judges import STEP, Judge, register
from sgl_specreason.scoring import (
    JudgeScore,
    draft_logprob_sum,
    log_ratio_score,
    step_token_logprobs,
)


def _llr(c):
    return [JudgeScore(log_ratio_score(step_token_logprobs(v, n), draft_logprob_sum(m)), "")
            for v, n, m in zip(c.verdicts, c.lengths, c.metas)]


register(Judge("llr", "5 + 5 x (base - draft log-prob per token)", STEP, _llr,
               needs_draft_logprobs=True))
