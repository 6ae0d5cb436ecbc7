"""One validated configuration object for SpecReason and its baselines."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from sgl_specreason.errors import ConfigError
from sgl_specreason.framing import FRAMINGS, PAPER
from sgl_specreason.judges import JUDGES
from sgl_specreason.judges.likelihood import METHODS as LIKELIHOOD_METHODS
from sgl_specreason.speculation import POLICIES


def _check_number(name, value, lo, hi, *, integer=False, lo_open=False):
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        integer and not isinstance(value, int)
    ):
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    low_ok = value > lo if lo_open else value >= lo
    if not low_ok or value > hi:
        left = "(" if lo_open else "["
        raise ConfigError(f"{name} must be in {left}{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class SpecReasonConfig:
    """Everything a user can set. Bad values fail here, naming the field and its range.

    >>> SpecReasonConfig(threshold=9, score_method="average").threshold
    9
    """

    #: accept a drafted step when its judge score is >= threshold (0 accepts every step; at 10
    #: drafts are still written and judged, and only a top score of 10 passes, e.g. when all
    #: drafts agree; the base-only mode writes every step with no draft).
    threshold: float = 7.0
    #: the judge that scores a drafted step (0..10, higher is better): a name in
    #: ``sgl_specreason.judges.JUDGES`` ("greedy" and "average" ask the paper's question,
    #: the likelihood judges read the step's own log-probs, ...).
    score_method: str = "greedy"
    #: stop once the kept steps' output tokens reach this many.
    token_budget: int = 8192
    #: at most this many new tokens per reasoning step (draft or base).
    step_max_tokens: int = 512
    #: new tokens for the closing answer when reasoning stopped without one.
    answer_max_tokens: int = 256
    #: a hard cap on the whole completion: kept steps and the closing answer together (None: no
    #: cap beyond token_budget). Where an answer may follow the steps, the reasoning gets all of
    #: it but the room kept for the answer, min(answer_max_tokens, a quarter of the cap); a reply
    #: that is its own steps gets all of it (``steps_budget``); every step is cut to what is left.
    max_completion_tokens: Optional[int] = None
    draft_temperature: float = 0.6
    base_temperature: float = 0.6
    top_p: float = 0.95
    #: drafts per step, forked from one radix-cached prefix and judged together; the best
    #: scoring one is kept if it reaches the threshold.
    num_drafts: int = 1
    #: draft step k+1 while the base runtime judges step k, as if step k will be kept; a
    #: rejection aborts that draft. Needs num_drafts = 1 (which draft wins is not known early).
    pipeline: bool = False
    #: start the base model's own step k together with its judgement; the loser is aborted
    #: (the base step when the draft is kept, nothing is waited for when it is not).
    race_base_step: bool = False
    #: when a drafted step is rejected, keep its longest leading part that the judge would accept
    #: as a step of its own, cut where a word ends, and let the base model write the step on from
    #: there instead of from its start. Needs a judge that reads the step's own log-probabilities
    #: (the likelihood ones); not with race_base_step (the raced step starts from the start).
    keep_draft_prefix: bool = False
    #: the base model writes the first N steps itself (no draft, no judge).
    first_n_base_steps: int = 0
    #: when a step is speculated (drafted and judged): "always"; "never" (the base model writes
    #: every step, through the same program); "auto" (at each step, whichever of the two the
    #: costs just measured on the runtimes, at their load now, and the acceptance so far say
    #: is cheaper; ``sgl_specreason.speculation``).
    speculate: str = "always"
    #: top log-probabilities the judge asks for (the paper uses 10).
    judge_top_logprobs: int = 10
    #: record in each step the base model's log-probability of every kept token and of its top
    #: N alternatives (None: none; 0: the tokens' own). A drafted step's come from its judge's
    #: prefill, which holds the step (a judge that asks the base runtime nothing: one more prefill).
    logprobs: Optional[int] = None
    #: seed for the local runtimes' sampling (--random-seed); None leaves it unset.
    seed: Optional[int] = None
    #: how the question is put to the models (``sgl_specreason.framing``): "paper" (the paper's
    #: math / multiple-choice instruction, the assistant turn opened with <think>; the
    #: benchmarks' prompt) or "plain" (the conversation exactly as the user wrote it).
    framing: str = PAPER
    #: arguments of the models' own chat templates (Qwen3's ``enable_thinking``), as SGLang's
    #: server takes them per request; None: none.
    chat_template_kwargs: Optional[dict] = None
    #: seconds one runtime request may take before it is abandoned with an error.
    request_timeout: float = 600.0
    #: times a refused connection is tried again (the request never reached the runtime), and
    #: times a request is sent again after a dropped connection or an HTTP 5xx, with a fresh
    #: request id (backoff 0.5 s, 1 s, 2 s, ...); timeouts and rejected requests are not retried.
    request_retries: int = 2

    def __post_init__(self):
        _check_number("threshold", self.threshold, 0, 10)
        if self.score_method not in JUDGES:
            raise ConfigError(
                f"score_method must be one of {', '.join(JUDGES)}, got {self.score_method!r}"
            )
        _check_number("token_budget", self.token_budget, 1, 1_048_576, integer=True)
        _check_number("step_max_tokens", self.step_max_tokens, 1, 65_536, integer=True)
        _check_number("answer_max_tokens", self.answer_max_tokens, 1, 65_536, integer=True)
        if self.max_completion_tokens is not None:
            _check_number("max_completion_tokens", self.max_completion_tokens, 1, 1_048_576, integer=True)
        _check_number("draft_temperature", self.draft_temperature, 0, 2)
        _check_number("base_temperature", self.base_temperature, 0, 2)
        _check_number("top_p", self.top_p, 0, 1, lo_open=True)
        _check_number("num_drafts", self.num_drafts, 1, 16, integer=True)
        for name in ("pipeline", "race_base_step", "keep_draft_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        needed = JUDGES[self.score_method].min_drafts
        if self.num_drafts < needed:
            raise ConfigError(f"score_method {self.score_method} compares drafts with each other: "
                              f"it needs num_drafts >= {needed}, got {self.num_drafts}")
        if self.pipeline and self.num_drafts > 1:
            raise ConfigError(f"pipeline needs num_drafts = 1, got num_drafts = {self.num_drafts}: "
                              "the next step is drafted before the judge picks among the drafts")
        if self.keep_draft_prefix and self.score_method not in LIKELIHOOD_METHODS:
            raise ConfigError(f"keep_draft_prefix needs a judge that reads the step's own log-probabilities "
                              f"({', '.join(LIKELIHOOD_METHODS)}), got score_method {self.score_method}")
        if self.keep_draft_prefix and self.race_base_step:
            raise ConfigError("keep_draft_prefix and race_base_step both say where the base model's own "
                              "step starts after a rejection (from the draft's lead, or raced from the "
                              "step's start): choose one")
        if self.speculate not in POLICIES:
            raise ConfigError(f"speculate must be one of {', '.join(POLICIES)}, got {self.speculate!r}")
        _check_number("first_n_base_steps", self.first_n_base_steps, 0, 1_000_000, integer=True)
        _check_number("judge_top_logprobs", self.judge_top_logprobs, 1, 20, integer=True)
        if self.logprobs is not None:
            _check_number("logprobs", self.logprobs, 0, 20, integer=True)
        if self.seed is not None:
            _check_number("seed", self.seed, 0, 2**31 - 1, integer=True)
        if self.framing not in FRAMINGS:
            raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        kwargs = self.chat_template_kwargs
        if kwargs is not None and not (isinstance(kwargs, dict) and all(
                isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
                for k, v in kwargs.items())):
            raise ConfigError(f"chat_template_kwargs must be an object of named arguments with "
                              f"plain values (e.g. {{\"enable_thinking\": false}}), got {kwargs!r}")
        _check_number("request_timeout", self.request_timeout, 0, 86_400, lo_open=True)
        _check_number("request_retries", self.request_retries, 0, 10, integer=True)

    @property
    def reasoning_budget(self) -> int:
        """Kept tokens after which the reasoning stops: ``token_budget``, and under a
        ``max_completion_tokens`` cap all of the cap but the room kept for the answer.

        >>> SpecReasonConfig(max_completion_tokens=100).reasoning_budget
        75
        """
        if self.max_completion_tokens is None:
            return self.token_budget
        cap = self.max_completion_tokens
        return min(self.token_budget, cap - min(self.answer_max_tokens, cap // 4))

    def steps_budget(self, answer_follows: bool = True) -> int:
        """Kept tokens the steps may take: ``reasoning_budget`` where a closing answer may follow
        them (the room is kept for it); all of the cap where the steps are the reply itself
        (a conversation put as written to a model that does not think).

        >>> SpecReasonConfig(max_completion_tokens=100).steps_budget(answer_follows=False)
        100
        """
        if self.max_completion_tokens is None or answer_follows:
            return self.reasoning_budget
        return min(self.token_budget, self.max_completion_tokens)

    def answer_room(self, kept: int) -> int:
        """New tokens the closing answer may take after ``kept`` kept tokens (0: none)."""
        if self.max_completion_tokens is None:
            return self.answer_max_tokens
        return max(0, min(self.answer_max_tokens, self.max_completion_tokens - kept))

    def temperature(self, role: str) -> float:
        """Sampling temperature of the draft or base model."""
        return self.draft_temperature if role == "draft" else self.base_temperature

    def replace(self, **changes) -> "SpecReasonConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown config field(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
