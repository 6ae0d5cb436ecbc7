"""Prompt rendering per model family, as raw strings.

Each runtime serves its own model, so prompts are rendered here rather than through a backend's
chat template, and every prompt of one problem on one runtime *extends* the previous one
(problem, then steps 1..k, then the judge's question): RadixAttention then serves everything but
the newest step from its cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from sgl_specreason.errors import ConfigError

STEP_SEPARATOR = "\n\n"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

JUDGE_INSTRUCTION = (
    "Evaluate the last reasoning step solely based on factual correctness and logical validity. "
    "Ignore style, phrasing, or overall usefulness\u2014only judge whether the step is "
    "objectively correct and logically follows from prior steps. Assign a score from 0 to 9."
)
JUDGE_ANSWER_PREFIX = "<think>I think the quality score is: "

_MATH_PROMPT = (
    "Solve the following math problem efficiently and clearly. Please reason step by step, "
    "separate logical reasoning steps with two newline characters (\\n\\n), and put your final "
    "answer within \\boxed{{}}.\nProblem: {question}"
)
_CHOICE_PROMPT = (
    "What is the correct answer to the following problem? Please reason step by step. "
    "Separate logical reasoning steps with two newline characters (\\n\\n).\n"
    "Put the final answer **strictly** in the format \\boxed{{X}}, where X is a single letter "
    "({letters}).\n\n**Example output:** \\boxed{{A}}\n\nProblem: {question}\nChoices:\n{choices}"
)


def user_prompt(question: str, choices: Optional[Sequence[str]] = None) -> str:
    """The first user message: the problem, asking for steps split by blank lines and a boxed answer.

    >>> user_prompt("1+1?").endswith("Problem: 1+1?")
    True
    """
    if not choices:
        return _MATH_PROMPT.format(question=question)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    listed = "\n".join(f"({letter}) {text}" for letter, text in zip(letters, choices))
    return _CHOICE_PROMPT.format(question=question, letters=", ".join(letters), choices=listed)


@dataclass(frozen=True)
class ChatTemplate:
    """How one model family frames turns. ``system`` is the default system turn the model's own
    template adds when none is given (None: no system turn)."""

    name: str
    user: str  # with {content}
    assistant_open: str
    assistant_close: str
    system: Optional[str] = None  # with {content}
    default_system: Optional[str] = None

    def conversation(self, question: str, choices: Optional[Sequence[str]] = None) -> str:
        """System turn (if any), the user turn and the opening of the assistant turn."""
        head = ""
        if self.system is not None and self.default_system is not None:
            head = self.system.format(content=self.default_system)
        return head + self.user.format(content=user_prompt(question, choices)) + self.assistant_open

    def reasoning(self, question: str, steps: Sequence[str], choices=None) -> str:
        """The assistant turn opened with ``<think>`` and the kept steps, each followed by a blank
        line, left open for the next step."""
        return (
            self.conversation(question, choices)
            + THINK_OPEN
            + "".join(step + STEP_SEPARATOR for step in steps)
        )

    def judge(self, question: str, steps: Sequence[str], choices=None) -> str:
        """The reasoning so far (last step = the one being judged), then the judge's question and
        the start of its answer; the next token is the score."""
        return (
            self.reasoning(question, steps, choices)
            + self.assistant_close
            + self.user.format(content=JUDGE_INSTRUCTION)
            + self.assistant_open
            + JUDGE_ANSWER_PREFIX
        )

    def answer(self, question: str, steps: Sequence[str], choices=None) -> str:
        """Reasoning closed with ``</think>``: the model writes its final answer next."""
        return self.reasoning(question, steps, choices) + THINK_CLOSE + STEP_SEPARATOR


@dataclass(frozen=True)
class Continuation:
    r"""A prompt written by someone else (an SGLang program's state), continued as it is: what
    the drop-in backend uses in place of a ``ChatTemplate``. Steps are appended to ``prompt``,
    each followed by a blank line; the paper's judge question is framed with ``chat`` (the base
    model's turns).

    >>> Continuation("Q: 2+2?\nA:", TEMPLATES["qwen"]).reasoning("", [" 4"])
    'Q: 2+2?\nA: 4\n\n'
    """

    prompt: str
    chat: ChatTemplate
    name: str = "continuation"

    def reasoning(self, question: str, steps: Sequence[str], choices=None) -> str:
        return self.prompt + "".join(step + STEP_SEPARATOR for step in steps)

    def judge(self, question: str, steps: Sequence[str], choices=None) -> str:
        return (self.reasoning(question, steps) + self.chat.assistant_close
                + self.chat.user.format(content=JUDGE_INSTRUCTION) + self.chat.assistant_open
                + JUDGE_ANSWER_PREFIX)


_CHATML_USER = "<|im_start|>user\n{content}<|im_end|>\n"
_CHATML_SYSTEM = "<|im_start|>system\n{content}<|im_end|>\n"

TEMPLATES = {
    "qwen": ChatTemplate(
        name="qwen",
        system=_CHATML_SYSTEM,
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        user=_CHATML_USER,
        assistant_open="<|im_start|>assistant\n",
        assistant_close="<|im_end|>\n",
    ),
    "smollm2": ChatTemplate(
        name="smollm2",
        system=_CHATML_SYSTEM,
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        user=_CHATML_USER,
        assistant_open="<|im_start|>assistant\n",
        assistant_close="<|im_end|>\n",
    ),
    "chatml": ChatTemplate(
        name="chatml",
        user=_CHATML_USER,
        assistant_open="<|im_start|>assistant\n",
        assistant_close="<|im_end|>\n",
    ),
    # QwQ's template has no default system turn; its generation prompt opens the thinking
    # block itself, which reasoning() does for every template.
    "qwq": ChatTemplate(
        name="qwq",
        user=_CHATML_USER,
        assistant_open="<|im_start|>assistant\n",
        assistant_close="<|im_end|>\n",
    ),
    # DeepSeek-R1 and its distills; the tokenizer adds the begin-of-sentence token itself.
    "deepseek-r1": ChatTemplate(
        name="deepseek-r1",
        user="<\uff5cUser\uff5c>{content}",
        assistant_open="<\uff5cAssistant\uff5c>",
        assistant_close="<\uff5cend\u2581of\u2581sentence\uff5c>",
    ),
}

# Most specific first: a QwQ or R1-distill-Qwen path also contains "qwen".
_BY_NAME = (
    ("qwq", "qwq"),
    ("deepseek-r1", "deepseek-r1"),
    ("r1-distill", "deepseek-r1"),
    ("smollm", "smollm2"),
    ("qwen", "qwen"),
)


def template_for_model(model: str, override: Optional[str] = None) -> ChatTemplate:
    """Pick the template from a model name or path (case-insensitive), or take ``override``.

    >>> template_for_model("/models/Qwen2.5-Coder-1.5B-Instruct").name
    'qwen'
    >>> template_for_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").name
    'deepseek-r1'
    """
    if override:
        if override not in TEMPLATES:
            raise ConfigError(
                f"unknown template {override!r}; choose one of {', '.join(sorted(TEMPLATES))}"
            )
        return TEMPLATES[override]
    lowered = model.lower()
    for needle, name in _BY_NAME:
        if needle in lowered:
            return TEMPLATES[name]
    raise ConfigError(
        f"cannot tell the prompt template of model {model!r}; pass one of "
        f"{', '.join(sorted(TEMPLATES))} (--draft-template / --base-template)"
    )
