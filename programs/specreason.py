"""SpecReason: the draft model writes each reasoning step, the base model scores it with one
prefill and one token, and writes the step itself only when the score is low.

Sub-programs each run on one runtime; the top programs run them on the right one with
``.run(backend=...)`` and are themselves run on the base runtime (``run`` or ``run_batch``).
Prompts come from ``Role.template`` and only ever grow, so RadixAttention serves the shared
prefix of every call from its cache.
"""

import time

import sglang as sgl

from sgl_specreason.calls import call, gen_result, recording, step_spans
from sgl_specreason.scoring import PAPER_METHODS, score_reply
from sgl_specreason.stopping import FINISHED, clean_step, stop_reason
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step


# -- sub-programs: one runtime each -----------------------------------------------------------

@sgl.function
def draft_steps(s, prompt, num_drafts, max_step_tokens, temp, top_p_):
    """``num_drafts`` candidates for the next step, forked from one cached prefix."""
    s += prompt
    step = sgl.gen("step", max_tokens=max_step_tokens, stop=STEP_SEPARATOR,
                   temperature=temp, top_p=top_p_)
    if num_drafts == 1:
        s += step
        return [gen_result(s, "step")]
    forks = s.fork(num_drafts)
    forks += step
    drafts = [gen_result(f, "step") for f in forks]
    forks.join()
    return drafts


@sgl.function
def judge_steps(s, prefix, continuations, top_logprobs, logprob_start=None):
    """One reply per candidate: ``prefix`` (problem and kept steps) is shared, each continuation
    adds one candidate step (and, for the paper's judge, its question). One prefill, one token
    each; ``logprob_start`` (a token index) also returns the prompt's log-probabilities from
    there, which the likelihood judges read."""
    s += prefix
    score = sgl.gen("score", max_tokens=1, temperature=0, return_logprob=True,
                    top_logprobs_num=top_logprobs, return_text_in_logprobs=True,
                    logprob_start_len=logprob_start)
    if len(continuations) == 1:
        s += continuations[0] + score
        return [gen_result(s, "score")[1]]
    forks = s.fork(len(continuations))
    for fork, continuation in zip(forks, continuations):
        fork += continuation + score
    verdicts = [gen_result(f, "score")[1] for f in forks]
    forks.join()
    return verdicts


@sgl.function
def base_step(s, prompt, max_step_tokens, temp, top_p_):
    """The next step written by the model itself (the base model when a draft is rejected)."""
    s += prompt + sgl.gen("step", max_tokens=max_step_tokens, stop=STEP_SEPARATOR,
                          temperature=temp, top_p=top_p_)
    return gen_result(s, "step")


@sgl.function
def final_answer(s, prompt, max_answer_tokens, temp, top_p_):
    """The answer after the closed reasoning, when the steps stopped without one."""
    s += prompt + sgl.gen("answer", max_tokens=max_answer_tokens, temperature=temp, top_p=top_p_)
    return gen_result(s, "answer")


# -- top programs ------------------------------------------------------------------------------

@sgl.function
def specreason(s, problem, cfg, draft, base, monitor=None):
    """Solve ``problem`` with SpecReason; ``s`` is on the base runtime. Returns a ProblemResult."""
    q, choices = problem.question, problem.choices
    result = ProblemResult(problem.id, q, "specreason")
    with recording(result, problem, monitor):
        steps = []
        while True:
            started = time.perf_counter()
            if len(steps) < cfg.first_n_base_steps:
                step = _own_step(base, q, steps, choices, cfg, len(steps))
            else:
                step = _drafted_step(draft, base, q, steps, choices, cfg)
                if step.score < cfg.threshold:  # rejected: the base model writes the step
                    step.replace_with(_own_step(base, q, steps, choices, cfg, len(steps)))
            reason_ = _keep(result, steps, step, started, cfg, problem, monitor)
            if reason_:
                break
        _close(result, base, problem, steps, cfg, reason_)
    return result


@sgl.function
def reason(s, problem, cfg, role, monitor=None):
    """Baseline: ``role``'s model alone, step by step, with SpecReason's stop rules; ``s`` is on
    that role's runtime. ``role.name`` "base" is the base-only baseline, "draft" the draft-only."""
    q, choices = problem.question, problem.choices
    result = ProblemResult(problem.id, q, role.name)
    with recording(result, problem, monitor):
        steps = []
        while True:
            started = time.perf_counter()
            step = _own_step(role, q, steps, choices, cfg, len(steps))
            reason_ = _keep(result, steps, step, started, cfg, problem, monitor)
            if reason_:
                break
        _close(result, role, problem, steps, cfg, reason_)
    return result


# -- shared by the top programs ----------------------------------------------------------------

def _drafted_step(draft, base, q, steps, choices, cfg):
    """Draft the next step (``num_drafts`` ways) and judge each draft; the best scoring one."""
    drafts = call(draft_steps, draft.backend, prompt=draft.template.reasoning(q, steps, choices),
                  num_drafts=cfg.num_drafts, max_step_tokens=cfg.step_max_tokens,
                  temp=cfg.draft_temperature, top_p_=cfg.top_p)
    prefix = base.template.reasoning(q, steps, choices)
    candidates = [clean_step(text) for text, _ in drafts]
    if cfg.score_method in PAPER_METHODS:  # asked for a 0-9 score
        prompts = [base.template.judge(q, steps + [c], choices) for c in candidates]
        start, lengths = None, [None] * len(drafts)
    else:  # the step's own log-probabilities, read from one prefill of it
        prompts = [base.template.reasoning(q, steps + [c], choices) for c in candidates]
        start, lengths = step_spans(base.backend, prefix, candidates)
    verdicts = call(judge_steps, base.backend, prefix=prefix,
                    continuations=[p[len(prefix):] for p in prompts],
                    top_logprobs=cfg.judge_top_logprobs,
                    logprob_start=start)
    scores = [score_reply(v, cfg.score_method, n) for v, n in zip(verdicts, lengths)]
    best = max(range(len(drafts)), key=lambda i: scores[i].value)
    text, meta = drafts[best]
    tokens = meta.get("completion_tokens", 0)
    return Step(len(steps), DRAFT, clean_step(text), tokens, draft_text=text, draft_tokens=tokens,
                score=scores[best].value, score_digits=scores[best].digits,
                score_signals=scores[best].signals,
                draft_scores=[sc.value for sc in scores],
                calls=[Call.from_meta(DRAFT, "draft", m) for _, m in drafts]
                + [Call.from_meta(BASE, "judge", v) for v in verdicts])


def _own_step(role, q, steps, choices, cfg, index):
    text, meta = call(base_step, role.backend, prompt=role.template.reasoning(q, steps, choices),
                      max_step_tokens=cfg.step_max_tokens, temp=cfg.temperature(role.name),
                      top_p_=cfg.top_p)
    tokens = meta.get("completion_tokens", 0)
    step = Step(index, role.name, clean_step(text), tokens,
                calls=[Call.from_meta(role.name, "step", meta)])
    if role.name == BASE:
        step.base_text, step.base_tokens = text, tokens
    else:
        step.draft_text, step.draft_tokens = text, tokens
    return step


def _keep(result, steps, step, started, cfg, problem, monitor):
    """Append the step; the stop reason, or None to go on."""
    step.wall_s = time.perf_counter() - started
    if monitor is not None:
        monitor.on_step(problem, step)
    steps.append(step.text)
    result.steps.append(step)
    result.text = STEP_SEPARATOR.join(steps)
    result.stop_reason = stop_reason(steps, sum(st.kept_tokens for st in result.steps),
                                     cfg.token_budget)
    return result.stop_reason


def _close(result, role, problem, steps, cfg, reason_):
    """Reasoning stopped without an answer: the model states one after ``</think>``."""
    if reason_ == FINISHED:
        return
    text, meta = call(final_answer, role.backend,
                      prompt=role.template.answer(problem.question, steps, problem.choices),
                      max_answer_tokens=cfg.answer_max_tokens, temp=cfg.temperature(role.name),
                      top_p_=cfg.top_p)
    result.answer_call = Call.from_meta(role.name, "answer", meta)
    result.text += STEP_SEPARATOR + text
