"""The sub-programs of SpecReason: each runs on one runtime (``.run(backend=...)``) and sends
one request, or one per fork. They take a ``cancel`` argument (a ``calls.CancelScope``) so that
work begun on a guess can be aborted when the guess is wrong.
"""

import sglang as sgl

from sgl_specreason.calls import gen_result
from sgl_specreason.templates import STEP_SEPARATOR


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
def base_step(s, prompt, max_step_tokens, temp, top_p_, stops=STEP_SEPARATOR, logprobs=None, cancel=None):
    """The next step written by the model itself (the base model when a draft is rejected); with
    ``logprobs`` (a number of top alternatives, 0 for none) the reply carries the log-probability
    of each token it wrote."""
    s += prompt + sgl.gen("step", max_tokens=max_step_tokens, stop=stops, temperature=temp,
                          top_p=top_p_, **_with_logprobs(logprobs))
    return gen_result(s, "step")


def _with_logprobs(logprobs):
    if logprobs is None:
        return {}
    return {"return_logprob": True, "top_logprobs_num": logprobs or None, "return_text_in_logprobs": True}


@sgl.function
def final_answer(s, prompt, max_answer_tokens, temp, top_p_, logprobs=None):
    """The answer after the closed reasoning, when the steps stopped without one."""
    s += prompt + sgl.gen("answer", max_tokens=max_answer_tokens, temperature=temp, top_p=top_p_,
                          **_with_logprobs(logprobs))
    return gen_result(s, "answer")


@sgl.function
def constrained_gen(s, prompt, max_new, temp, top_p_, regex=None, json_schema=None, freq_penalty=None,
                    pres_penalty=None, stop_ids=None, ignore_eos_=None, stops=(), logprobs=None, cancel=None):
    """The whole reply under constrained decoding (a regular expression or a JSON schema), by the
    model alone in one request: what a request that asks for structured output gets."""
    s += prompt + sgl.gen("text", max_tokens=max_new, temperature=temp, top_p=top_p_, regex=regex,
                          json_schema=json_schema, frequency_penalty=freq_penalty,
                          presence_penalty=pres_penalty, stop_token_ids=stop_ids, ignore_eos=ignore_eos_,
                          stop=list(stops) or None, **_with_logprobs(logprobs))
    return gen_result(s, "text")
