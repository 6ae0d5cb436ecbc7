"""How a problem or a conversation is put to the models: the framing.

- ``paper``: the paper's benchmark prompt. The last user message becomes "Solve the following
  math problem ... put your final answer within \\boxed{}" (or the multiple-choice version), and
  the assistant turn opens with ``<think>``. Earlier turns and system messages come before it as
  they were written. The default of ``eval`` and ``demo``.
- ``plain``: the conversation exactly as the user wrote it. The assistant turn opens with
  thinking only where a model's own template opens it (DeepSeek-R1's newer revision, QwQ), or
  where the model writes ``<think>`` itself.

A ``Talk`` is the result: the messages every runtime's template renders, and whether the
assistant's text is thinking from its first token. Each runtime renders it in its own template
(``templates``, ``rendering``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from sgl_specreason.errors import ConfigError

PAPER, PLAIN = "paper", "plain"
FRAMINGS = (PAPER, PLAIN)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
Message = Tuple[str, str]  # (role, content)

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
    """The paper's user message: the problem, asking for steps split by blank lines and a boxed
    answer.

    >>> user_prompt("1+1?").endswith("Problem: 1+1?")
    True
    """
    if not choices:
        return _MATH_PROMPT.format(question=question)
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    return _CHOICE_PROMPT.format(question=question, letters=", ".join(letters),
                                 choices=lettered(choices))


def lettered(choices: Sequence[str]) -> str:
    """Options as the prompts list them: ``(A) first`` one per line."""
    return "\n".join(f"({chr(ord('A') + i)}) {text}" for i, text in enumerate(choices))


@dataclass(frozen=True)
class Talk:
    """A conversation as the models are asked it.

    ``messages`` are what each runtime's chat template renders, the last from the user;
    ``think``: the assistant's text is thinking from its start (a template adds ``markers[0]``
    after its generation prompt unless that prompt opened thinking itself); ``kwargs``: the
    chat template's own arguments (Qwen3's ``enable_thinking``), as sorted (name, value) pairs."""

    messages: Tuple[Message, ...]
    think: bool = True
    framing: str = PAPER
    markers: Tuple[str, str] = (THINK_OPEN, THINK_CLOSE)
    kwargs: Tuple[Tuple[str, object], ...] = ()

    @property
    def question(self) -> str:
        """The last user message as the models read it."""
        return self.messages[-1][1]


def as_talk(question, choices: Optional[Sequence[str]] = None) -> Talk:
    """``question`` as a ``Talk``: a talk as it is; a string as the paper frames one question
    (what every template method took before conversations).

    >>> as_talk("2+2?").messages[0][0], as_talk("2+2?").think
    ('user', True)
    """
    if isinstance(question, Talk):
        return question
    return Talk(((USER, user_prompt(question, choices)),))


def frame(messages: Sequence[Message], framing: str = PAPER, choices: Optional[Sequence[str]] = None,
          templates: Sequence = (), kwargs: Optional[dict] = None) -> Talk:
    """The talk of ``messages`` (the last from the user) under ``framing``, for the runtimes'
    ``templates`` (the base model's first: its thinking markers are the run's).

    Under ``plain`` the talk thinks when one template's generation prompt opens thinking, so
    that both models continue the same kind of text.

    >>> frame([("user", "Hi")], PLAIN).messages, frame([("user", "Hi")], PLAIN).think
    ((('user', 'Hi'),), False)
    >>> frame([("user", "2+2?")]).question.startswith("Solve the following math problem")
    True
    """
    if framing not in FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    *earlier, (role, last) = [tuple(m) for m in messages]
    if role != USER:
        raise ConfigError(f"the last message must come from the user, got {role!r}")
    if framing == PAPER:
        last = user_prompt(last, choices)
    elif choices:
        last = f"{last}\n{lettered(choices)}"
    markers = next((t.markers for t in templates if getattr(t, "markers", None)), (THINK_OPEN, THINK_CLOSE))
    talk = Talk((*earlier, (USER, last)), framing == PAPER, framing, tuple(markers),
                tuple(sorted((kwargs or {}).items())))
    if framing == PAPER:
        return talk
    return dataclasses.replace(talk, think=any(template.thinks(talk) for template in templates))
