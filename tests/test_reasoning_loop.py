"""A run ends where the model ends it: the SpecReason loop on fake runtimes that write like a
reasoning model (``<think>`` ... ``</think>``, then an answer) or like a chat model that ends its
reply, under the ``plain`` framing, and the ``paper`` framing's rules kept beside them."""

import pytest

from fake_runtime import END, OneStepRuntime as Runtime, script
from own_templates import offline_template, r1_template, thinking_r1_template
from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.problems import make_problem
from sgl_specreason.programs import reason, specreason
from sgl_specreason.stopping import BUDGET, ENDED, FINISHED, THOUGHT
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import BASE, DRAFT

pytestmark = pytest.mark.timeout(120)

SMALL = dict(token_budget=400, step_max_tokens=60, answer_max_tokens=40, seed=0)
BASE_ANSWER = "The base model says: 4."


def run(template, draft, base=script("base writes."), framing="plain", score=9, mode="specreason", **changes):
    draft_rt = Runtime(DRAFT, draft, model_path="/models/fake-draft")
    base_rt = Runtime(BASE, base, score=lambda step: score, answer=BASE_ANSWER, model_path="/models/fake-base")
    cfg = SpecReasonConfig(**{**SMALL, "framing": framing, **changes})
    problem = make_problem("What is 2 + 2?", id="q")
    if mode == "specreason":
        state = specreason.run(problem=problem, cfg=cfg, draft=Role(DRAFT, draft_rt, template),
                               base=Role(BASE, base_rt, template), backend=base_rt)
    else:
        state = reason.run(problem=problem, cfg=cfg, role=Role(BASE, base_rt, template), backend=base_rt)
    assert state.error() is None, state.error()
    result = state.ret_value
    assert result.error is None, result.error
    return result, draft_rt, base_rt


def test_a_reasoning_model_ends_its_reasoning_at_think_close_and_the_base_model_answers():
    # R1's own template; the draft opens and closes its thinking itself, and writes an answer
    # right after </think> in the same step: that answer is dropped, the base model writes it
    result, draft, base = run(r1_template(), script("<think>I add 2 and 2.", "That makes 4.",
                                                    "Sure.\n</think>\nThe draft says: 4."))
    assert result.stop_reason == THOUGHT
    assert [s.text for s in result.steps] == ["<think>I add 2 and 2.", "That makes 4.", "Sure.\n</think>"]
    assert result.reasoning == "I add 2 and 2.\n\nThat makes 4.\n\nSure."
    assert result.content == BASE_ANSWER and "draft says" not in result.text
    assert not [r for r in draft.requests if r.kind == "answer"]
    [answered] = [r for r in base.requests if r.kind == "answer"]
    assert answered.prompt.endswith("Sure.\n</think>" + STEP_SEPARATOR)
    assert result.answer_call is not None and result.answer_call.role == BASE


def test_a_template_that_opens_thinking_has_its_thinking_ended_the_same_way():
    own = thinking_r1_template()
    result, draft, base = run(own, script("I add 2 and 2.", "4.\n</think>"))
    assert result.stop_reason == THOUGHT
    assert draft.requests[0].prompt.endswith("<\uff5cAssistant\uff5c><think>\n")
    assert result.reasoning == "I add 2 and 2.\n\n4." and result.content == BASE_ANSWER


def test_the_base_model_alone_ends_at_think_close_too():
    result, _, base = run(r1_template(), None, base=script("<think>Hm.", "4.</think>"), mode="reason")
    assert result.stop_reason == THOUGHT and result.content == BASE_ANSWER


def test_a_chat_model_ends_the_run_where_it_ends_its_reply():
    own = offline_template("smollm2-135m")
    result, draft, base = run(own, script("Dear Sam,", "Thanks for the answer: 4." + END))
    assert result.stop_reason == ENDED
    assert result.answer_call is None and not [r for r in base.requests if r.kind == "answer"]
    # no thinking: the steps are the reply itself
    assert result.reasoning == "" and result.content == "Dear Sam,\n\nThanks for the answer: 4."
    assert "Solve the following" not in draft.requests[0].prompt


def test_under_plain_an_answer_marker_does_not_end_the_run():
    own = offline_template("smollm2-135m")
    result, *_ = run(own, script("Answer: is a word.", "so \\boxed{x} is LaTeX.", "Done." + END))
    assert result.stop_reason == ENDED and len(result.steps) == 3


def test_a_reply_cut_by_the_budget_gets_no_answer_written_after_it():
    own = offline_template("smollm2-135m")
    result, _, base = run(own, script("More words, and more words."), token_budget=60)
    assert result.stop_reason in (BUDGET, "repeated")
    assert result.answer_call is None and result.content.startswith("More words")


def test_thinking_cut_by_the_budget_is_closed_and_answered():
    result, _, base = run(r1_template(), script("<think>Hm.", "Still thinking, thinking more."), token_budget=60)
    assert result.stop_reason in (BUDGET, "repeated")
    [answered] = [r for r in base.requests if r.kind == "answer"]
    assert answered.prompt.endswith("</think>" + STEP_SEPARATOR) and result.content == BASE_ANSWER


def test_under_paper_an_ended_step_ends_the_run_and_todays_rules_stay():
    own = offline_template("smollm2-135m")
    # a stray </think> without an answer is deleted and the thinking goes on (the paper's rule)
    result, *_ = run(own, script("I add.</think>", "so \\boxed{4}"), framing="paper")
    assert result.stop_reason == FINISHED and result.steps[0].text == "I add."
    result, _, base = run(own, script("I add.", "It is 4." + END), framing="paper")
    assert result.stop_reason == ENDED
    # the paper's closing answer after </think>, as for every stop without one
    [answered] = [r for r in base.requests if r.kind == "answer"]
    assert answered.prompt.endswith("It is 4.\n\n</think>\n\n")
    assert result.reasoning == "I add.\n\nIt is 4." and result.content == BASE_ANSWER
