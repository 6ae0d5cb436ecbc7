"""The hand-written prompt templates render exactly what each offline model's own chat template
renders for the same messages, so that neither can drift from the other unseen.

The models' tokenizers come from their converted folders where they were prepared, else from
the head of their GGUF files (``models.tokenizer``: the first package only, seconds each)."""


import pytest

from own_templates import offline_tokenizer
from sgl_specreason import models
from sgl_specreason.errors import ModelError
from sgl_specreason.templates import (
    JUDGE_ANSWER_PREFIX,
    JUDGE_INSTRUCTION,
    STEP_SEPARATOR,
    TEMPLATES,
    THINK_OPEN,
    template_for_model,
    user_prompt,
)

pytestmark = pytest.mark.timeout(300)

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have now?"
CHOICES = ["4", "5", "6"]
STEPS = ["Tom starts with 3 apples.", "He buys 2 more: 3 + 2 = 5."]


def rendered(name, messages):
    return offline_tokenizer(name).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("choices", [None, CHOICES])
def test_the_reasoning_prompt_is_the_models_own_conversation(name, choices):
    template = TEMPLATES[models.MODELS[name].template]
    expected = rendered(name, [{"role": "user", "content": user_prompt(QUESTION, choices)}])
    assert template.conversation(QUESTION, choices) == expected
    assert template.reasoning(QUESTION, STEPS, choices) == expected + THINK_OPEN + "".join(
        step + STEP_SEPARATOR for step in STEPS)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_the_judges_question_is_a_second_user_turn_in_the_models_own_format(name):
    template = TEMPLATES[models.MODELS[name].template]
    expected = rendered(name, [
        {"role": "user", "content": user_prompt(QUESTION)},
        {"role": "assistant", "content": THINK_OPEN + "".join(s + STEP_SEPARATOR for s in STEPS)},
        {"role": "user", "content": JUDGE_INSTRUCTION},
    ])
    assert template.judge(QUESTION, STEPS) == expected + JUDGE_ANSWER_PREFIX


@pytest.mark.parametrize("name", list(models.MODELS))
def test_the_template_picked_by_the_models_folder_name_is_its_own(name):
    folder = models.cache_dir() / "models" / name / "hf"
    assert template_for_model(str(folder)).name == models.MODELS[name].template


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ModelError, match="is not a GGUF file"):
        models.gguf_head(path)
