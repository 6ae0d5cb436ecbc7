"""Recorded SpecReason problems replayed through the simulated runtimes, in a closed loop.

A problem's record lists its steps and, per step, every call it made (runtime, prompt tokens,
cached tokens, tokens generated). Replayed, each call becomes a request of the same shape:

- ``recorded``: each step as it ran (drafts, then judgements, then the base model's step if the
  draft was rejected or the step was the base model's): an ``always`` record replays ``always``,
  a ``never`` record ``never``;
- ``auto``: the policy decides each step with ``speculation.LiveCosts``, the class the programs
  use, fed with the simulated calls' wall time, busy share, loads and saturation. A step it
  speculates replays the recorded draft, judgement and rewrite; a step it gives to the base
  model becomes one base call of the tokens the step kept, on the prompt the judge had (an
  ``always`` record has no step the base model wrote in place of a kept draft: its length is
  taken as the kept draft's).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from sgl_specreason.speculation import BASE_RUNTIME, DRAFT_RUNTIME, PROBE_BASE, PROBE_SPECULATE, LiveCosts, speculates
from sgl_specreason.trace import BASE, DRAFT

from .engine import RuntimeCosts, Sim

RULE = ("replayed",)


@dataclass(frozen=True)
class CallSpec:
    runtime: str
    new_tokens: int
    context: int
    out_tokens: int


@dataclass
class StepSpec:
    drafts: List[CallSpec]
    judges: List[CallSpec]
    base: Optional[CallSpec]  # the base model's step (a rewrite, or a step it wrote)
    kept: bool  # a drafted step that was kept
    kept_tokens: int

    @property
    def speculated(self) -> bool:
        return bool(self.drafts)

    def as_base_call(self) -> CallSpec:
        """The base model writing this step itself (``auto`` choosing the base model)."""
        if self.base is not None:
            return self.base
        prompt = self.judges[0] if self.judges else self.drafts[0]
        return CallSpec(BASE, prompt.new_tokens, prompt.context, max(1, self.kept_tokens))


@dataclass
class ProblemSpec:
    id: str
    steps: List[StepSpec]
    answer: Optional[CallSpec] = None
    correct: Optional[bool] = None


def call_spec(call: dict) -> CallSpec:
    prompt = int(call.get("prompt_tokens") or 0)
    cached = int(call.get("cached_tokens") or 0)
    return CallSpec(call["role"], prompt - cached, prompt, int(call.get("completion_tokens") or 1))


def problem_spec(record: dict) -> ProblemSpec:
    """What a problem's record says it asked of each runtime, step by step."""
    steps = []
    for step in record["steps"]:
        calls = step.get("calls") or []
        drafts = [call_spec(c) for c in calls if c["role"] == DRAFT]
        judges = [call_spec(c) for c in calls if c["role"] == BASE and c.get("kind") == "judge"]
        bases = [call_spec(c) for c in calls if c["role"] == BASE and c.get("kind") != "judge"]
        steps.append(StepSpec(drafts, judges, bases[-1] if bases else None,
                              kept=bool(drafts) and step.get("source") == DRAFT,
                              kept_tokens=int(step.get("kept_tokens") or 0)))
    answer = record.get("answer_call")
    return ProblemSpec(record["id"], steps, call_spec(answer) if answer else None, record.get("correct"))


@dataclass
class Outcome:
    """One replayed problem: when it started and ended, and the steps each way."""

    id: str
    started: float
    ended: float
    speculated: int = 0
    base_written: int = 0


@dataclass
class Replay:
    """``clients`` closed-loop clients working through ``problems`` (in order, each taken once)
    under ``policy`` (``recorded`` or ``auto``)."""

    costs: Dict[str, RuntimeCosts]
    problems: Sequence[ProblemSpec]
    clients: int
    policy: str = "recorded"
    outcomes: List[Outcome] = field(default_factory=list)
    choices: List[str] = field(default_factory=list)
    #: auto's decisions: (draft load, base load, saturated runtimes, choice)
    decisions: List[tuple] = field(default_factory=list)
    #: every measurement fed to auto: (what, load, seconds, busy, tokens, kept)
    measured: List[tuple] = field(default_factory=list)

    def run(self) -> List[Outcome]:
        self.sim = Sim(self.costs)
        self.live = LiveCosts()
        self.todo = deque(self.problems)
        for _ in range(self.clients):
            self.next_problem()
        self.sim.run()
        return self.outcomes

    def next_problem(self) -> None:
        if not self.todo:
            return
        problem = self.todo.popleft()
        outcome = Outcome(problem.id, self.sim.now, self.sim.now)

        def finish() -> None:
            outcome.ended = self.sim.now
            self.outcomes.append(outcome)
            self.next_problem()

        self.steps(problem, 0, outcome, finish)

    def steps(self, problem: ProblemSpec, i: int, outcome: Outcome, finish: Callable[[], None]) -> None:
        if i == len(problem.steps):
            if problem.answer is None:
                finish()
            else:
                self.calls([problem.answer], lambda figures: finish())
            return
        self.step(problem.steps[i], outcome, lambda: self.steps(problem, i + 1, outcome, finish))

    # -- one step -------------------------------------------------------------------------------
    def step(self, step: StepSpec, outcome: Outcome, then: Callable[[], None]) -> None:
        speculate = step.speculated
        if self.policy == "auto" and step.speculated:
            rts = self.sim.runtimes
            saturated = frozenset(n for n, rt in rts.items() if rt.saturated())
            choice = self.live.choose("auto", RULE, rts[DRAFT].in_flight, rts[BASE].in_flight,
                                      saturated=saturated)
            self.choices.append(choice)
            self.decisions.append((rts[DRAFT].in_flight, rts[BASE].in_flight, saturated, choice))
            speculate = speculates(choice)
        if not speculate:
            outcome.base_written += 1
            self.base_writes(step.as_base_call(), then)
            return
        outcome.speculated += 1
        draft_load = self.sim.runtimes[DRAFT].in_flight

        def judged(figures) -> None:
            seconds, busy = max(f[0] for f in figures), sum(f[1] for f in figures)
            self.live.judged(base_load[0], seconds, RULE, step.kept, busy=busy)
            self.measured.append(("judged", base_load[0], seconds, busy, 0, step.kept))
            if step.kept or step.base is None:
                then()
            else:
                self.base_writes(step.base, then)

        def drafted(figures) -> None:
            seconds, busy = max(f[0] for f in figures), max(f[1] for f in figures)
            tokens = max(c.out_tokens for c in step.drafts)
            self.live.drafted(draft_load, seconds, tokens, busy=busy)
            self.measured.append(("drafted", draft_load, seconds, busy, tokens, None))
            base_load[0] = self.sim.runtimes[BASE].in_flight
            if step.judges:
                self.calls(step.judges, judged)
            else:
                judged([(0.0, 0.0)])

        base_load = [0]
        self.calls(step.drafts, drafted)

    def base_writes(self, call: CallSpec, then: Callable[[], None]) -> None:
        load = self.sim.runtimes[BASE].in_flight

        def wrote(figures) -> None:
            seconds, busy = figures[0]
            self.live.base_wrote(load, seconds, call.out_tokens, busy=busy)
            self.measured.append(("base_wrote", load, seconds, busy, call.out_tokens, None))
            then()

        self.calls([call], wrote)

    def calls(self, specs: Sequence[CallSpec], then: Callable[[list], None]) -> None:
        """Send ``specs`` at once; ``then`` gets each one's (seconds, busy) when all are back."""
        figures: list = [None] * len(specs)
        left = [len(specs)]

        def back(i: int, seconds: float, busy: float) -> None:
            figures[i] = (seconds, busy)
            left[0] -= 1
            if left[0] == 0:
                then(figures)

        for i, spec in enumerate(specs):
            self.sim.call(spec.runtime, spec.new_tokens, spec.context, spec.out_tokens,
                          lambda seconds, busy, i=i: back(i, seconds, busy))


def oracle_agreement(replay: Replay) -> Optional[float]:
    """The share of auto's choices (probes aside) that an oracle makes too: the cheaper choice by
    the costs the whole run measured (plain means per load, the run's acceptance and step
    length), where auto had only what it had measured so far."""
    means: Dict[tuple, list] = {}
    for what, load, seconds, busy, tokens, kept in replay.measured:
        per = tokens if what != "judged" else 1
        if per:
            for figure, value in (("s", seconds / per), ("busy", busy / per)):
                total = means.setdefault((what, figure, load), [0.0, 0])
                total[0] += value
                total[1] += 1
    kept = [m[5] for m in replay.measured if m[0] == "judged"]
    tokens = [m[4] for m in replay.measured if m[0] == "drafted"]
    if not kept or not tokens:
        return None
    acceptance = sum(kept) / len(kept)
    length = sum(tokens) / len(tokens)

    def at(what, figure, load):
        loads = [k[2] for k in means if k[0] == what and k[1] == figure]
        if not loads:
            return None
        nearest = min(loads, key=lambda n: (abs(n - load), n))
        total, n = means[(what, figure, nearest)]
        return total / n

    agree = judged = 0
    for draft_load, base_load, saturated, choice in replay.decisions:
        if choice in (PROBE_SPECULATE, PROBE_BASE):
            continue
        figure = "busy" if saturated else "s"
        d, j, b = at("drafted", figure, draft_load), at("judged", figure, base_load), at("base_wrote", figure, base_load)
        if None in (d, j, b):
            continue
        if saturated:
            d = d if DRAFT_RUNTIME in saturated else 0.0
            j, b = (j, b) if BASE_RUNTIME in saturated else (0.0, 0.0)
        cheaper_speculates = d * length + j + (1 - acceptance) * b * length < b * length
        judged += 1
        agree += cheaper_speculates == speculates(choice)
    return agree / judged if judged else None
