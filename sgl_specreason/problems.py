"""Problems: what a run solves, checked before any runtime sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

from sgl_specreason.chat import conversation
from sgl_specreason.errors import InputError
from sgl_specreason.framing import FRAMINGS, USER, Message
from sgl_specreason.input_formats import PROBLEMS, scan


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: Optional[str] = None  # reference answer, when known
    choices: Optional[Tuple[str, ...]] = None  # multiple choice options, shown as (A), (B), ...
    kind: Optional[str] = None  # how the answer is graded (grading.KINDS); None: grading.kind_of
    #: the messages of a conversation before the question (system, earlier turns), as written
    earlier: Tuple[Message, ...] = ()
    #: how this problem is put to the models (``framing``); None: as the run's config says
    framing: Optional[str] = None

    @property
    def messages(self) -> Tuple[Message, ...]:
        """The whole conversation: the earlier messages, then the question from the user."""
        return (*self.earlier, (USER, self.question))


def make_problem(question: Union[str, bytes, None], id: str = "0", answer=None, choices=None,
                 messages=None, framing: Optional[str] = None) -> Problem:
    """A checked problem; a clear ``InputError`` for an empty, non-text or non-UTF-8 question.
    ``messages``: a conversation of ``(role, content)`` pairs instead of a question; its last
    message, from the user, is the question. ``framing``: this problem's, over the run's.

    >>> make_problem("  What is 2+2? ").question
    'What is 2+2?'
    >>> make_problem(None, messages=[("system", "Be brief."), ("user", "Hi")]).messages
    (('system', 'Be brief.'), ('user', 'Hi'))
    """
    earlier = ()
    if framing is not None and framing not in FRAMINGS:
        raise InputError(f"problem {id}: framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    if messages is not None:
        if question is not None:
            raise InputError(f"problem {id}: give a question or messages, not both")
        try:
            talk = conversation(messages)
        except InputError as e:
            raise InputError(f"problem {id}: {e}") from None
        question, earlier = talk.question, talk.earlier
    if isinstance(question, (bytes, bytearray)):
        try:
            question = bytes(question).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"problem {id}: the question is not valid UTF-8 (bad byte at offset {e.start})"
            ) from None
    if not isinstance(question, str):
        raise InputError(f"problem {id}: the question must be text, got {type(question).__name__}")
    if "\x00" in question:
        raise InputError(f"problem {id}: the question contains a NUL character")
    if not question.strip():
        raise InputError(f"problem {id}: the question is empty")
    if choices is not None:
        if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(
            isinstance(c, str) and c.strip() for c in choices
        ):
            raise InputError(f"problem {id}: choices must be a list of at least two non-empty strings")
        choices = tuple(c.strip() for c in choices)
    return Problem(id=str(id), question=question.strip(),
                   answer=None if answer is None else str(answer), choices=choices, earlier=earlier,
                   framing=framing)


@dataclass
class BadInput:
    """A problem that could not be read; it is reported, never silently dropped."""

    id: str
    error: str


@dataclass
class ProblemSet:
    problems: List[Problem] = field(default_factory=list)
    bad: List[BadInput] = field(default_factory=list)


def read_jsonl(path: Union[str, Path], framing: Optional[str] = None) -> ProblemSet:
    """Problems from a JSONL file, one per line, in the format its first good line is written in
    (``input_formats``: a ``question``, ``messages`` or ``prompt`` per line, with an optional
    ``id``, ``answer``, ``choices``). ``framing``: every problem's (None: each kind of line's own,
    ``plain`` for ``messages`` and ``prompt``, the run's for ``question``).

    A bad line is kept as a ``BadInput`` naming the file and line; the other lines are still read.
    Ids must be unique (results are keyed by them): a repeated id is a bad line.
    """
    path = Path(path)
    out = ProblemSet()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read problems file {path}: {e.strerror}") from None
    fmt, lines = scan(raw, str(path))
    if fmt is not None and fmt.holds != PROBLEMS:
        raise InputError(f"{path} holds {fmt.name} lines, requests to answer, not problems: "
                         f"`sgl-specreason batch` answers them (openai_batch)")
    for line in lines:
        if line.fields is None:
            out.bad.append(BadInput(line.where, line.error))
            continue
        fields = line.fields
        if framing is not None:
            fields["framing"] = framing
        try:
            out.problems.append(make_problem(**fields))
        except InputError as e:
            out.bad.append(BadInput(fields["id"], f"{line.where}: {e}"))
    return out
