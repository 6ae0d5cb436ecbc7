"""A chat conversation (OpenAI-style messages) as SpecReason takes it.

The last message must come from the user: it is what the run answers (the problem, under the
``paper`` framing). The messages before it (system, earlier user and assistant turns) are kept
as they were written, in their order; OpenAI's ``developer`` role is a system message. How the
conversation is framed and rendered is not decided here: ``framing`` frames it, and each
runtime's template (its model's own chat template) renders it, so the two models may frame
turns differently, as everywhere else in SpecReason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

from sgl_specreason.errors import InputError
from sgl_specreason.framing import ASSISTANT, SYSTEM, USER, Message

#: OpenAI's newer name for a system message
DEVELOPER = "developer"


@dataclass(frozen=True)
class Conversation:
    """The messages of a chat, checked: ``(role, content)`` pairs, the last from the user."""

    messages: Tuple[Message, ...]

    @property
    def question(self) -> str:
        """The last user message: what the run answers."""
        return self.messages[-1][1]

    @property
    def earlier(self) -> Tuple[Message, ...]:
        """The messages before the question."""
        return self.messages[:-1]


def conversation(messages: Sequence[Tuple[str, str]]) -> Conversation:
    """The conversation of ``(role, text)`` messages; an ``InputError`` naming the message that
    cannot be used.

    >>> talk = conversation([("developer", "Be brief."), ("user", "2+2?"), ("assistant", "4"),
    ...                      ("user", " And times 3? ")])
    >>> talk.messages[0], talk.question
    (('system', 'Be brief.'), 'And times 3?')
    """
    if not messages:
        raise InputError("messages: at least one message is needed, the last from the user")
    checked = []
    for i, (role, text) in enumerate(messages):
        if role == DEVELOPER:
            role = SYSTEM
        if role not in (SYSTEM, USER, ASSISTANT):
            raise InputError(f"messages[{i}].role: {role!r} is not supported; use system, "
                             f"developer, user or assistant (SpecReason calls no tools)")
        checked.append((role, text))
    if checked[-1][0] != USER:
        raise InputError("messages: the last message must come from the user (it is what "
                         "SpecReason answers)")
    if not checked[-1][1].strip():
        raise InputError(f"messages[{len(messages) - 1}].content: the question is empty")
    checked[-1] = (USER, checked[-1][1].strip())
    return Conversation(tuple(checked))
