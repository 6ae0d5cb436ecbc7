"""SpecReason: the draft model writes each reasoning step, the base model scores it with one
prefill and one token, and writes the step itself only when the score is low.

Sub-programs each run on one runtime; the top programs run them on the right one with
``.run(backend=...)`` and are themselves run on the base runtime (``run`` or ``run_batch``).
Prompts come from ``Role.template`` and only ever grow, so RadixAttention serves the shared
prefix of every call from its cache. Sub-programs take a ``cancel`` argument (a
``calls.CancelScope``) so that work begun on a guess can be aborted when the guess is wrong.
"""

import time
from contextlib import closing

import sglang as sgl

from sgl_specreason.calls import call, gen_result, recording, start, step_spans
from sgl_specreason.judges import NOTHING, QUESTION, Candidates, get_judge
from sgl_specreason.stopping import FINISHED, clean_step, has_answer, stop_reason
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step


# -- sub-programs: one runtime each -----------------------------------------------------------

@sgl.function
def draft_steps(s, prompt, num_drafts, max_step_tokens, temp, top_p_, stops=STEP_SEPARATOR,
                logprobs=False, cancel=None):
    """``num_drafts`` candidates for the next step, forked from one cached prefix; with
    ``logprobs`` each reply carries the draft model's log-probabilities of its own tokens.
    (Arguments avoid the names ``SglFunction.run`` takes for itself: ``stop``, ``temperature``,
    ``top_p``.)"""
    s += prompt
    step = sgl.gen("step", max_tokens=max_step_tokens, stop=stops, temperature=temp, top_p=top_p_,
                   return_logprob=True if logprobs else None)
    if num_drafts == 1:
        s += step
        return [gen_result(s, "step")]
    forks = s.fork(num_drafts)
    forks += step
    drafts = [gen_result(f, "step") for f in forks]
    forks.join()
    return drafts


@sgl.function
def judge_steps(s, prefix, continuations, top_logprobs, logprob_start=None, cancel=None):
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
def base_step(s, prompt, max_step_tokens, temp, top_p_, stops=STEP_SEPARATOR, cancel=None):
    """The next step written by the model itself (the base model when a draft is rejected)."""
    s += prompt + sgl.gen("step", max_tokens=max_step_tokens, stop=stops, temperature=temp,
                          top_p=top_p_)
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
    result = ProblemResult(problem.id, problem.question, "specreason")
    with recording(result, problem, monitor):
        with closing(speculated_steps(draft, base, problem.question, problem.choices, cfg)) as steps:
            for step in steps:
                if _keep(result, step, cfg, problem, monitor):
                    break
        _close(result, base, problem, cfg)
    return result


@sgl.function
def reason(s, problem, cfg, role, monitor=None):
    """Baseline: ``role``'s model alone, step by step, with SpecReason's stop rules; ``s`` is on
    that role's runtime. ``role.name`` "base" is the base-only baseline, "draft" the draft-only."""
    result = ProblemResult(problem.id, problem.question, role.name)
    with recording(result, problem, monitor):
        while True:
            started = time.perf_counter()
            step = _own_step(role, problem.question, _texts(result), problem.choices, cfg)
            step.wall_s = time.perf_counter() - started
            if _keep(result, step, cfg, problem, monitor):
                break
        _close(result, role, problem, cfg)
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
    with closing(speculated_steps(draft, base, "", None, cfg, tidy=str, stop=stops,
                                  budget=max_tokens)) as steps:
        for step in steps:
            result.steps.append(step)
            if on_step is not None:
                on_step(step)
            if step.ended or sum(st.kept_tokens for st in result.steps) >= max_tokens:
                break
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
        prompt = role.template.reasoning(problem.question, [], problem.choices)
        text, meta = call(base_step, role.backend, prompt=prompt, max_step_tokens=cfg.token_budget,
                          temp=cfg.base_temperature, top_p_=cfg.top_p, stops=[])
        inner = meta.get("specreason")
        if inner is not None:
            result.steps = inner.steps
        else:
            result.steps = [_own_step(role, problem.question, [], problem.choices, cfg, str,
                                      reply=(text, meta))]
        result.text = text
        finish = meta.get("finish_reason") or {}
        result.stop_reason = FINISHED if has_answer(text) else finish.get("type", "")
        if monitor is not None:
            for step in result.steps:
                monitor.on_step(problem, step)
    return result


# -- the SpecReason loop, shared by the top programs --------------------------------------------

def speculated_steps(draft, base, q, choices, cfg, tidy=clean_step, stop=STEP_SEPARATOR, budget=None):
    """Yield the kept steps one by one, each drafted and judged (or written by the base model).

    ``tidy`` cleans a step before it is kept; ``budget`` caps each step at the kept tokens left.
    With ``cfg.pipeline`` or ``cfg.race_base_step`` the same steps come from
    ``overlapped_steps``, which begins work on a guess beside the judgement."""
    if cfg.pipeline or cfg.race_base_step:
        yield from overlapped_steps(draft, base, q, choices, cfg, tidy, stop, budget)
        return

    def next_step(texts, kept, limit):
        # 1. the draft model writes the step (num_drafts candidates)
        drafts = _drafts(draft, q, texts, choices, cfg, stop, limit)
        # 2. the base model scores it (or the drafts score each other)
        step = _judged_step(base, q, texts, choices, cfg, drafts, tidy)
        # 3. keep it, or the base model writes the step itself
        if step.score < cfg.threshold:
            step.replace_with(_own_step(base, q, texts, choices, cfg, tidy, stop, limit))
        return step

    yield from _kept_steps(base, q, choices, cfg, tidy, stop, budget, next_step)


def overlapped_steps(draft, base, q, choices, cfg, tidy=clean_step, stop=STEP_SEPARATOR, budget=None):
    """``speculated_steps`` with work begun on a guess while each step is judged: with
    ``cfg.pipeline`` the next step's drafts, as if this step will be kept; with
    ``cfg.race_base_step`` the base model's own step, as if it will not. The guess that proves
    wrong is aborted and its calls stay in the trace as "wasted"."""
    ahead = rival = None  # ahead: the next step's drafts; rival: the base model's own step
    step = None  # the latest step: what aborted work is charged to

    def next_step(texts, kept, limit):
        nonlocal ahead, rival, step
        # 1. the draft model writes the step, unless it was drafted while the last was judged
        drafts = ahead.result() if ahead else _drafts(draft, q, texts, choices, cfg, stop, limit)
        ahead = rival = None
        if cfg.pipeline:  # guess: this step is kept
            ahead = start(_drafts, draft, q, texts + [tidy(drafts[0][0])], choices, cfg, stop,
                          _room(cfg, budget, kept + _tokens(drafts[0])))
        if cfg.race_base_step:  # guess: it is not
            rival = start(_reply, base, q, texts, choices, cfg, stop, limit)
        # 2. the base model scores it
        step = _judged_step(base, q, texts, choices, cfg, drafts, tidy)
        # 3. keep it, or the base model writes the step itself; drop the wrong guess
        if step.score < cfg.threshold:
            ahead = _drop(step, ahead, DRAFT)
            reply, rival = rival and rival.result(), None
            step.replace_with(_own_step(base, q, texts, choices, cfg, tidy, stop, limit, reply))
        else:
            rival = _drop(step, rival, BASE)
        return step

    try:
        yield from _kept_steps(base, q, choices, cfg, tidy, stop, budget, next_step)
    finally:  # stopped (or failed) with work under way that no step will use
        _drop(step, ahead, DRAFT)
        _drop(step, rival, BASE)


def _kept_steps(base, q, choices, cfg, tidy, stop, budget, next_step):
    """What both loops share: the base model writes the first ``cfg.first_n_base_steps``
    steps, ``next_step(texts, kept, limit)`` every later one; each is timed and yielded."""
    texts, kept = [], 0
    while True:
        started = time.perf_counter()
        limit = _room(cfg, budget, kept)
        if len(texts) < cfg.first_n_base_steps:
            step = _own_step(base, q, texts, choices, cfg, tidy, stop, limit)
        else:
            step = next_step(texts, kept, limit)
        step.wall_s = time.perf_counter() - started
        texts.append(step.text)
        kept += step.kept_tokens
        yield step


def _room(cfg, budget, used):
    """New tokens the next step may take, with ``used`` kept tokens of ``budget`` spent."""
    return cfg.step_max_tokens if budget is None else max(1, min(cfg.step_max_tokens, budget - used))


def _drafts(draft, q, texts, choices, cfg, stop, limit, cancel=None):
    return call(draft_steps, draft.backend, prompt=draft.template.reasoning(q, texts, choices),
                num_drafts=cfg.num_drafts, max_step_tokens=limit, temp=cfg.draft_temperature,
                top_p_=cfg.top_p, stops=stop, logprobs=get_judge(cfg.score_method).needs_draft_logprobs,
                cancel=cancel)


def _reply(role, q, texts, choices, cfg, stop, limit, cancel=None):
    return call(base_step, role.backend, prompt=role.template.reasoning(q, texts, choices),
                max_step_tokens=limit, temp=cfg.temperature(role.name), top_p_=cfg.top_p, stops=stop,
                cancel=cancel)


def _tokens(reply):
    return reply[1].get("completion_tokens", 0)


def _ended(meta):
    """The reply ended the text (end of sequence or a caller's stop string), not at a step
    separator or the length limit."""
    finish = meta.get("finish_reason") or {}
    return isinstance(finish, dict) and finish.get("type") == "stop" and finish.get("matched") != STEP_SEPARATOR


def _judged_step(base, q, texts, choices, cfg, drafts, tidy):
    """Judge each draft with ``cfg.score_method``; the best scoring one as a step."""
    judge = get_judge(cfg.score_method)
    candidates = [tidy(text) for text, _ in drafts]
    verdicts, lengths = [], []
    if judge.asks != NOTHING:
        verdicts, lengths = _ask_base(base, q, texts, choices, cfg, judge.asks, candidates)
    scores = judge.score(Candidates(q, len(texts), cfg.seed, candidates, [m for _, m in drafts],
                                    verdicts, lengths))
    best = max(range(len(drafts)), key=lambda i: scores[i].value)
    text, meta = drafts[best]
    tokens = _tokens(drafts[best])
    return Step(len(texts), DRAFT, candidates[best], tokens, draft_text=text, draft_tokens=tokens,
                score=scores[best].value, score_digits=scores[best].digits,
                score_signals=scores[best].signals, draft_scores=[sc.value for sc in scores],
                ended=_ended(meta),
                calls=[Call.from_meta(DRAFT, "draft", m) for _, m in drafts]
                + [Call.from_meta(BASE, "judge", v) for v in verdicts])


def _ask_base(base, q, texts, choices, cfg, asks, candidates):
    """The base runtime's reply on each candidate (one prefill, one token each), and each
    candidate's length in base tokens (for judges that read the step's own log-probs)."""
    prefix = base.template.reasoning(q, texts, choices)
    if asks == QUESTION:  # the paper's question after the step
        prompts = [base.template.judge(q, texts + [c], choices) for c in candidates]
        start_, lengths = None, [None] * len(candidates)
    else:  # the step's own log-probabilities, read from one prefill of it
        prompts = [base.template.reasoning(q, texts + [c], choices) for c in candidates]
        start_, lengths = step_spans(base.backend, prefix, candidates)
    verdicts = call(judge_steps, base.backend, prefix=prefix,
                    continuations=[p[len(prefix):] for p in prompts],
                    top_logprobs=cfg.judge_top_logprobs, logprob_start=start_)
    return verdicts, lengths


def _own_step(role, q, texts, choices, cfg, tidy=clean_step, stop=STEP_SEPARATOR, limit=None,
              reply=None):
    """The next step written by ``role``'s model (``reply``: its reply, if already asked)."""
    text, meta = reply or _reply(role, q, texts, choices, cfg, stop, limit or cfg.step_max_tokens)
    tokens = meta.get("completion_tokens", 0)
    step = Step(len(texts), role.name, tidy(text), tokens, ended=_ended(meta),
                calls=[Call.from_meta(role.name, "step", meta)])
    if role.name == BASE:
        step.base_text, step.base_tokens = text, tokens
    else:
        step.draft_text, step.draft_tokens = text, tokens
    return step


def _drop(step, pending, role):
    """Abort work begun on a guess that proved wrong; what it cost stays in ``step``'s trace as
    "wasted" calls. Returns None (nothing pending any more)."""
    if pending is None:
        return None
    done = pending.cancel()
    replies = done if isinstance(done, list) else [done] if done else []
    if step is not None:
        step.calls += [Call.from_meta(role, "wasted", meta) for _, meta in replies]
    return None


def _texts(result):
    return [step.text for step in result.steps]


def _keep(result, step, cfg, problem, monitor):
    """Append the step; the stop reason, or None to go on."""
    if monitor is not None:
        monitor.on_step(problem, step)
    result.steps.append(step)
    texts = _texts(result)
    result.text = STEP_SEPARATOR.join(texts)
    result.stop_reason = stop_reason(texts, sum(st.kept_tokens for st in result.steps),
                                     cfg.token_budget)
    return result.stop_reason


def _close(result, role, problem, cfg):
    """Reasoning stopped without an answer: the model states one after ``</think>``."""
    if result.stop_reason == FINISHED:
        return
    text, meta = call(final_answer, role.backend,
                      prompt=role.template.answer(problem.question, _texts(result), problem.choices),
                      max_answer_tokens=cfg.answer_max_tokens, temp=cfg.temperature(role.name),
                      top_p_=cfg.top_p)
    result.answer_call = Call.from_meta(role.name, "answer", meta)
    result.text += STEP_SEPARATOR + text
