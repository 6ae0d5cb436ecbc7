"""What a run records: every runtime call, every step, every problem, and their totals."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from sgl_specreason.speculation import CHOICES, speculates

DRAFT = "draft"
BASE = "base"


@dataclass
class Call:
    """One request to a runtime, from its ``meta_info``."""

    role: str  # which runtime: "draft" or "base"
    kind: str  # "draft", "judge", "step" (base writes a step), "answer", "wasted" (aborted guess)
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    latency_s: float  # server-side end-to-end latency
    finish_reason: str = ""

    @classmethod
    def from_meta(cls, role: str, kind: str, meta: dict) -> "Call":
        finish = meta.get("finish_reason") or {}
        if isinstance(finish, dict):
            finish = finish.get("type", "")
        return cls(
            role=role,
            kind=kind,
            prompt_tokens=int(meta.get("prompt_tokens") or 0),
            cached_tokens=int(meta.get("cached_tokens") or 0),
            completion_tokens=int(meta.get("completion_tokens") or 0),
            latency_s=float(meta.get("e2e_latency") or 0.0),
            finish_reason=str(finish or ""),
        )


@dataclass
class Step:
    index: int
    source: str  # who wrote the kept text: "draft" or "base"
    text: str  # the kept text
    kept_tokens: int
    draft_text: Optional[str] = None
    draft_tokens: Optional[int] = None
    score: Optional[float] = None
    #: judge's digit distribution (digit -> probability)
    score_digits: Dict[int, float] = field(default_factory=dict)
    #: every score the judge's reply gave, by method ("average", "likelihood-min", ...)
    score_signals: Dict[str, float] = field(default_factory=dict)
    #: every draft's score when several were forked
    draft_scores: List[float] = field(default_factory=list)
    base_text: Optional[str] = None
    base_tokens: Optional[int] = None
    #: of a step the base model wrote after a rejected draft: the draft's leading tokens it kept
    #: and wrote on from (``keep_draft_prefix``); part of ``kept_tokens``
    lead_tokens: int = 0
    #: the kept text ended the generation (end of sequence or a caller's stop string) instead
    #: of a step separator or the length limit; read by the drop-in backend's continuation
    ended: bool = False
    #: the run writes nothing after this step (it stops here, and no closing answer follows), as
    #: the program knows when it keeps the step: a stream can finish on the step's own chunk
    final: bool = False
    #: why the step was or was not speculated (``sgl_specreason.speculation``): "speculate",
    #: "base" (the policy gave it to the base model), "probe-speculate" / "probe-base" (auto
    #: took the other side to measure it again), "first" (one of the first
    #: ``first_n_base_steps``); "" for the baselines
    choice: str = ""
    #: with ``logprobs`` asked: the base model's log-probability of each kept token, as
    #: [token text, log-prob, [[alternative, log-prob], ...]]
    logprobs: Optional[list] = None
    wall_s: float = 0.0
    calls: List[Call] = field(default_factory=list)

    def replace_with(self, own: "Step", lead_tokens: int = 0) -> None:
        """The draft was rejected: keep ``own`` (the base model's step, written on from the
        draft's first ``lead_tokens`` tokens, which its text holds) and its calls too."""
        self.source, self.text, self.kept_tokens = own.source, own.text, own.kept_tokens + lead_tokens
        self.ended, self.lead_tokens = own.ended, lead_tokens
        lead = (self.logprobs or [])[:lead_tokens] if lead_tokens else []
        self.logprobs = None if own.logprobs is None else lead + own.logprobs
        self.base_text, self.base_tokens = own.base_text, own.base_tokens
        self.calls += own.calls


@dataclass
class Totals:
    steps: int = 0
    judged_steps: int = 0
    accepted_steps: int = 0
    judge_calls: int = 0
    #: steps the speculation policy chose for (all but the first ``first_n_base_steps``), and
    #: of those the ones it speculated (probes included)
    policy_steps: int = 0
    speculated_steps: int = 0
    draft_tokens: int = 0  # all tokens the draft model produced, kept or not
    base_tokens: int = 0  # tokens the base model produced (steps and answer)
    kept_draft_tokens: int = 0
    kept_base_tokens: int = 0
    prompt_tokens: Dict[str, int] = field(default_factory=lambda: {DRAFT: 0, BASE: 0})
    cached_tokens: Dict[str, int] = field(default_factory=lambda: {DRAFT: 0, BASE: 0})
    server_s: Dict[str, float] = field(default_factory=lambda: {DRAFT: 0.0, BASE: 0.0})
    judge_s: float = 0.0  # server time of the judge calls (part of server_s[base])
    #: tokens of work begun on a guess that proved wrong and was aborted (pipelined drafts of a
    #: rejected step, the base step that raced an accepted draft); part of draft/base_tokens
    wasted_tokens: int = 0

    @property
    def acceptance_rate(self) -> Optional[float]:
        return self.accepted_steps / self.judged_steps if self.judged_steps else None

    def cache_hit_ratio(self, role: str) -> Optional[float]:
        prompt = self.prompt_tokens.get(role, 0)
        return self.cached_tokens.get(role, 0) / prompt if prompt else None

    @property
    def speculated_share(self) -> Optional[float]:
        """Of the steps the policy chose for, the share it speculated."""
        return self.speculated_steps / self.policy_steps if self.policy_steps else None

    @property
    def judge_s_mean(self) -> Optional[float]:
        return self.judge_s / self.judge_calls if self.judge_calls else None

    @classmethod
    def from_dict(cls, data: dict) -> "Totals":
        """Back from ``to_dict`` (a results line); the derived entries are recomputed."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def ms_per_token(self, role: str) -> Optional[float]:
        """Server time per generated token of a role, judge calls left out (includes the
        prefill of each step's new prompt tokens, as a real run pays it)."""
        tokens = self.draft_tokens if role == DRAFT else self.base_tokens
        seconds = self.server_s.get(role, 0.0) - (self.judge_s if role == BASE else 0.0)
        return 1000 * seconds / tokens if tokens else None

    def add_call(self, call: Call) -> None:
        self.prompt_tokens[call.role] = self.prompt_tokens.get(call.role, 0) + call.prompt_tokens
        self.cached_tokens[call.role] = self.cached_tokens.get(call.role, 0) + call.cached_tokens
        self.server_s[call.role] = self.server_s.get(call.role, 0.0) + call.latency_s
        if call.kind == "judge":
            self.judge_calls += 1
            self.judge_s += call.latency_s
            return
        if call.kind == "wasted":
            self.wasted_tokens += call.completion_tokens
        if call.role == DRAFT:
            self.draft_tokens += call.completion_tokens
        else:
            self.base_tokens += call.completion_tokens

    def add_step(self, step: Step) -> None:
        self.steps += 1
        if step.choice in CHOICES:
            self.policy_steps += 1
            self.speculated_steps += speculates(step.choice)
        if step.score is not None:
            self.judged_steps += 1
            self.accepted_steps += step.source == DRAFT
        if step.source == DRAFT:
            self.kept_draft_tokens += step.kept_tokens
        else:  # the draft's lead that a rewritten step kept is the draft's
            self.kept_draft_tokens += step.lead_tokens
            self.kept_base_tokens += step.kept_tokens - step.lead_tokens
        for call in step.calls:
            self.add_call(call)

    def merge(self, other: "Totals") -> None:
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, f.name, mine + theirs)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["acceptance_rate"] = self.acceptance_rate
        out["speculated_share"] = self.speculated_share
        out["cache_hit_ratio"] = {role: self.cache_hit_ratio(role) for role in (DRAFT, BASE)}
        out["ms_per_token"] = {role: self.ms_per_token(role) for role in (DRAFT, BASE)}
        out["judge_s_mean"] = self.judge_s_mean
        return out


@dataclass
class ProblemResult:
    """One line of the results file."""

    id: str
    question: str
    mode: str  # "specreason", "base", "draft"
    text: str = ""  # the whole reasoning and answer the models wrote
    #: ``text`` split (``stopping.split_reasoning``): the kept thinking, without its markers, and
    #: the reply after it; None where a program does not split (a continued prompt)
    reasoning: Optional[str] = None
    content: Optional[str] = None
    answer: Optional[str] = None  # extracted final answer
    reference: Optional[str] = None
    correct: Optional[bool] = None
    stop_reason: Optional[str] = None
    wall_s: float = 0.0
    steps: List[Step] = field(default_factory=list)
    answer_call: Optional[Call] = None
    #: the closing answer's log-probabilities (as ``Step.logprobs``), when asked
    answer_logprobs: Optional[list] = None
    error: Optional[str] = None

    def totals(self) -> Totals:
        totals = Totals()
        for step in self.steps:
            totals.add_step(step)
        if self.answer_call is not None:
            totals.add_call(self.answer_call)
        return totals

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["totals"] = self.totals().to_dict()
        return out
