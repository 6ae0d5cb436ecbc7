"""Prompts as raw strings: how every template composes them, and the hand-written templates.

Each runtime serves its own model, so each renders its own prompts, and every prompt of one
problem on one runtime *extends* the previous one (the conversation, then steps 1..k, then the
judge's question): RadixAttention then serves everything but the newest step from its cache.

A template defines two pieces (``Prompting``): the conversation up to the opening of the
assistant turn (``head``) and the judge's turn after the reasoning (``judge_turn``); the
reasoning, judge and answer prompts are composed from them the same way for every template.
The model's own chat template (``rendering.OwnTemplate``) is the way; the hand-written ones here
are the fallback for a tokenizer without a chat template, or what ``--draft-template`` /
``--base-template`` ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from sgl_specreason.errors import ConfigError
from sgl_specreason.framing import (  # noqa: F401  (user_prompt: where callers found it before)
    ASSISTANT,
    SYSTEM,
    THINK_CLOSE,
    THINK_OPEN,
    USER,
    Talk,
    as_talk,
    user_prompt,
)

STEP_SEPARATOR = "\n\n"

JUDGE_INSTRUCTION = (
    "Evaluate the last reasoning step solely based on factual correctness and logical validity. "
    "Ignore style, phrasing, or overall usefulness\u2014only judge whether the step is "
    "objectively correct and logically follows from prior steps. Assign a score from 0 to 9."
)
#: the start of the judge's answer after its thinking marker: its next token is the score
JUDGE_SCORE_PREFIX = "I think the quality score is: "
JUDGE_ANSWER_PREFIX = THINK_OPEN + JUDGE_SCORE_PREFIX


def opens_thinking(text: str, marker: str = THINK_OPEN) -> bool:
    """``text`` ends inside an opened thinking block (a generation prompt that opens it).

    >>> opens_thinking("<|Assistant|><think>\\n"), opens_thinking("<think>\\n\\n</think>\\n\\n")
    (True, False)
    """
    return text.rstrip().endswith(marker)


class Prompting:
    """The prompts of one runtime, composed from the template's ``head`` and ``judge_turn``.

    Every method takes the question as a ``framing.Talk``, or as a string with its ``choices``
    (the paper's framing of one question). A template also has a ``name``."""

    def head(self, talk: Talk) -> str:
        """The conversation and the opening of the assistant turn (the generation prompt)."""
        raise NotImplementedError

    def judge_turn(self, talk: Optional[Talk] = None) -> str:
        """After the reasoning: the end of the assistant turn, the user turn with the judge's
        instruction and the opening of the next assistant turn."""
        raise NotImplementedError

    def conversation(self, question, choices=None) -> str:
        """The conversation up to the opening of the assistant turn."""
        return self.head(as_talk(question, choices))

    def thinks(self, question, choices=None) -> bool:
        """This template's generation prompt opens thinking itself for this conversation."""
        talk = as_talk(question, choices)
        return opens_thinking(self.head(talk), talk.markers[0])

    def assistant_text(self, talk: Talk, head: str, steps: Sequence[str]) -> str:
        """What follows the generation prompt: the thinking marker when the talk thinks and the
        template did not open it, then the kept steps, each followed by a blank line."""
        opener = talk.markers[0] if talk.think and not opens_thinking(head, talk.markers[0]) else ""
        return opener + "".join(step + STEP_SEPARATOR for step in steps)

    def reasoning(self, question, steps: Sequence[str], choices=None) -> str:
        """The assistant turn with the kept steps, left open for the next step."""
        talk = as_talk(question, choices)
        head = self.head(talk)
        return head + self.assistant_text(talk, head, steps)

    def judge(self, question, steps: Sequence[str], choices=None) -> str:
        """The reasoning so far (last step = the one being judged), then the judge's question and
        the start of its answer; the next token is the score."""
        talk = as_talk(question, choices)
        turn = self.judge_turn(talk)
        return self.reasoning(talk, steps) + turn + judge_prefix(turn, talk.markers[0])

    def answer(self, question, steps: Sequence[str], choices=None) -> str:
        """The reasoning closed (``</think>``; kept as it is when the last step closed it
        itself): the model writes its final answer next."""
        talk = as_talk(question, choices)
        close = talk.markers[1]
        text = self.reasoning(talk, steps)
        return text if steps and close in steps[-1] else text + close + STEP_SEPARATOR


def judge_prefix(turn: str, marker: str = THINK_OPEN) -> str:
    """The paper's start of the judge's answer, without its thinking marker where the judge's
    turn opened thinking already (a template whose generation prompt opens it)."""
    return (JUDGE_SCORE_PREFIX if opens_thinking(turn, marker)
            else marker + JUDGE_SCORE_PREFIX)


@dataclass(frozen=True)
class ChatTemplate(Prompting):
    """A hand-written template: how one model family frames turns. ``system`` is the system
    turn's format; ``default_system`` the system text the model's own template adds when none is
    given (None: no system turn)."""

    name: str
    user: str  # with {content}
    assistant_open: str
    assistant_close: str
    system: Optional[str] = None  # with {content}
    default_system: Optional[str] = None

    def head(self, talk: Talk) -> str:
        r"""System messages (joined by blank lines) take the place of the default system turn; a
        template without a system turn gets them as plain text before the first turn.

        >>> print(TEMPLATES["qwen"].head(Talk((("system", "Be brief."), ("user", "2+2?")))))
        <|im_start|>system
        Be brief.<|im_end|>
        <|im_start|>user
        2+2?<|im_end|>
        <|im_start|>assistant
        <BLANKLINE>
        """
        system = [content for role, content in talk.messages if role == SYSTEM]
        if not system:
            head = "" if self.system is None or self.default_system is None else \
                self.system.format(content=self.default_system)
        elif self.system is not None:
            head = self.system.format(content="\n\n".join(system))
        else:
            head = "\n\n".join(system) + "\n\n"
        for role, content in talk.messages:
            if role == USER:
                head += self.user.format(content=content)
            elif role == ASSISTANT:
                head += self.assistant_open + content + self.assistant_close
        return head + self.assistant_open

    def judge_turn(self, talk: Optional[Talk] = None) -> str:
        return self.assistant_close + self.user.format(content=JUDGE_INSTRUCTION) + self.assistant_open


@dataclass(frozen=True)
class Continuation(Prompting):
    r"""A prompt written by someone else (an SGLang program's state), continued as it is: what
    the drop-in backend uses in place of a conversation. Steps are appended to ``prompt``, each
    followed by a blank line; the paper's judge question is framed with ``chat`` (the base
    model's template).

    >>> Continuation("Q: 2+2?\nA:", TEMPLATES["qwen"]).reasoning("", [" 4"])
    'Q: 2+2?\nA: 4\n\n'
    """

    prompt: str
    chat: Prompting
    name: str = "continuation"

    def reasoning(self, question, steps: Sequence[str], choices=None) -> str:
        return self.prompt + "".join(step + STEP_SEPARATOR for step in steps)

    def judge(self, question, steps: Sequence[str], choices=None) -> str:
        turn = self.chat.judge_turn()
        return self.reasoning(question, steps) + turn + judge_prefix(turn)


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
    # QwQ's template has no default system turn; its own generation prompt also opens the
    # thinking block, which this fallback leaves to the framing (``paper`` opens it).
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
    """Pick a hand-written template from a model name or path (case-insensitive), or take
    ``override``: the fallback for a tokenizer without a chat template
    (``rendering.model_template`` is the way).

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
        f"cannot tell a hand-written prompt template for model {model!r}; pass one of "
        f"{', '.join(sorted(TEMPLATES))} (--draft-template / --base-template), or the model's "
        f"tokenizer folder (--draft-tokenizer / --base-tokenizer) to use its own chat template"
    )
