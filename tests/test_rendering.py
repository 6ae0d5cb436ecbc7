"""Prompts from the offline models' own chat templates: every prompt is what the tokenizer's
``apply_chat_template`` gives for the same conversation, each extends the last, and under the
``paper`` framing the bytes are those the hand-written templates gave before (the shipped
records stay comparable)."""

import pytest

from own_templates import offline_template, offline_tokenizer
from sgl_specreason import models
from sgl_specreason.errors import ConfigError
from sgl_specreason.framing import PAPER, PLAIN, frame
from sgl_specreason.rendering import CONTINUED, OwnTemplate, model_template
from sgl_specreason.templates import (
    JUDGE_ANSWER_PREFIX,
    JUDGE_INSTRUCTION,
    STEP_SEPARATOR,
    TEMPLATES,
    ChatTemplate,
)

pytestmark = pytest.mark.timeout(300)

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have now?"
CHOICES = ["4", "5", "6"]
STEPS = ["Tom starts with 3 apples.", "He buys 2 more: 3 + 2 = 5.", "So \\boxed{5}."]
CHAT = [("system", "Be brief."), ("user", "Write a haiku."), ("assistant", "Leaves fall.\nRed, gold."),
        ("user", "Now one about snow.")]
NAMES = list(models.MODELS)


def own_rendering(name, messages, **how):
    chat = [{"role": role, "content": content} for role, content in messages]
    return offline_tokenizer(name).apply_chat_template(chat, tokenize=False, **how)


def continued(name, messages, text):
    return own_rendering(name, [*messages, ("assistant", text)], continue_final_message=True)


@pytest.mark.parametrize("name", NAMES)
def test_the_local_models_templates_are_continued_directly(name):
    assert offline_template(name).way == CONTINUED
    assert offline_template(name).markers == ("<think>", "</think>")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("framing", [PAPER, PLAIN])
@pytest.mark.parametrize("messages", [[("user", QUESTION)], CHAT], ids=["question", "chat"])
def test_every_prompt_is_the_models_own_rendering_and_extends_the_last(name, framing, messages):
    own = offline_template(name)
    talk = frame(messages, framing, templates=[own])
    opener = "<think>" if framing == PAPER else ""
    previous = own_rendering(name, talk.messages, add_generation_prompt=True)
    assert own.conversation(talk) == previous
    for k in range(len(STEPS) + 1):
        text = opener + "".join(step + STEP_SEPARATOR for step in STEPS[:k])
        reasoning = own.reasoning(talk, STEPS[:k])
        assert reasoning == (continued(name, talk.messages, text) if text else previous)
        assert reasoning.startswith(previous) and (k == 0 or len(reasoning) > len(previous))
        judge = own.judge(talk, STEPS[:k])
        assert judge == own_rendering(name, [*talk.messages, ("assistant", text), ("user", JUDGE_INSTRUCTION),
                                             ("assistant", JUDGE_ANSWER_PREFIX)], continue_final_message=True)
        assert judge.startswith(reasoning)
        assert own.answer(talk, STEPS[:k]).startswith(reasoning)
        previous = reasoning


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("choices", [None, CHOICES])
def test_paper_prompts_are_the_bytes_of_the_hand_written_templates(name, choices):
    own, hand = offline_template(name), TEMPLATES[models.MODELS[name].template]
    for k in range(len(STEPS) + 1):
        assert own.reasoning(QUESTION, STEPS[:k], choices) == hand.reasoning(QUESTION, STEPS[:k], choices)
        assert own.judge(QUESTION, STEPS[:k], choices) == hand.judge(QUESTION, STEPS[:k], choices)
        assert own.answer(QUESTION, STEPS[:k], choices) == hand.answer(QUESTION, STEPS[:k], choices)
    # a conversation (system text, earlier turns) too, as serve framed one before
    talk = frame(CHAT, PAPER)
    assert own.judge(talk, STEPS) == hand.judge(talk, STEPS)


def test_the_hand_written_paper_prompt_is_pinned():
    # what the shipped records were made with, byte for byte
    assert TEMPLATES["qwen"].reasoning("1+1?", ["a"]) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nSolve the following math problem efficiently and clearly. Please reason step by "
        "step, separate logical reasoning steps with two newline characters (\\n\\n), and put your final "
        "answer within \\boxed{}.\nProblem: 1+1?<|im_end|>\n<|im_start|>assistant\n<think>a\n\n")


def test_a_plain_conversation_is_the_users_own_words():
    own = offline_template("qwen2.5-coder-1.5b")
    talk = frame(CHAT, PLAIN, templates=[own])
    assert not talk.think  # Qwen2.5 does not open thinking: the steps are the reply itself
    prompt = own.reasoning(talk, ["Snow falls."])
    assert "Solve the following" not in prompt and "<think>" not in prompt
    assert prompt.endswith("<|im_start|>user\nNow one about snow.<|im_end|>\n<|im_start|>assistant\nSnow falls.\n\n")


def test_template_arguments_reach_the_template():
    tokenizer = _Refusing(offline_tokenizer("smollm2-135m"))
    own = OwnTemplate(tokenizer, "smollm2")
    talk = frame([("user", "Hi")], PLAIN, kwargs={"enable_thinking": False})
    assert talk.kwargs == (("enable_thinking", False),)
    own.judge(talk, ["Hello."])
    assert tokenizer.seen[-1]["enable_thinking"] is False and tokenizer.seen[-1]["tokenize"] is False


def test_a_prepared_folder_gives_the_models_own_template():
    folder = models.prepare("smollm2-135m")  # converted once here, as the runtime tests do
    own = model_template("base", "/elsewhere/any-name-at-all", tokenizer=str(folder))
    assert isinstance(own, OwnTemplate) and own.way == CONTINUED and "hf's own chat template" in own.name
    assert model_template("base", str(folder)) is own  # built once per folder


def test_a_runtime_whose_tokenizer_is_not_here_is_an_error_naming_the_flags(tmp_path):
    with pytest.raises(ConfigError, match=r"--base-tokenizer FOLDER .* or --base-template NAME"):
        model_template("base", "meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(ConfigError, match=r"--draft-tokenizer .*: no tokenizer in that folder"):
        model_template("draft", "x", tokenizer=str(tmp_path))
    assert model_template("draft", "meta-llama/Llama-3.1-8B-Instruct", override="chatml") is TEMPLATES["chatml"]


def test_a_tokenizer_without_a_chat_template_falls_back_to_a_hand_written_one(tmp_path):
    tokenizer = offline_tokenizer("smollm2-135m")
    tokenizer.save_pretrained(tmp_path / "SmolLM2-copy")
    for name in ("chat_template.jinja", "chat_template.json"):
        (tmp_path / "SmolLM2-copy" / name).unlink(missing_ok=True)
    folder = str(tmp_path / "SmolLM2-copy")
    assert model_template("base", folder) is TEMPLATES["smollm2"]
    (tmp_path / "mystery").mkdir()
    for path in (tmp_path / "SmolLM2-copy").iterdir():
        (tmp_path / "mystery" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match=r"has no chat template.*--base-template NAME"):
        model_template("base", str(tmp_path / "mystery"))


def test_a_conversation_the_template_refuses_is_named():
    from sgl_specreason.errors import InputError

    own = offline_template("qwen2.5-coder-0.5b")
    strict = OwnTemplate(_Refusing(offline_tokenizer("qwen2.5-coder-0.5b")), "strict")
    assert own.way == strict.way
    with pytest.raises(InputError, match=r"chat template of strict refuses the conversation \(roles system, system, user\)"):
        strict.head(frame([("system", "a"), ("system", "b"), ("user", "c")], PLAIN))


class _Refusing:
    """A tokenizer whose template refuses two system messages, as some models' templates do."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.chat_template = tokenizer.chat_template
        self.seen = []  # the keyword arguments of each call

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply_chat_template(self, chat, **how):
        self.seen.append(how)
        if sum(m["role"] == "system" for m in chat) > 1:
            from jinja2.exceptions import TemplateError
            raise TemplateError("System message must be first and only once")
        return self.inner.apply_chat_template(chat, **how)


def test_hand_written_templates_still_render_conversations():
    hand: ChatTemplate = TEMPLATES["deepseek-r1"]
    talk = frame(CHAT, PLAIN)
    assert hand.head(talk).startswith("Be brief.\n\n<\uff5cUser\uff5c>Write a haiku.")
