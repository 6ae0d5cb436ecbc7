"""The SpecReason loop on scripted fake runtimes (``fake_runtime``): every mode, rule and stop
condition in milliseconds, with no model. The same behaviour against real SGLang servers is
checked by the ``*_on_runtimes`` tests."""


import pytest
import sglang as sgl

from fake_runtime import DRAFT_LOGPROB, FakeRuntime, fake_roles
from sgl_specreason.programs import continuation, one_gen, reason, specreason
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.dropin import SPECREASON, SpecReasonBackend
from sgl_specreason.problems import make_problem
from sgl_specreason.runner import Monitor, run_problems
from sgl_specreason.judges.llr import log_ratio_score
from sgl_specreason.judges.random_control import random_score
from sgl_specreason.trace import BASE, DRAFT

pytestmark = pytest.mark.timeout(30)

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have now?"
SMALL = dict(token_budget=400, step_max_tokens=40, answer_max_tokens=30, seed=0)


def draft_writes(steps, fork):
    """Step k: "d<k>: k + 1 = k+1."; the fourth states the answer."""
    k = len(steps)
    return "so \\boxed{5}" if k >= 3 else f"d{k}: {k} + 1 = {k + 1}."


def base_writes(steps, fork):
    k = len(steps)
    return "thus \\boxed{5}" if k >= 3 else f"b{k}: {k} + 1 = {k + 1}!"


def runtimes(draft=draft_writes, base=base_writes, score=lambda step: 9, **delays):
    """Fake draft and base runtimes; ``delays``: seconds per request kind of each
    (``draft_step``, ``base_step``, ``base_judge``, ...), or a callable of the kept steps."""
    def delay_of(role):
        def delay(kind, steps):
            value = delays.get(f"{role}_{kind}", 0.0)
            return value(steps) if callable(value) else value
        return delay
    return (FakeRuntime(DRAFT, draft, delay=delay_of(DRAFT)),
            FakeRuntime(BASE, base, score=score, delay=delay_of(BASE)))


def hold_judgements(draft, base, cfg):
    """Hold each judgement back until the work begun beside it (the next step's draft, the base
    model's own step) has been sent: work cancelled before it is sent leaves no call, so without
    this the trace would depend on thread timing."""
    own_delay = base.delay

    def delay(kind, steps):
        if kind == "judge" and cfg.pipeline:
            draft.wait_for(lambda r: r.steps == steps)
        if kind == "judge" and cfg.race_base_step:
            base.wait_for(lambda r: r.kind == "step" and r.steps == steps[:-1])
        return own_delay(kind, steps)
    base.delay = delay


def solve(draft, base, **changes):
    cfg = SpecReasonConfig(**{**SMALL, **changes})
    hold_judgements(draft, base, cfg)
    roles = fake_roles(draft, base)
    state = specreason.run(problem=make_problem(QUESTION, id="apples", answer="5"), cfg=cfg,
                           draft=roles[DRAFT], base=roles[BASE], backend=base)
    assert state.error() is None, state.error()
    result = state.ret_value
    assert result.error is None, result.error
    return result


def kinds(step):
    return [(c.role, c.kind) for c in step.calls]


# -- sequential ---------------------------------------------------------------------------------

def test_accepted_drafts_are_kept_one_draft_and_one_judgement_each():
    draft, base = runtimes()
    result = solve(draft, base, threshold=7, score_method="greedy")
    assert [s.text for s in result.steps] == ["d0: 0 + 1 = 1.", "d1: 1 + 1 = 2.", "d2: 2 + 1 = 3.",
                                              "so \\boxed{5}"]
    for step in result.steps:
        assert step.source == DRAFT and step.score == 9 and step.kept_tokens == len(step.text)
        assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge")]
    assert result.stop_reason == "finished" and result.correct and result.answer_call is None
    assert [r.kind for r in base.requests] == ["judge"] * 4
    # the paper's judge is asked its question after the step, with the top log-probs
    judge = base.requests[0]
    assert judge.prompt.endswith("I think the quality score is: ") and judge.params["top_logprobs_num"] == 10
    assert result.totals().acceptance_rate == 1.0


def test_a_rejected_draft_is_rewritten_by_the_base_model():
    draft, base = runtimes(score=lambda step: 2 if step.startswith("d1") else 8)
    result = solve(draft, base, threshold=7, score_method="average")
    rejected = result.steps[1]
    assert rejected.source == BASE and rejected.text == "b1: 1 + 1 = 2!" and rejected.score == 2
    assert rejected.draft_text == "d1: 1 + 1 = 2." and rejected.base_tokens == rejected.kept_tokens
    assert kinds(rejected) == [(DRAFT, "draft"), (BASE, "judge"), (BASE, "step")]
    assert [s.source for s in result.steps] == [DRAFT, BASE, DRAFT, DRAFT]
    # the next draft continues from the base model's step
    assert draft.requests[2].steps == ["d0: 0 + 1 = 1.", "b1: 1 + 1 = 2!"]
    totals = result.totals()
    assert totals.acceptance_rate == 0.75 and totals.kept_base_tokens == len("b1: 1 + 1 = 2!")


@pytest.mark.parametrize("method", ["likelihood", "likelihood-min", "likelihood-numbers"])
def test_likelihood_judges_read_the_steps_own_log_probs(method):
    draft, base = runtimes(score=lambda step: 5.5 if step.startswith("d2") else 8.25)
    result = solve(draft, base, threshold=6, score_method=method)
    assert [s.score for s in result.steps] == [8.25, 8.25, 5.5, 8.25]
    assert [s.source for s in result.steps] == [DRAFT, DRAFT, BASE, DRAFT]
    assert set(result.steps[0].score_signals) == {"likelihood", "likelihood-min", "likelihood-numbers"}
    judge = next(r for r in base.requests if r.kind == "judge")
    # one prefill of the step itself, no question, log-probs from one token before the step
    assert "Evaluate" not in judge.prompt and judge.prompt.endswith("d0: 0 + 1 = 1.\n\n")
    assert judge.params["logprob_start_len"] == judge.prompt.index("d0:") - 1


def test_the_first_steps_are_the_base_models_own_and_not_judged():
    draft, base = runtimes()
    result = solve(draft, base, threshold=7, first_n_base_steps=2)
    assert [s.source for s in result.steps] == [BASE, BASE, DRAFT, DRAFT]
    for step in result.steps[:2]:
        assert step.score is None and step.draft_text is None and kinds(step) == [(BASE, "step")]
    assert draft.requests[0].steps == ["b0: 0 + 1 = 1!", "b1: 1 + 1 = 2!"]


# -- stop rules and budgets -----------------------------------------------------------------------

def test_the_token_budget_stops_reasoning_and_the_model_states_its_answer():
    draft, base = runtimes()
    result = solve(draft, base, threshold=7, token_budget=20)
    assert len(result.steps) == 2 and result.stop_reason == "budget"
    assert result.answer_call is not None and result.answer_call.role == BASE
    assert result.text.endswith("\n\nThe answer is \\boxed{5}.") and result.answer == "5"


def test_a_repeated_step_stops_reasoning():
    draft, base = runtimes(draft=lambda steps, fork: "I keep saying this.")
    result = solve(draft, base, threshold=7)
    assert len(result.steps) == 2 and result.stop_reason == "repeated"


def test_a_step_is_cut_at_step_max_tokens():
    draft, base = runtimes(draft=lambda steps, fork: "x" * 100 if not steps else "so \\boxed{5}")
    result = solve(draft, base, threshold=7, step_max_tokens=12)
    assert result.steps[0].kept_tokens == 12 and draft.requests[0].params["max_new_tokens"] == 12
    assert result.steps[0].calls[0].finish_reason == "length"


# -- pipelined and raced --------------------------------------------------------------------------

def test_pipelined_drafts_are_kept_when_accepted():
    draft, base = runtimes()
    result = solve(draft, base, threshold=7, pipeline=True)
    assert [s.source for s in result.steps] == [DRAFT] * 4
    *middle, last = result.steps
    for step in middle:
        assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge")]
    # the step after the answer was drafted while the answer was judged: wasted, not lost
    assert kinds(last) == [(DRAFT, "draft"), (BASE, "judge"), (DRAFT, "wasted")]
    # each draft was begun on the guess that the step before it is kept
    assert [r.steps for r in draft.requests[:3]] == [[], ["d0: 0 + 1 = 1."], ["d0: 0 + 1 = 1.", "d1: 1 + 1 = 2."]]


def test_a_pipelined_draft_begun_on_a_rejected_step_is_aborted():
    # a draft written after a rejected guess would take seconds: only the abort ends it early
    rejected = "d1: 1 + 1 = 2."
    draft, base = runtimes(score=lambda step: 2 if step == rejected else 9,
                           draft_step=lambda steps: 5.0 if steps and steps[-1] == rejected else 0.0,
                           base_judge=0.05)
    result = solve(draft, base, threshold=7, pipeline=True)  # the abort shows in the finish reasons
    step = result.steps[1]
    assert step.source == BASE
    assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge"), (DRAFT, "wasted"), (BASE, "step")]
    assert step.calls[2].finish_reason == "abort"
    aborted = next(r for r in draft.requests if r.steps and r.steps[-1] == rejected)
    assert aborted.finish == {"type": "abort"}
    wasted = [c for s in result.steps for c in s.calls if c.kind == "wasted"]
    assert len(wasted) == 2 and wasted[-1] in result.steps[-1].calls  # and the one after the answer
    assert result.totals().wasted_tokens == sum(c.completion_tokens for c in wasted)
    # drafting went on after the base model's step
    assert [r.steps[-1] for r in draft.requests if len(r.steps) == 2] == [rejected, "b1: 1 + 1 = 2!"]


def test_the_base_step_races_its_judgement_and_loses_to_a_kept_draft():
    draft, base = runtimes(base_step=5.0, base_judge=0.05)
    result = solve(draft, base, threshold=7, race_base_step=True)  # each 5 s base step ends aborted
    for step in result.steps:
        assert step.source == DRAFT
        assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge"), (BASE, "wasted")]
        assert step.calls[2].finish_reason == "abort"


def test_the_racing_base_step_is_kept_when_the_draft_is_rejected():
    draft, base = runtimes(score=lambda step: 0)
    result = solve(draft, base, threshold=7, race_base_step=True)
    for step in result.steps:
        assert step.source == BASE and step.base_tokens == step.kept_tokens
        assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge"), (BASE, "step")]
    assert [r.kind for r in base.requests].count("step") == len(result.steps)  # none asked twice
    both = solve(*runtimes(score=lambda step: 0), threshold=7, race_base_step=True, pipeline=True)
    for step in both.steps:
        assert kinds(step) == [(DRAFT, "draft"), (BASE, "judge"), (DRAFT, "wasted"), (BASE, "step")]


# -- several drafts and the rules that ask the base nothing ---------------------------------------

def forked(texts):
    """A draft whose k-th fork writes texts[k] (the answer from the fourth step on)."""
    return lambda steps, fork: "so \\boxed{5}" if len(steps) >= 3 else f"{texts[fork]} ({len(steps)})"


def test_n_drafts_are_judged_together_and_the_best_kept():
    draft, base = runtimes(draft=forked(["a = 1", "b = 2", "c = 3"]),
                           score=lambda step: {"b": 8, "c": 6}.get(step[0], 4))
    result = solve(draft, base, threshold=7, num_drafts=3, score_method="greedy")
    first = result.steps[0]
    # forks are asked at once, in no set order
    assert first.text == "b = 2 (0)" and sorted(first.draft_scores) == [4, 6, 8] and first.score == 8
    assert kinds(first) == [(DRAFT, "draft")] * 3 + [(BASE, "judge")] * 3
    assert sorted(r.fork for r in draft.requests[:3]) == [0, 1, 2]


@pytest.mark.parametrize("method, scores", [("agreement", [10.0, 10.0, 10.0]),
                                            ("agreement-set", [5.0, 5.0, 0.0])])
def test_agreeing_drafts_score_each_other_without_the_base_model(method, scores):
    # every fork ends on the step's count; the third writes another number before it
    draft, base = runtimes(draft=forked(["so 7 then", "so 7 then", "with 8 so 7 then"]))
    result = solve(draft, base, threshold=7, num_drafts=3, score_method=method)
    assert sorted(result.steps[0].draft_scores) == sorted(scores)
    assert not [r for r in base.requests if r.kind == "judge"]
    assert all(c.kind != "judge" for s in result.steps for c in s.calls)


def test_the_random_control_keeps_steps_by_a_seeded_coin():
    draft, base = runtimes()
    result = solve(draft, base, threshold=5, score_method="random", seed=3)
    expected = [random_score(QUESTION, i, 0, 3) for i in range(len(result.steps))]
    assert [s.score for s in result.steps] == expected
    assert [s.source for s in result.steps] == [DRAFT if v >= 5 else BASE for v in expected]
    assert not [r for r in base.requests if r.kind == "judge"]


def test_llr_compares_the_base_models_log_prob_with_the_drafts_own():
    draft, base = runtimes(score=lambda step: 8.5)
    result = solve(draft, base, threshold=2, score_method="llr")
    assert all(r.params["return_logprob"] for r in draft.requests)  # drafts bring their log-probs
    step = result.steps[0]
    n = len(step.text)
    assert step.score == log_ratio_score([(8.5 - 10, "")] * n, DRAFT_LOGPROB * n) == 2.5
    assert step.source == DRAFT


# -- the baselines, the continuation and the drop-in backend --------------------------------------

def test_one_model_alone_reasons_with_the_same_stop_rules():
    draft, base = runtimes()
    roles = fake_roles(draft, base)
    cfg = SpecReasonConfig(**SMALL)
    result = reason.run(problem=make_problem(QUESTION, answer="5"), cfg=cfg, role=roles[BASE],
                        backend=base).ret_value
    assert [s.source for s in result.steps] == [BASE] * 4 and result.stop_reason == "finished"
    assert not draft.requests and all(kinds(s) == [(BASE, "step")] for s in result.steps)


def test_run_problems_serves_every_mode():
    problems = [make_problem(QUESTION, id=f"p{i}", answer="5") for i in range(3)]
    for mode in ("specreason", "base", "draft", "base-gen", "dropin"):
        draft, base = runtimes()
        monitor = Monitor(stream=None)
        results = run_problems(problems, SpecReasonConfig(**SMALL, score_method="likelihood-numbers",
                                                          threshold=6),
                               fake_roles(draft, base), mode, monitor, parallel=2)
        assert [r.id for r in results] == ["p0", "p1", "p2"] and all(r.correct for r in results), mode
        assert len(monitor.results) == 3


def test_a_plain_long_gen_on_the_base_runtime_is_one_call():
    draft, base = runtimes()
    roles = fake_roles(draft, base)
    result = one_gen.run(problem=make_problem(QUESTION, answer="5"), cfg=SpecReasonConfig(**SMALL),
                         role=roles[BASE], backend=base).ret_value
    assert len(result.steps) == 1 and result.stop_reason == "finished" and result.correct
    assert len(base.requests) == 1 and not draft.requests


@sgl.function
def ask(s, question, max_tokens, stops=()):
    s += "Q: " + question + "\n" + sgl.gen("answer", max_tokens=max_tokens, temperature=0.6,
                                           top_p=0.95, stop=stops)


def test_the_dropin_backend_serves_a_long_gen_with_specreason():
    draft, base = runtimes(score=lambda step: 2 if step.startswith("d1") else 8)
    backend = SpecReasonBackend(base, draft, SpecReasonConfig(score_method="likelihood-numbers",
                                                              threshold=6, step_max_tokens=40),
                                min_tokens=32)
    state = ask.run(question=QUESTION, max_tokens=200, backend=backend)
    assert state.error() is None, state.error()
    meta = state.get_meta_info("answer")
    result = meta[SPECREASON]
    assert state["answer"] == "d0: 0 + 1 = 1.\n\nb1: 1 + 1 = 2!\n\nd2: 2 + 1 = 3.\n\nso \\boxed{5}"
    assert [s.source for s in result.steps] == [DRAFT, BASE, DRAFT, DRAFT]
    assert result.stop_reason == "stop" and result.steps[-1].ended
    assert meta["completion_tokens"] == len(state["answer"]) - 3 * len("\n\n")
    assert backend.calls == {SPECREASON: 1, BASE: 0}
    # the draft continues the program's own text, not a chat prompt
    assert draft.requests[0].prompt == "Q: " + QUESTION + "\n"


def test_the_dropin_gen_ends_at_its_budget_and_stop_strings():
    draft, base = runtimes()
    cfg = SpecReasonConfig(score_method="likelihood", threshold=6, step_max_tokens=40)
    backend = SpecReasonBackend(base, draft, cfg, min_tokens=16)
    state = ask.run(question=QUESTION, max_tokens=20, backend=backend)
    meta = state.get_meta_info("answer")
    assert meta["completion_tokens"] <= 20 + len("d1: 1 + 1 = 2.") and meta["finish_reason"]["type"] == "length"
    # every step's room is the budget left: the second step may take 6 tokens at most
    assert [r.params["max_new_tokens"] for r in draft.requests[:2]] == [20, 6]
    stopped = ask.run(question=QUESTION, max_tokens=200, stops="+", backend=backend)
    meta = stopped.get_meta_info("answer")
    assert stopped["answer"] == "d0: 0 " and meta["finish_reason"]["type"] == "stop"
    assert meta[SPECREASON].steps[-1].ended


def test_continuation_streams_each_kept_step():
    draft, base = runtimes()
    seen = []
    cfg = SpecReasonConfig(score_method="likelihood", threshold=6, step_max_tokens=40)
    from sgl_specreason.calls import Role
    from sgl_specreason.templates import Continuation, TEMPLATES
    template = Continuation("Q: 2 + 3?\n<think>", TEMPLATES["smollm2"])
    result = continuation.run(cfg=cfg, draft=Role(DRAFT, draft, template), base=Role(BASE, base, template),
                              max_tokens=500, on_step=seen.append, backend=base).ret_value
    assert [s.text for s in seen] == [s.text for s in result.steps] and len(seen) == 4
    assert result.text.endswith("so \\boxed{5}") and result.stop_reason == "stop"
