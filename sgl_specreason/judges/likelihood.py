"""Likelihood judges: 10 + the base model's own log-prob (nats) of the step's tokens, read from
one prefill of the step (no question)."""

from sgl_specreason.judges import STEP, Judge, register
from sgl_specreason.scoring import score_reply


def _likelihood(method):
    return lambda c: [score_reply(v, method, n) for v, n in zip(c.verdicts, c.lengths)]


register(Judge("likelihood", "10 + the base model's mean log-prob of the step's tokens", STEP,
               _likelihood("likelihood")))
register(Judge("likelihood-min", "10 + its worst 3-token window's", STEP, _likelihood("likelihood-min")))
register(Judge("likelihood-numbers", "10 + its worst number token's", STEP,
               _likelihood("likelihood-numbers")))
