"""A chat reply's thinking kept apart from its answer: ``message.reasoning_content`` and
``content`` (``delta.reasoning_content`` and ``delta.content`` when streamed), as SGLang's
server returns them with ``--reasoning-parser``.

The reply is thinking from its first token when the prompt opened it (the ``paper`` framing, or a
template whose generation prompt opens it), or when the model's first step opens it itself
(``<think>``); the thinking ends at its closing marker (``</think>``, or the model's own), and
what follows, the closing answer included, is the content. A reply that never thinks (a chat
model under ``plain``) is all content, and its ``reasoning_content`` is null. The markers
themselves are in neither.

The text arrives in pieces (a kept step at a time, cut anywhere by a stop string), so a tail
that may begin a marker is held back until the next piece shows whether it is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from sgl_specreason.framing import THINK_CLOSE, THINK_OPEN


@dataclass(frozen=True)
class Thinking:
    """How a job's reply is split: ``opened``, the prompt opened the thinking (the reply is
    thinking from its first token); ``markers``, the thinking's opening and closing markers."""

    opened: bool = False
    markers: Tuple[str, str] = (THINK_OPEN, THINK_CLOSE)


class ReasoningSplit:
    """Pieces of a reply in, (reasoning, content) pieces out.

    >>> split = ReasoningSplit(Thinking(opened=False))
    >>> split.feed("<think>I add"), split.feed(".\\n\\nSo 4.</th"), split.feed("ink>"), split.answer("\\n\\nIt is 4.")
    (('I add', ''), ('.\\n\\nSo 4.', ''), ('', ''), ('', 'It is 4.'))
    >>> ReasoningSplit(Thinking()).feed("Dear Sam,")
    ('', 'Dear Sam,')
    """

    def __init__(self, thinking: Thinking):
        self.opener, self.closer = thinking.markers
        self.state = "thinking" if thinking.opened else "start"  # then "content"
        self.held = ""  # a tail that may begin a marker
        self.sent_reasoning = self.sent_content = False

    def feed(self, piece: str) -> Tuple[str, str]:
        """The reasoning and the content of the next piece of the reply."""
        text = self.held + piece
        self.held = ""
        if self.state == "start":
            stripped = text.lstrip()
            if not stripped or (self.opener.startswith(stripped) and stripped != self.opener):
                self.held = text  # only blanks, or the start of an opening marker: wait
                return "", ""
            if stripped.startswith(self.opener):
                self.state, text = "thinking", stripped[len(self.opener):]
            else:
                self.state = "content"
        if self.state == "content":
            return "", self._content(text)
        at = text.find(self.closer)
        if at >= 0:
            self.state = "content"
            # the blank before the marker ends the thinking: no part of it
            return self._reasoning(text[:at].rstrip()), self._content(text[at + len(self.closer):])
        keep = _partial(text, self.closer)
        self.held = text[len(text) - keep:] if keep else ""
        return self._reasoning(text[:len(text) - keep]), ""

    def answer(self, piece: str) -> Tuple[str, str]:
        """The closing answer, written after the thinking was closed (the content, whatever
        came before it); what was held back is flushed first."""
        reasoning, content = self.flush()
        self.state = "content"
        return reasoning, content + self._content(piece)

    def flush(self) -> Tuple[str, str]:
        """What was held back, once nothing more comes."""
        held, self.held = self.held, ""
        if not held:
            return "", ""
        return (self._reasoning(held), "") if self.state == "thinking" else ("", self._content(held))

    def _reasoning(self, text: str) -> str:
        if not self.sent_reasoning:
            text = text.lstrip()
            self.sent_reasoning = bool(text)
        return text

    def _content(self, text: str) -> str:
        if not self.sent_content:
            text = text.lstrip()
            self.sent_content = bool(text)
        return text


def _partial(text: str, marker: str) -> int:
    """The length of the longest tail of ``text`` that begins ``marker`` (0: none)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
