"""The formats a batch input line may take, one registry entry each.

A problems file is read in one format, told from its first good line (the first JSON object
that a format claims; ``problems.read_jsonl`` does the reading, the resuming key and the checks
every format shares). A format says which lines it claims and turns one line into the fields of
a problem (``problems.make_problem``'s arguments), raising an ``InputError`` that names the field
that is wrong. Adding a format (OpenAI's Batch API lines, say) is one ``register_format`` call
and a test; nothing else changes.

The built-in format, ``problems``, takes one of three kinds of line:

- ``{"id", "question"}`` (with ``answer``, ``choices``): a problem, framed as the run's
  ``--framing`` says (``paper`` by default: the benchmarks' prompt);
- ``{"id", "messages": [{"role", "content"}, ...]}``: a conversation, the last message from the
  user; framed ``plain`` (as written) unless ``--framing`` says otherwise;
- ``{"id", "prompt": "..."}``: one user message, framed ``plain`` unless ``--framing`` says
  otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from sgl_specreason.errors import InputError
from sgl_specreason.framing import PLAIN, USER
from sgl_specreason.registry import Registry


@dataclass(frozen=True)
class InputFormat:
    name: str
    help: str
    #: ``claims(record)``: the line is written in this format (it decides the file's format when
    #: it is the first good line)
    claims: Callable[[dict], bool]
    #: ``fields(record, line_number)``: the problem's fields, as ``make_problem`` takes them
    #: (``id`` included; ``framing`` None where the run's framing applies); an ``InputError``
    #: naming the field that is wrong
    fields: Callable[[dict, int], dict]


#: every input format by name, in the order they are tried on the first good line
FORMATS: Registry[InputFormat] = Registry("input format")
register_format = FORMATS.add


def format_of(record: dict) -> Optional[InputFormat]:
    """The first format that claims ``record``, or None.

    >>> format_of({"id": "1", "messages": [{"role": "user", "content": "Hi"}]}).name
    'problems'
    >>> format_of({"text": "Hi"}) is None
    True
    """
    return next((fmt for fmt in FORMATS.values() if fmt.claims(record)), None)


# -- the built-in format -------------------------------------------------------------------------

#: the fields of which a ``problems`` line gives exactly one: what it asks
KINDS = ("question", "messages", "prompt")


def _claims(record: dict) -> bool:
    return any(kind in record for kind in KINDS)


def _fields(record: dict, line: int) -> dict:
    """A ``problems`` line's fields.

    >>> _fields({"id": 7, "prompt": "Hi"}, 1)
    {'id': '7', 'answer': None, 'choices': None, 'question': None, 'messages': [('user', 'Hi')], 'framing': 'plain'}
    >>> _fields({"question": "2+2?", "messages": []}, 3)
    Traceback (most recent call last):
    ...
    sgl_specreason.errors.InputError: give one of 'question', 'messages' or 'prompt', got question and messages
    """
    given = [kind for kind in KINDS if kind in record]
    if len(given) != 1:
        got = f"got {' and '.join(given)}" if given else "got none of them"
        raise InputError(f"give one of 'question', 'messages' or 'prompt', {got}")
    out = {"id": str(record.get("id", record.get("idx", line))), "answer": record.get("answer"),
           "choices": record.get("choices")}
    kind = given[0]
    if kind == "question":
        return {**out, "question": record["question"], "messages": None, "framing": None}
    if kind == "prompt":
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise InputError(f"prompt: must be text, got {type(prompt).__name__}")
        return {**out, "question": None, "messages": [(USER, prompt)], "framing": PLAIN}
    return {**out, "question": None, "messages": messages_of(record["messages"]), "framing": PLAIN}


def messages_of(messages) -> List[Tuple[str, str]]:
    """OpenAI-style messages (``{"role", "content"}``; content text, or a list of text parts) as
    ``(role, text)`` pairs; an ``InputError`` naming the message that is not one. Which roles a
    conversation may have is checked later (``chat.conversation``, then each model's template).

    >>> messages_of([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    [('user', 'Hi')]
    """
    if not isinstance(messages, list) or not messages:
        raise InputError("messages: must be a non-empty list of {\"role\", \"content\"} objects, the "
                         "last from the user")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f"messages[{i}]: must be an object with a 'role' and a 'content'")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise InputError(f"messages[{i}].content: only text parts ({{\"type\": \"text\", "
                                 f"\"text\": ...}}) are supported")
            content = "\n".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise InputError(f"messages[{i}].content: must be text, got {type(content).__name__}")
        out.append((message["role"], content))
    return out


register_format(InputFormat(
    "problems", "one problem per line: {\"id\", \"question\"} (paper framing), {\"id\", \"messages\"} or "
                "{\"id\", \"prompt\"} (plain framing), with an optional answer and choices",
    _claims, _fields))
