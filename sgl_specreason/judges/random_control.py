"""``random``: the control every rule must beat at its own acceptance rate. It keeps a step with
probability 1 - threshold / 10, whatever it says, the same steps on every rerun."""

from __future__ import annotations

import hashlib

from sgl_specreason.judges.base import NOTHING, Judge, JudgeScore, register


def random_score(*key) -> float:
    """``random``: a score uniform on [0, 10) that depends only on ``key`` (the problem, the
    step's index, the seed), so that a rerun keeps the same steps, and modes with two
    thresholds keep nested sets of steps.

    >>> random_score("q", 3) == random_score("q", 3), 0 <= random_score("q", 4) < 10
    (True, True)
    """
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return 10.0 * int.from_bytes(digest[:8], "big") / 2**64


def _random(c):
    return [JudgeScore(random_score(c.question, c.index, i, c.seed), "") for i in range(len(c.texts))]


register(Judge("random", "keeps 1 - threshold/10 of the steps (the control)", NOTHING, _random))
