"""One SpecReason step, in the paper's order: the draft model writes it, the base model scores
it, and it is kept, or the base model writes the step itself.

``Steps.next`` is that step; the top programs (``programs.specreason``) call it in their loop.
Before drafting, the speculation policy (``cfg.speculate``, ``sgl_specreason.speculation``)
may give the step to the base model instead; every call is timed and handed to the live costs
that ``auto`` decides from. ``programs.overlapped`` is the same step with work begun on a
guess while the step is judged.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

from sgl_specreason.programs.subprograms import base_step, draft_steps, judge_steps
from sgl_specreason.calls import call, step_spans
from sgl_specreason.judges import NOTHING, QUESTION, Candidates, get_judge
from sgl_specreason.judges.likelihood import passing_lead, step_token_logprobs
from sgl_specreason.speculation import FIRST, live_costs, load_of, speculates
from sgl_specreason.framing import PAPER, Talk, as_talk, frame
from sgl_specreason.stopping import clean_step, cut_after_thinking
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE, DRAFT, Call, Step

Reply = Tuple[str, dict]  # a gen's text and meta_info


@dataclass(frozen=True)
class Context:
    """What the steps continue: the question (and choices), the talk the prompts are rendered
    for (None: the question under the paper's framing), how a step is cleaned before it is kept,
    where a step stops, and the kept tokens allowed in all (None: only ``cfg.step_max_tokens``
    per step)."""

    question: str
    choices: Optional[Sequence[str]] = None
    tidy: Callable[[str], str] = clean_step
    stop: Union[str, List[str]] = STEP_SEPARATOR
    budget: Optional[int] = None
    talk: Optional[Talk] = None

    @property
    def asked(self) -> Talk:
        """The talk every prompt is rendered for."""
        return self.talk if self.talk is not None else as_talk(self.question, self.choices)


def problem_context(problem, cfg, roles: Sequence, budget: Optional[int] = None) -> Context:
    """The context of ``problem`` under its own framing or else ``cfg.framing``, for the
    templates of ``roles`` (the base model's first: its thinking markers are the run's)."""
    templates = [role.template for role in roles]
    framing = getattr(problem, "framing", None) or cfg.framing
    talk = frame(problem.messages, framing, problem.choices, templates, cfg.chat_template_kwargs)
    tidy = clean_step if talk.framing == PAPER else functools.partial(cut_after_thinking, close=talk.markers[1])
    return Context(problem.question, problem.choices, tidy=tidy, budget=budget, talk=talk)


class Steps:
    """The steps of one problem (or one continued text), one ``next`` call each."""

    def __init__(self, draft, base, ctx: Context, cfg):
        self.draft, self.base, self.ctx, self.cfg = draft, base, ctx, cfg
        self.judge_ = get_judge(cfg.score_method)
        self.costs = live_costs(draft.backend, base.backend)
        self.rule = (cfg.score_method, cfg.threshold, cfg.num_drafts)
        #: of the step just rejected, the draft's lead the base model writes on from (text, tokens)
        self.lead: Tuple[str, int] = ("", 0)

    def next(self, texts: List[str], kept: int) -> Step:
        """The step after ``texts`` (``kept`` tokens kept so far)."""
        started = time.perf_counter()
        limit = self.room(kept)
        choice = self.choose(texts)
        if not speculates(choice):  # one of the first steps, or the base model is cheaper now
            step = self.base_writes(texts, limit)
        else:
            # 1. the draft model writes the step (num_drafts candidates)
            drafts = self.drafts(texts, limit)
            # 2. the base model scores it (or the drafts score each other)
            step = self.judged(texts, drafts)
            # 3. keep it, or the base model writes the step itself
            if step.score < self.cfg.threshold:
                self.rewrite(step, texts, limit)
        step.choice = choice
        step.wall_s = time.perf_counter() - started
        return step

    def close(self) -> None:
        """Stop what is still under way (the plain step leaves nothing)."""

    # -- the parts of a step --------------------------------------------------------------------
    def choose(self, texts: List[str]) -> str:
        """The base model writes the first ``first_n_base_steps``; then the policy chooses."""
        if len(texts) < self.cfg.first_n_base_steps:
            return FIRST
        return self.costs.choose(self.cfg.speculate, self.rule, load_of(self.draft.backend),
                                 load_of(self.base.backend))

    def room(self, used: int) -> int:
        """New tokens the next step may take, with ``used`` kept tokens of the budget spent."""
        return self.room_in(self.ctx, self.cfg, used)

    @staticmethod
    def room_in(ctx: Context, cfg, used: int) -> int:
        budget = ctx.budget
        step_max = cfg.step_max_tokens
        return step_max if budget is None else max(1, min(step_max, budget - used))

    def drafts(self, texts: List[str], limit: int, cancel=None) -> List[Reply]:
        """``num_drafts`` candidates from the draft runtime, forked from one cached prefix."""
        cfg, ctx = self.cfg, self.ctx
        load, started = load_of(self.draft.backend), time.perf_counter()
        drafts = call(draft_steps, self.draft.backend,
                      prompt=self.draft.template.reasoning(ctx.asked, texts),
                      num_drafts=cfg.num_drafts, max_step_tokens=limit, temp=cfg.draft_temperature,
                      top_p_=cfg.top_p, stops=ctx.stop, logprobs=self.judge_.needs_draft_logprobs,
                      cancel=cancel)
        self.costs.drafted(load, time.perf_counter() - started, max(map(tokens_of, drafts)))
        return drafts

    def judged(self, texts: List[str], drafts: List[Reply]) -> Step:
        """Each draft judged with ``cfg.score_method``; the best scoring one as a step."""
        load, started = load_of(self.base.backend), time.perf_counter()
        candidates = [self.ctx.tidy(text) for text, _ in drafts]
        verdicts, lengths = [], []
        if self.judge_.asks != NOTHING:
            verdicts, lengths = self.ask_base(texts, candidates)
        seen = [as_judge_asked(v, self.cfg.judge_top_logprobs) for v in verdicts]
        scores = self.judge_.score(Candidates(self.ctx.question, len(texts), self.cfg.seed, candidates,
                                              [m for _, m in drafts], seen, lengths))
        best = max(range(len(drafts)), key=lambda i: scores[i].value)
        text, meta = drafts[best]
        tokens = tokens_of(drafts[best])
        step = Step(len(texts), DRAFT, candidates[best], tokens, draft_text=text, draft_tokens=tokens,
                    score=scores[best].value, score_digits=scores[best].digits,
                    score_signals=scores[best].signals, draft_scores=[sc.value for sc in scores],
                    ended=ended(meta),
                    calls=[Call.from_meta(DRAFT, "draft", m) for _, m in drafts]
                    + [Call.from_meta(BASE, "judge", v) for v in verdicts])
        if self.cfg.logprobs is not None:
            if not verdicts:  # the judge asked the base runtime nothing: one prefill of the step
                verdicts, lengths = self.ask_base(texts, [candidates[best]], question=False)
                best = 0
                step.calls.append(Call.from_meta(BASE, "logprobs", verdicts[0]))
            step.logprobs = read_logprobs(verdicts[best], "input", lengths[best], self.cfg.logprobs)
        self.costs.judged(load, time.perf_counter() - started, self.rule,
                          step.score >= self.cfg.threshold)
        self.lead = ("", 0)
        if self.cfg.keep_draft_prefix and step.score < self.cfg.threshold:
            self.lead = draft_lead(candidates[best], verdicts[best], lengths[best], self.cfg)
        return step

    def rewrite(self, step: Step, texts: List[str], limit: int, reply: Optional[Reply] = None) -> None:
        """The draft was rejected: the base model writes the step (``reply``: it already did, from
        the start), on from the draft's lead where ``judged`` kept one."""
        lead, count = self.lead if reply is None else ("", 0)
        self.lead = ("", 0)
        step.replace_with(self.base_writes(texts, max(1, limit - count), reply, lead), count)

    def ask_base(self, texts: List[str], candidates: List[str], question: Optional[bool] = None):
        """The base runtime's reply on each candidate (one prefill, one token each): after the
        paper's question (``question``; by default where the judge asks it) or after the step
        alone. Each prompt holds its candidate right after the kept steps, so where the step's
        own log-probabilities are wanted (the judges that read them, or ``cfg.logprobs``) the
        same prefill returns them from the step's first token on; then each candidate's length
        in base tokens comes back too (else None)."""
        question = self.judge_.asks == QUESTION if question is None else question
        talk, template = self.ctx.asked, self.base.template
        prefix = template.reasoning(talk, texts)
        render = template.judge if question else template.reasoning
        prompts = [render(talk, texts + [c]) for c in candidates]
        start_, lengths = None, [None] * len(candidates)
        if not question or self.cfg.logprobs is not None:
            start_, lengths = step_spans(self.base.backend, prefix, candidates)
        verdicts = call(judge_steps, self.base.backend, prefix=prefix,
                        continuations=[p[len(prefix):] for p in prompts],
                        top_logprobs=max(self.cfg.judge_top_logprobs, self.cfg.logprobs or 0),
                        logprob_start=start_)
        return verdicts, lengths

    def base_reply(self, texts: List[str], limit: int, cancel=None, lead: str = "") -> Reply:
        """The base model's own next step (on from ``lead``), as the runtime sent it."""
        load, started = load_of(self.base.backend), time.perf_counter()
        reply = own_reply(self.base, self.ctx, texts, self.cfg, limit, cancel, lead)
        self.costs.base_wrote(load, time.perf_counter() - started, tokens_of(reply))
        return reply

    def base_writes(self, texts: List[str], limit: int, reply: Optional[Reply] = None, lead: str = "") -> Step:
        """The next step written by the base model (``reply``: its reply, if already asked; ``lead``:
        the start of the step it writes on from)."""
        return own_step(self.base, self.ctx, texts, reply or self.base_reply(texts, limit, lead=lead), lead)


# -- what the baselines share with the steps ---------------------------------------------------

def own_reply(role, ctx: Context, texts: List[str], cfg, limit: int, cancel=None, lead: str = "") -> Reply:
    """``role``'s model writes the next step itself (on from ``lead``, the step's start)."""
    return call(base_step, role.backend, prompt=role.template.reasoning(ctx.asked, texts) + lead,
                max_step_tokens=limit, temp=cfg.temperature(role.name), top_p_=cfg.top_p,
                stops=ctx.stop, logprobs=cfg.logprobs, cancel=cancel)


def own_step(role, ctx: Context, texts: List[str], reply: Reply, lead: str = "") -> Step:
    """A step of ``role``'s own writing, from its reply (written on from ``lead``: the text holds
    both, the tokens are its own)."""
    text, meta = reply
    tokens = tokens_of(reply)
    step = Step(len(texts), role.name, ctx.tidy(lead + text), tokens, ended=ended(meta),
                calls=[Call.from_meta(role.name, "step", meta)],
                logprobs=read_logprobs(meta, "output") if "output_token_logprobs" in meta else None)
    if role.name == BASE:
        step.base_text, step.base_tokens = text, tokens
    else:
        step.draft_text, step.draft_tokens = text, tokens
    return step


def draft_lead(candidate: str, verdict: dict, length: Optional[int], cfg) -> Tuple[str, int]:
    """Of a rejected draft, the lead the judge would keep (``passing_lead``) as (text, base
    tokens), read off its judgement's prefill; ("", 0) where there is none, or where the tokens'
    texts do not spell the draft's start (a character split across tokens)."""
    entries = step_token_logprobs(verdict, length or 0)
    count = passing_lead(entries, cfg.score_method, cfg.threshold)
    text = "".join(t for _, t in entries[:count])
    return (text, count) if count and candidate.startswith(text) else ("", 0)


def read_logprobs(meta: dict, side: str, count: Optional[int] = None, top: Optional[int] = None) -> list:
    """Each token's [text, log-prob, [[alternative, log-prob], ...]] from a reply's ``meta_info``:
    the tokens it wrote (``side`` "output"), or ``count`` prompt tokens of a prefill asked with
    ``logprob_start_len`` one token before them ("input"; SGLang scores no first position); at
    most ``top`` alternatives each (a call may have asked for more).

    >>> read_logprobs({"output_token_logprobs": [[-0.1, 7, "a"]],
    ...                "output_top_logprobs": [[[-0.1, 7, "a"], [-2.5, 8, "b"]]]}, "output")
    [['a', -0.1, [['a', -0.1], ['b', -2.5]]]]
    """
    tokens = meta.get(f"{side}_token_logprobs") or []
    tops = meta.get(f"{side}_top_logprobs") or [None] * len(tokens)
    if side == "input":
        tokens, tops = tokens[1:1 + count], tops[1:1 + count]
    return [[entry[2] or "", entry[0],
             [[alt[2] or "", alt[0]] for alt in (alts or []) if alt[0] is not None][:top]]
            for entry, alts in zip(tokens, tops) if entry[0] is not None]


def as_judge_asked(verdict: dict, top: int) -> dict:
    """A judge's reply as the judge asked it: at most ``top`` alternatives of its one token (the
    request may have asked for more, for ``logprobs``), so that asking for log-probabilities
    never changes a score.

    >>> as_judge_asked({"output_top_logprobs": [[[-0.1, 7, "9"], [-2.0, 8, "8"]]]}, 1)
    {'output_top_logprobs': [[[-0.1, 7, '9']]]}
    """
    tops = verdict.get("output_top_logprobs")
    if not tops or all(alts is None or len(alts) <= top for alts in tops):
        return verdict
    return {**verdict, "output_top_logprobs": [None if alts is None else alts[:top] for alts in tops]}


def tokens_of(reply: Reply) -> int:
    return reply[1].get("completion_tokens", 0)


def ended(meta: dict) -> bool:
    """The reply ended the text (end of sequence or a caller's stop string), not at a step
    separator or the length limit."""
    finish = meta.get("finish_reason") or {}
    return isinstance(finish, dict) and finish.get("type") == "stop" and finish.get("matched") != STEP_SEPARATOR
