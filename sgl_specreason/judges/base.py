"""What every judge is made of, and the registry they join; the judges themselves are the other
modules of this package (``sgl_specreason.judges`` imports them all), each with its arithmetic.

A judge module imports from here, never from the package itself (which is still being imported
while it imports the judge modules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from sgl_specreason.registry import Registry

#: what a judge asks the base runtime: the paper's question after the step (one token, its top
#: log-probabilities), one prefill of the step itself (its tokens' own log-probabilities), or
#: nothing (the drafts are scored among themselves)
QUESTION = "question"
STEP = "step"
NOTHING = "nothing"


@dataclass(frozen=True)
class JudgeScore:
    #: the score compared with the threshold: 0..9 for the paper's digit judges, 0..10 for the others
    value: float
    #: the token the judge produced (temperature 0)
    token: str
    #: probability of each digit among the top-k entries, renormalised over the digits
    digits: Dict[int, float] = field(default_factory=dict)
    #: every signal the reply carried, by judge name (the judges of one family read one reply)
    signals: Dict[str, float] = field(default_factory=dict)


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
