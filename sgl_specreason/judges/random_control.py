"""``random``: the control every rule must beat at its own acceptance rate. It keeps a step with
probability 1 - threshold / 10, whatever it says, the same steps on every rerun."""

from sgl_specreason.judges import NOTHING, Judge, register
from sgl_specreason.scoring import JudgeScore, random_score


def _random(c):
    return [JudgeScore(random_score(c.question, c.index, i, c.seed), "") for i in range(len(c.texts))]


register(Judge("random", "keeps 1 - threshold/10 of the steps (the control)", NOTHING, _random))
