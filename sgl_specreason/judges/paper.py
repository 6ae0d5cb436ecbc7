"""The paper's judge: the base model is asked for a 0-9 score of the step and answers one token."""

from sgl_specreason.judges import QUESTION, Judge, register
from sgl_specreason.scoring import score_reply


def _paper(method):
    return lambda c: [score_reply(v, method) for v in c.verdicts]


register(Judge("greedy", "the judge's digit (the paper's question)", QUESTION, _paper("greedy")))
register(Judge("average", "the expected digit over the judge's top-k (the paper's question)",
               QUESTION, _paper("average")))
