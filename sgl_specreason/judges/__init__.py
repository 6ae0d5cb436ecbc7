"""The judges: how a drafted step is scored, one object each, in one registry.

A judge has a name (what ``--score-method`` takes), a line of help, what it asks of the base
runtime (``asks``) and how it turns what came back into one score per draft (0..10, higher is
better; the loop keeps the best draft when it reaches the threshold). The loop builds the
request from ``asks`` alone:

- ``QUESTION``: the paper's question after the step; one token, its top log-probabilities;
- ``STEP``: one prefill of the step itself; its tokens' own log-probabilities;
- ``NOTHING``: the base runtime is asked nothing (the drafts are scored among themselves).

Each family of judges is one module in this folder, with its arithmetic: ``paper`` (greedy,
average), ``likelihood``, ``llr``, ``agreement``, ``random_control``. What they are made of
(``Judge``, ``Candidates``, ``JudgeScore``, the registry) is in ``base``. A new judge is one
module in this folder that imports from ``sgl_specreason.judges.base`` and calls ``register``
(it is found and imported with the others; the loop and both benchmarks ask it through the
registry) and a test. ::

    from sgl_specreason.judges.base import NOTHING, Judge, JudgeScore, register

    register(Judge("shortest", "10 for the shortest draft, 0 for the others", NOTHING,
                   lambda c: [JudgeScore(10.0 * (len(t) == min(map(len, c.texts))), "")
                              for t in c.texts], min_drafts=2))
"""

from __future__ import annotations

import importlib
import pkgutil

from sgl_specreason.judges.base import (
    JUDGES,
    NOTHING,
    QUESTION,
    STEP,
    Candidates,
    Judge,
    JudgeScore,
    get_judge,
    judges_asking,
    register,
)

__all__ = ["JUDGES", "NOTHING", "QUESTION", "STEP", "SCORE_METHODS", "Candidates", "Judge",
           "JudgeScore", "get_judge", "judges_asking", "register"]

# The built-in judges in the order they are listed, then any other module in this folder.
_BUILTIN = ("paper", "likelihood", "llr", "agreement", "random_control")
_NOT_JUDGES = ("base",)
for _name in _BUILTIN + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                     if m.name not in _BUILTIN + _NOT_JUDGES)):
    importlib.import_module(f"{__name__}.{_name}")

#: every judge's name
SCORE_METHODS = tuple(JUDGES)
