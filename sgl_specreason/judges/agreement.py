"""Agreement of forked drafts: a draft scores 10 x the share of the other drafts that end on the
same number (``agreement``) or write the same numbers (``agreement-set``); no base call."""

from sgl_specreason.judges import NOTHING, Judge, register
from sgl_specreason.scoring import JudgeScore, agreement_scores


def _agreement(key):
    return lambda c: [JudgeScore(v, "") for v in agreement_scores(c.texts, key)]


register(Judge("agreement", "10 x the share of the other drafts ending on the same number "
                            "(needs --num-drafts >= 2, no base call)", NOTHING, _agreement("last"),
               min_drafts=2))
register(Judge("agreement-set", "... writing the same numbers", NOTHING, _agreement("set"),
               min_drafts=2))
