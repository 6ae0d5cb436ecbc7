"""A real reasoning model's template: DeepSeek-R1-Distill-Qwen-7B's tokenizer and chat template,
read from the GGUF header in the first part of its published file (``own_templates``).

The embedded template is the older revision: its generation prompt is ``<｜Assistant｜>`` alone
(the model writes ``<think>`` itself), and it renders an assistant message only from after its
last ``</think>``, so a continued message with a closed thinking block is refused by
transformers. It takes the ``markers`` way."""

import pytest

from own_templates import Retemplated, r1_template, r1_tokenizer, thinking_r1_template
from sgl_specreason.framing import PAPER, PLAIN, frame
from sgl_specreason.rendering import MARKERS, OwnTemplate
from sgl_specreason.templates import JUDGE_INSTRUCTION, STEP_SEPARATOR, TEMPLATES

pytestmark = pytest.mark.timeout(300)

BOS, USER, ASSISTANT, EOS = ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cUser\uff5c>",
                             "<\uff5cAssistant\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
QUESTION = "What is 2 + 2?"
THOUGHTS = ["<think>I add 2 and 2.", "That makes 4.", "Sure.\n</think>"]  # the model opens and closes itself


def own_rendering(messages, **how):
    chat = [{"role": role, "content": content} for role, content in messages]
    return r1_tokenizer().apply_chat_template(chat, tokenize=False, **how)


def test_what_the_embedded_template_does_with_think():
    assert own_rendering([("user", "Hi")], add_generation_prompt=True) == BOS + USER + "Hi" + ASSISTANT
    # an earlier assistant message keeps only what follows its </think>
    assert own_rendering([("user", "Hi"), ("assistant", "<think>hm</think>Hello."), ("user", "Bye")]) == \
        BOS + USER + "Hi" + ASSISTANT + "Hello." + EOS + USER + "Bye"
    with pytest.raises(ValueError, match="final message does not appear"):
        own_rendering([("user", "Hi"), ("assistant", "<think>hm\n\n</think>\n\n")], continue_final_message=True)
    own = r1_template()
    assert own.way == MARKERS and own.markers == ("<think>", "</think>")
    assert own.bos is None  # this tokenizer's encoding adds no BOS: the template's stays


@pytest.mark.parametrize("framing", [PAPER, PLAIN])
def test_every_prompt_extends_the_last_through_the_end_of_thinking(framing):
    own = r1_template()
    talk = frame([("user", QUESTION)], framing, templates=[own])
    assert talk.think is (framing == PAPER)  # this revision's generation prompt opens no thinking
    head = own_rendering(talk.messages, add_generation_prompt=True)
    steps = THOUGHTS if framing == PLAIN else [s.replace("<think>", "") for s in THOUGHTS[:2]]
    previous = own.reasoning(talk, [])
    assert previous == head + ("<think>" if framing == PAPER else "")
    for k in range(1, len(steps) + 1):
        reasoning = own.reasoning(talk, steps[:k])
        assert reasoning.startswith(previous) and len(reasoning) > len(previous)
        assert reasoning == head + ("<think>" if framing == PAPER else "") + "".join(
            s + STEP_SEPARATOR for s in steps[:k])
        judge = own.judge(talk, steps[:k])
        assert judge == reasoning + EOS + USER + JUDGE_INSTRUCTION + ASSISTANT + "<think>I think the quality score is: "
        previous = reasoning
    answer = own.answer(talk, steps)
    assert answer.startswith(previous)
    # the answer follows the closed thinking: the model's own </think>, or the one added
    assert answer.endswith("</think>" + STEP_SEPARATOR)
    assert answer.count("</think>") == 1


def test_paper_prompts_are_the_models_own_rendering_where_it_keeps_the_text():
    own = r1_template()
    steps = ["I add 2 and 2.", "That makes 4."]
    text = "<think>" + "".join(s + STEP_SEPARATOR for s in steps)
    assert own.reasoning(QUESTION, steps) == own_rendering(
        [*frame([("user", QUESTION)]).messages, ("assistant", text)], continue_final_message=True)
    # and the bytes of the hand-written DeepSeek-R1 template, after the BOS this tokenizer keeps
    assert own.judge(QUESTION, steps) == BOS + TEMPLATES["deepseek-r1"].judge(QUESTION, steps)


def test_a_tokenizer_that_adds_its_bos_itself_gets_prompts_without_one():
    own = OwnTemplate(Retemplated(r1_tokenizer(), adds_bos=True), "R1 (adds BOS)")
    assert own.bos == BOS
    assert own.reasoning(QUESTION, ["a"]) == TEMPLATES["deepseek-r1"].reasoning(QUESTION, ["a"])


def test_a_template_whose_generation_prompt_opens_thinking():
    own = thinking_r1_template()
    assert own.way == MARKERS
    talk = frame([("user", QUESTION)], PLAIN, templates=[own])
    assert talk.think and own.thinks(talk)
    head = BOS + USER + QUESTION + ASSISTANT + "<think>\n"
    assert own.reasoning(talk, ["I add.", "4.\n</think>"]) == head + "I add.\n\n4.\n</think>\n\n"
    # the paper's opening <think> is not written twice, nor the judge's
    assert own.reasoning(QUESTION, ["I add."]).count("<think>") == 1
    judge = own.judge(talk, ["I add."])
    assert judge == head + "I add.\n\n" + EOS + USER + JUDGE_INSTRUCTION + ASSISTANT + "<think>\nI think the quality score is: "
    assert own.answer(talk, ["I add."]) == head + "I add.\n\n</think>\n\n"
