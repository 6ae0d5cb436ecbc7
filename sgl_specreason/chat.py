"""A chat conversation (OpenAI-style messages) as a SpecReason prompt.

SpecReason solves one problem at a time, framed the same way for every model (``templates``):
the problem in a user turn that asks for steps separated by blank lines and a boxed answer,
then the assistant turn opened with ``<think>``. A conversation becomes such a prompt like this:

- the **last message** must come from the user: it is the problem, framed as above;
- **earlier user and assistant turns** come before it, verbatim, in the model's own turn
  markers, as context (a follow-up question reads the answer it follows up on);
- **system** (and ``developer``) messages, joined by blank lines, take the place of the
  template's default system turn; a template without a system turn (DeepSeek-R1) gets them as
  plain text before the first turn, as that model's own chat template does.

Each runtime renders the conversation in its own template (``Conversation.template``), so the
two models may frame turns differently, as everywhere else in SpecReason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from sgl_specreason.errors import InputError
from sgl_specreason.templates import ChatTemplate, user_prompt

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
#: OpenAI's newer name for a system message
DEVELOPER = "developer"


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class Conversation:
    """What SpecReason takes from a list of messages."""

    question: str  # the last user message: the problem
    earlier: Tuple[Turn, ...] = ()  # the turns before it
    system: Optional[str] = None

    def template(self, chat: ChatTemplate) -> "Dialogue":
        """``chat`` with this conversation's system text and earlier turns before the problem."""
        fields = {f.name: getattr(chat, f.name) for f in dataclasses.fields(ChatTemplate)}
        return Dialogue(**fields, earlier=self.earlier, system_text=self.system)


def conversation(messages: Sequence[Tuple[str, str]]) -> Conversation:
    """The conversation of ``(role, text)`` messages; an ``InputError`` naming the message that
    cannot be used.

    >>> conversation([("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"),
    ...               ("user", "And times 3?")]).question
    'And times 3?'
    """
    if not messages:
        raise InputError("messages: at least one message is needed, the last from the user")
    system, turns = [], []
    for i, (role, text) in enumerate(messages):
        if role in (SYSTEM, DEVELOPER):
            system.append(text)
        elif role in (USER, ASSISTANT):
            turns.append(Turn(role, text))
        else:
            raise InputError(f"messages[{i}].role: {role!r} is not supported; use system, "
                             f"developer, user or assistant (SpecReason calls no tools)")
    if not turns or turns[-1].role != USER:
        raise InputError("messages: the last message must come from the user (it is the problem "
                         "SpecReason solves)")
    if not turns[-1].content.strip():
        raise InputError(f"messages[{len(messages) - 1}].content: the question is empty")
    return Conversation(turns[-1].content.strip(), tuple(turns[:-1]),
                        "\n\n".join(system) if system else None)


@dataclass(frozen=True)
class Dialogue(ChatTemplate):
    """A ``ChatTemplate`` whose conversation starts with a system text and earlier turns."""

    earlier: Tuple[Turn, ...] = ()
    system_text: Optional[str] = None

    def conversation(self, question: str, choices=None) -> str:
        r"""
        >>> from sgl_specreason.templates import TEMPLATES
        >>> talk = Conversation("And times 3?", (Turn("user", "2+2?"), Turn("assistant", "4")), "Be brief.")
        >>> print(talk.template(TEMPLATES["qwen"]).conversation(talk.question).split("Solve")[0])
        <|im_start|>system
        Be brief.<|im_end|>
        <|im_start|>user
        2+2?<|im_end|>
        <|im_start|>assistant
        4<|im_end|>
        <|im_start|>user
        <BLANKLINE>
        """
        return self._head() + self.user.format(content=user_prompt(question, choices)) + self.assistant_open

    def plain(self, question: str) -> str:
        r"""The conversation as the user wrote it, with no SpecReason framing: what the base model
        answers directly when it serves a request alone (constrained decoding).

        >>> from sgl_specreason.templates import TEMPLATES
        >>> Conversation("Name a colour.").template(TEMPLATES["smollm2"]).plain("Name a colour.")[-64:]
        '<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n'
        """
        return self._head() + self.user.format(content=question) + self.assistant_open

    def _head(self) -> str:
        """The system turn (or text) and the earlier turns."""
        if self.system_text is None:
            head = "" if self.system is None or self.default_system is None else \
                self.system.format(content=self.default_system)
        elif self.system is not None:
            head = self.system.format(content=self.system_text)
        else:
            head = self.system_text + "\n\n"
        for turn in self.earlier:
            if turn.role == USER:
                head += self.user.format(content=turn.content)
            else:
                head += self.assistant_open + turn.content + self.assistant_close
        return head
