import pytest

from sgl_specreason.errors import ConfigError
from sgl_specreason.templates import (
    JUDGE_INSTRUCTION,
    TEMPLATES,
    template_for_model,
    user_prompt,
)

STEPS = ["First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "So the answer is \\boxed{14}."]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_prompt_of_a_problem_extends_the_previous_one(name):
    t = TEMPLATES[name]
    q = "What is (3 + 4) * 2?"
    for k in range(len(STEPS)):
        now, nxt = t.reasoning(q, STEPS[:k]), t.reasoning(q, STEPS[: k + 1])
        assert nxt.startswith(now) and len(nxt) > len(now)
        judge = t.judge(q, STEPS[: k + 1])
        assert judge.startswith(nxt)
        assert judge.endswith("<think>I think the quality score is: ")
        assert JUDGE_INSTRUCTION in judge
        assert t.answer(q, STEPS[: k + 1]).startswith(nxt)
    # the reasoning is left open: no end of turn after the steps
    assert t.reasoning(q, STEPS).endswith(STEPS[-1] + "\n\n")
    assert t.reasoning(q, []).endswith("<think>")


def test_chatml_rendering_is_exact():
    t = TEMPLATES["qwen"]
    assert t.reasoning("1+1?", ["a"]) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n" + user_prompt("1+1?") + "<|im_end|>\n"
        "<|im_start|>assistant\n<think>a\n\n"
    )


@pytest.mark.parametrize("model,name", [
    ("/root/.cache/sgl-specreason/models/qwen2.5-coder-1.5b/hf", "qwen"),
    ("Qwen/QwQ-32B", "qwq"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-r1"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
])
def test_template_is_picked_from_the_model(model, name):
    assert template_for_model(model).name == name


def test_override_and_unknown_templates():
    assert template_for_model("anything", "chatml").name == "chatml"
    with pytest.raises(ConfigError, match="--draft-template"):
        template_for_model("/models/mystery-7b")
    with pytest.raises(ConfigError, match="unknown template 'llama9'"):
        template_for_model("x", "llama9")


def test_multiple_choice_prompt_lists_lettered_options():
    text = user_prompt("Which?", ["red", "blue", "green"])
    assert "(A) red\n(B) blue\n(C) green" in text
    assert "(A, B, C)" in text and "\\boxed{X}" in text
