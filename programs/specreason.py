"""SpecReason: the draft model writes each reasoning step, the base model scores it with one
prefill and one token, and writes the step itself only when the score is low.

The top programs loop over steps; each step (``programs.steps.Steps.next``) runs the
sub-programs (``programs.subprograms``) on the right runtime with ``.run(backend=...)``. The
top programs themselves run on the base runtime (``run`` or ``run_batch``). Prompts come from
``Role.template`` and only ever grow, so RadixAttention serves the shared prefix of every call
from its cache.
"""

import dataclasses
import time
from contextlib import closing

import sglang as sgl

from sgl_specreason.programs.overlapped import Overlapped
from sgl_specreason.programs.steps import Context, Steps, own_reply, own_step, problem_context, read_logprobs
from sgl_specreason.programs.subprograms import base_step, final_answer
from sgl_specreason.calls import call, recording
from sgl_specreason.framing import PAPER
from sgl_specreason.stopping import ENDED, FINISHED, has_answer, split_reasoning, stop_reason, thinking
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import Call, ProblemResult


# -- top programs ------------------------------------------------------------------------------

@sgl.function
def specreason(s, problem, cfg, draft, base, monitor=None):
    """Solve ``problem`` with SpecReason; ``s`` is on the base runtime. Returns a ProblemResult."""
    result = ProblemResult(problem.id, problem.question, "specreason")
    with recording(result, problem, monitor):
        ctx = _capped(problem_context(problem, cfg, (base, draft)), cfg)
        with closing(steps_for(draft, base, ctx, cfg)) as steps:
            while not result.stop_reason:
                # draft the step, judge it, keep it or let the base model write it (programs.steps)
                step = steps.next(_texts(result), _kept(result))
                _keep(result, step, cfg, ctx, problem, monitor)
        _close(result, base, ctx, cfg)
    return result


@sgl.function
def reason(s, problem, cfg, role, monitor=None):
    """Baseline: ``role``'s model alone, step by step, with SpecReason's stop rules; ``s`` is on
    that role's runtime. ``role.name`` "base" is the base-only baseline, "draft" the draft-only."""
    result = ProblemResult(problem.id, problem.question, role.name)
    with recording(result, problem, monitor):
        ctx = _capped(problem_context(problem, cfg, (role,)), cfg)
        while not result.stop_reason:
            started = time.perf_counter()
            texts = _texts(result)
            limit = Steps.room_in(ctx, cfg, _kept(result))
            step = own_step(role, ctx, texts, own_reply(role, ctx, texts, cfg, limit))
            step.wall_s = time.perf_counter() - started
            _keep(result, step, cfg, ctx, problem, monitor)
        _close(result, role, ctx, cfg)
    return result


@sgl.function
def continuation(s, cfg, draft, base, max_tokens, stops=(), on_step=None):
    """SpecReason under one long ``gen``: continue the prompt that ``draft.template`` and
    ``base.template`` hold (``templates.Continuation``) step by step, as the base model alone
    would, until a step ends the text (end of sequence or one of ``stops``) or ``max_tokens``
    kept tokens. The draft model continues the same text. ``on_step`` is called with each kept
    step. Returns a ProblemResult whose ``text`` is the generated text; ``s`` is on the base
    runtime."""
    result = ProblemResult("gen", "", "specreason")
    started = time.perf_counter()
    stops = [STEP_SEPARATOR] + [x for x in ([stops] if isinstance(stops, str) else stops) if x != STEP_SEPARATOR]
    ctx = Context("", None, tidy=str, stop=stops, budget=max_tokens)
    with closing(steps_for(draft, base, ctx, cfg)) as steps:
        while not (result.steps and result.steps[-1].ended) and _kept(result) < max_tokens:
            step = steps.next(_texts(result), _kept(result))
            result.steps.append(step)
            step.final = step.ended or _kept(result) >= max_tokens  # what ends the loop
            if on_step is not None:
                on_step(step)
    result.text = STEP_SEPARATOR.join(_texts(result))
    result.stop_reason = "stop" if result.steps and result.steps[-1].ended else "length"
    result.wall_s = time.perf_counter() - started
    return result


@sgl.function
def one_gen(s, problem, cfg, role, monitor=None, label="base-gen"):
    """A program as users already have them: the reasoning prompt and one long ``gen``. On the
    base runtime it is a base-only baseline; on the drop-in backend (``SpecReasonBackend``)
    SpecReason serves the same ``gen``, and its trace becomes the result's steps. ``label`` is
    the result's mode."""
    result = ProblemResult(problem.id, problem.question, label)
    with recording(result, problem, monitor):
        ctx = problem_context(problem, cfg, (role,))
        prompt = role.template.reasoning(ctx.asked, [])
        text, meta = call(base_step, role.backend, prompt=prompt, max_step_tokens=cfg.token_budget,
                          temp=cfg.base_temperature, top_p_=cfg.top_p, stops=[])
        inner = meta.get("specreason")
        if inner is not None:
            result.steps = inner.steps
        else:
            result.steps = [own_step(role, dataclasses.replace(ctx, tidy=str), [], (text, meta))]
        result.text = text
        finish = meta.get("finish_reason") or {}
        result.stop_reason = FINISHED if has_answer(text) else finish.get("type", "")
        if monitor is not None:
            for step in result.steps:
                monitor.on_step(problem, step)
    return result


def steps_for(draft, base, ctx, cfg) -> Steps:
    """The steps of one problem: the plain step, or with work begun on a guess beside each
    judgement (``cfg.pipeline``, ``cfg.race_base_step``)."""
    return (Overlapped if cfg.pipeline or cfg.race_base_step else Steps)(draft, base, ctx, cfg)


def _capped(ctx, cfg):
    """``ctx`` with the kept tokens its steps may take in all when the completion has a hard cap
    (None: each step is only held to ``step_max_tokens``)."""
    if cfg.max_completion_tokens is None:
        return ctx
    return dataclasses.replace(ctx, budget=cfg.steps_budget(_answer_may_follow(ctx.asked, [])))


def _answer_may_follow(talk, texts) -> bool:
    """A closing answer may follow the steps: under ``paper``, or where the text is thinking.
    Otherwise the steps are the reply itself, and the whole cap is theirs."""
    return talk.framing == PAPER or thinking(texts, talk.think, talk.markers[0])


def _texts(result):
    return [step.text for step in result.steps]


def _kept(result):
    return sum(step.kept_tokens for step in result.steps)


def _keep(result, step, cfg, ctx, problem, monitor):
    """Append the step; the stop reason, or None to go on. The step is handed to the monitor
    once it is known whether the run writes anything after it (``Step.final``)."""
    result.steps.append(step)
    texts = _texts(result)
    result.text = STEP_SEPARATOR.join(texts)
    talk = ctx.asked
    budget = cfg.steps_budget(_answer_may_follow(talk, texts))
    result.stop_reason = stop_reason(texts, _kept(result), budget, ended=step.ended,
                                     framing=talk.framing, think=talk.think, markers=talk.markers)
    step.final = bool(result.stop_reason) and not _answer_room(result, ctx, cfg)
    if monitor is not None:
        monitor.on_step(problem, step)
    return result.stop_reason


def _close(result, role, ctx, cfg):
    """The reasoning stopped: the model states the answer after ``</think>`` where one is due
    (``_answer_room``); then the text is split into reasoning and reply."""
    talk, texts = ctx.asked, _texts(result)
    room = _answer_room(result, ctx, cfg)
    answer = None
    if room:
        answer, meta = call(final_answer, role.backend, prompt=role.template.answer(talk, texts),
                            max_answer_tokens=room, temp=cfg.temperature(role.name), top_p_=cfg.top_p,
                            logprobs=cfg.logprobs)
        result.answer_call = Call.from_meta(role.name, "answer", meta)
        if cfg.logprobs is not None:
            result.answer_logprobs = read_logprobs(meta, "output")
        result.text += STEP_SEPARATOR + answer
    result.reasoning, result.content = split_reasoning(texts, answer, talk.think, talk.markers)


def _answer_room(result, ctx, cfg) -> int:
    """The tokens the closing answer may take (0: no answer follows the steps)."""
    room = cfg.answer_room(_kept(result))
    return room if room and _answer_due(result.stop_reason, _texts(result), ctx.asked) else 0


def _answer_due(reason, texts, talk) -> bool:
    """Under ``paper``, unless a step stated the answer (the paper's rule); under ``plain``, when
    the text was thinking and the model did not end it itself: the thinking was closed, or cut
    by the budget or a loop."""
    return reason != (FINISHED if talk.framing == PAPER else ENDED) and _answer_may_follow(talk, texts)
