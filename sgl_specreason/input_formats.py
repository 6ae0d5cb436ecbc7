"""The formats a batch input line may take, one registry entry each.

A problems file is read in one format, told from its first good line (the first JSON object
that a format claims; ``problems.read_jsonl`` does the reading, the resuming key and the checks
every format shares). A format says which lines it claims and turns one line into the fields of
a problem (``problems.make_problem``'s arguments), raising an ``InputError`` that names the field
that is wrong. Adding a format (OpenAI's Batch API lines, say) is one ``register_format`` call
and a test; nothing else changes.

A format's lines hold problems (``problems``: solved, one result line each) or requests
(``openai-batch``: answered as ``serve`` answers them, ``openai_batch``). A line that another
format claims, in a file told to be in one, is a bad line that says so.

The built-in format, ``problems``, takes one of three kinds of line:

- ``{"id", "question"}`` (with ``answer``, ``choices``): a problem, framed as the run's
  ``--framing`` says (``paper`` by default: the benchmarks' prompt);
- ``{"id", "messages": [{"role", "content"}, ...]}``: a conversation, the last message from the
  user; framed ``plain`` (as written) unless ``--framing`` says otherwise;
- ``{"id", "prompt": "..."}``: one user message, framed ``plain`` unless ``--framing`` says
  otherwise.

``openai-batch`` takes OpenAI Batch API input lines, as OpenAI's ``/v1/batches`` and vLLM's
``run_batch`` take them: ``{"custom_id", "method": "POST", "url", "body"}``, ``url`` one of
``REQUEST_URLS`` and ``body`` that endpoint's request; ``custom_id`` is the line's key.
"""

from __future__ import annotations

import json
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
    #: what a line holds: a problem to solve (``PROBLEMS``) or a request to answer (``REQUESTS``)
    holds: str = "problems"


PROBLEMS, REQUESTS = "problems", "requests"
#: the endpoints an ``openai-batch`` line's ``url`` may name (serve's routes that answer one body)
REQUEST_URLS = ("/v1/chat/completions", "/v1/completions")

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


# -- OpenAI Batch API lines ----------------------------------------------------------------------

def _claims_request(record: dict) -> bool:
    return "custom_id" in record or ("url" in record and "body" in record)


def _request_fields(record: dict, line: int) -> dict:
    """An ``openai-batch`` line's fields: the checks of the line itself (its body is checked by
    serve's request schema, ``serve.answering.check_body``).

    >>> _request_fields({"custom_id": "a", "method": "POST", "url": "/v1/completions",
    ...                  "body": {"model": "m", "prompt": "Hi"}}, 1)["url"]
    '/v1/completions'
    >>> _request_fields({"custom_id": "a", "url": "/v1/embeddings", "body": {}}, 1)
    Traceback (most recent call last):
    ...
    sgl_specreason.errors.InputError: url: '/v1/embeddings' is not an endpoint batch answers; use /v1/chat/completions or /v1/completions
    """
    custom_id = record.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        got = "none" if custom_id is None else json.dumps(custom_id)
        raise InputError(f"custom_id: every line needs one, a non-empty string that names its output line; got {got}")
    method = record.get("method", "POST")
    if method != "POST":
        raise InputError(f"method: must be \"POST\", got {json.dumps(method)}")
    url = record.get("url")
    if url not in REQUEST_URLS:
        raise InputError(f"url: {json.dumps(url)[:80] if not isinstance(url, str) else repr(url)} is not an "
                         f"endpoint batch answers; use {' or '.join(REQUEST_URLS)}")
    body = record.get("body")
    if not isinstance(body, dict):
        raise InputError(f"body: must be the request, a JSON object, got {type(body).__name__}")
    if body.get("stream"):
        raise InputError("body.stream: a batch line is answered whole; leave stream out or set it false")
    return {"id": custom_id, "custom_id": custom_id, "url": url, "body": body}


register_format(InputFormat(
    "openai-batch", "OpenAI Batch API requests: {\"custom_id\", \"method\": \"POST\", \"url\": "
                    "\"/v1/chat/completions\" or \"/v1/completions\", \"body\": the request}",
    _claims_request, _request_fields, holds=REQUESTS))


# -- reading a file ------------------------------------------------------------------------------

@dataclass
class Line:
    """One non-empty line of an input file: its fields in the file's format, or why it is bad."""

    number: int
    where: str  # "path:line", what a report names
    record: Optional[dict]  # the JSON object, None where the line is not one
    fields: Optional[dict] = None  # the format's fields; None: a bad line
    error: Optional[str] = None  # why it is bad, naming the line and the field


def scan(raw: bytes, name: str) -> Tuple[Optional[InputFormat], List[Line]]:
    r"""The format of a file's lines (``raw``, named ``name`` in errors), told from its first line
    that a format claims, and each non-empty line read in it. A bad line (not JSON, not an
    object, of another format, its fields wrong, an id given before) is kept with its error; the
    other lines are still read. Ids (``fields["id"]``) must be unique: results are keyed by them.

    >>> fmt, lines = scan(b'{"prompt": "Hi"}\n{"custom_id": "a", "url": "/v1/completions", "body": {}}', "f")
    >>> fmt.name, [line.error for line in lines]
    ('problems', [None, 'f:2: a line in the openai-batch format; this file is in the problems format, told by its first good line (line 1)'])
    """
    fmt, told_by, first_line, out = None, 0, {}, []
    for number, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip():
            continue
        where = f"{name}:{number}"
        line = Line(number, where, None)
        out.append(line)
        try:
            record = json.loads(text.decode("utf-8"))
        except UnicodeDecodeError:
            line.error = f"{where}: line is not valid UTF-8"
            continue
        except ValueError as e:
            line.error = f"{where}: not JSON ({e.msg})"
            continue
        if not isinstance(record, dict):
            line.error = f"{where}: not a JSON object"
            continue
        line.record = record
        claimed = format_of(record)
        if fmt is None and claimed is None:
            line.error = (f"{where}: a line in none of the input formats: "
                          + "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
            continue
        if fmt is None:
            fmt, told_by = claimed, number
        elif claimed is not None and claimed is not fmt and not fmt.claims(record):
            line.error = (f"{where}: a line in the {claimed.name} format; this file is in the {fmt.name} "
                          f"format, told by its first good line (line {told_by})")
            continue
        try:
            fields = fmt.fields(record, number)
        except InputError as e:
            line.error = f"{where}: {e}"
            continue
        key = fields["id"]
        if key in first_line:
            named = "custom_id" if fmt.holds == REQUESTS else "id"
            line.error = f"{where}: duplicate {named} {key!r} (first on line {first_line[key]})"
            continue
        first_line[key] = number
        line.fields = fields
    return fmt, out
