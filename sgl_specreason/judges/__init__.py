"""The judges: how a drafted step is scored, one object each, in one registry.

A judge has a name (what ``--score-method`` takes), a line of help, what it asks of the base
runtime (``asks``) and how it turns what came back into one score per draft (0..10, higher is
better; the loop keeps the best draft when it reaches the threshold). The loop builds the
request from ``asks`` alone:

- ``QUESTION``: the paper's question after the step; one token, its top log-probabilities;
- ``STEP``: one prefill of the step itself; its tokens' own log-probabilities;
- ``NOTHING``: the base runtime is asked nothing (the drafts are scored among themselves).

A new judge is one module in this folder that calls ``register`` (it is found and imported with
the others) and a test. ::

    register(Judge("shortest", "10 for the shortest draft, 0 for the others", NOTHING,
                   lambda c: [JudgeScore(10.0 * (len(t) == min(map(len, c.texts))), "")
                              for t in c.texts]))
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from sgl_specreason.registry import Registry
from sgl_specreason.scoring import JudgeScore

QUESTION = "question"
STEP = "step"
NOTHING = "nothing"


@dataclass(frozen=True)
class Candidates:
    """What a judge reads: the drafts of one step and the base runtime's replies on them."""

    question: str
    index: int  # the step's index in the problem
    seed: Optional[int]  # the config's seed
    texts: Sequence[str]  # the drafts, tidied as they would be kept
    metas: Sequence[dict]  # each draft's ``meta_info``
    #: the base runtime's reply on each draft (none when the judge asks ``NOTHING``)
    verdicts: Sequence[dict] = ()
    #: each draft's length in base-model tokens (judges that ask ``STEP``)
    lengths: Sequence[Optional[int]] = ()


@dataclass(frozen=True)
class Judge:
    name: str
    help: str
    asks: str  # QUESTION, STEP or NOTHING
    score: Callable[[Candidates], List[JudgeScore]]  # one score per draft
    #: the drafts must come with their own log-probabilities
    needs_draft_logprobs: bool = False
    #: drafts per step it needs to work at all
    min_drafts: int = 1

    def __post_init__(self):
        if self.asks not in (QUESTION, STEP, NOTHING):
            raise ValueError(f"judge {self.name}: asks must be {QUESTION!r}, {STEP!r} or "
                             f"{NOTHING!r}, got {self.asks!r}")


#: every judge by name, in the order the help and reports list them
JUDGES: Registry[Judge] = Registry("judge")
#: add a judge (a second one of the same name is refused)
register = JUDGES.add
#: the judge of a name, or an error listing the known ones
get_judge = JUDGES.find


def judges_asking(*asks: str) -> List[str]:
    """Names of the judges that ask the base runtime one of ``asks``."""
    return [name for name, judge in JUDGES.items() if judge.asks in asks]


# The built-in judges in the order they are listed, then any other module in this folder.
_BUILTIN = ("paper", "likelihood", "llr", "agreement", "random_control")
for _name in _BUILTIN + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                     if m.name not in _BUILTIN)):
    importlib.import_module(f"{__name__}.{_name}")

#: every judge's name
SCORE_METHODS = tuple(JUDGES)
