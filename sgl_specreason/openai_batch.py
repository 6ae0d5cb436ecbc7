"""OpenAI Batch API files: input lines ``{"custom_id", "method", "url", "body"}`` read and checked
as ``serve`` takes their bodies, output lines ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}`` in OpenAI's shape, and the lines answered through serve's
``Answerer`` (``answer_lines``). ``sgl-specreason batch`` answers such a file offline, as vLLM's
``run_batch`` does (``answer_file``); ``serve``'s ``/v1/batches`` answers one beside live
requests (``serve.batches``). No web server is imported on this path.

A bad line (not JSON, no ``custom_id``, one given before, an unknown ``url``, ``stream: true``,
a body field serve refuses, a line of another format) gets an error output line naming the
line and the field, and the others are answered.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import InputError
from sgl_specreason.input_formats import REQUESTS, scan
from sgl_specreason.serve.answering import Answerer, check_body
from sgl_specreason.serve.errors import ApiError, api_error
from sgl_specreason.serve.runs import ServeSettings, Service
from sgl_specreason.serve.solver import ProgramSolver
from sgl_specreason.store import ResultStore
from tqdm import tqdm


@dataclass(frozen=True)
class RequestLine:
    """A good input line: a request to answer."""

    custom_id: str
    url: str
    body: dict
    number: int  # its line in the file


@dataclass(frozen=True)
class BadLine:
    """A line that is not answered; ``error`` names the line and the field."""

    custom_id: Optional[str]  # where the line gives one
    error: str
    number: int
    status: int = 400


def read_requests(raw: bytes, name: str, check: Callable[[str, dict], None],
                  endpoint: Optional[str] = None) -> Tuple[List[RequestLine], List[BadLine]]:
    """The requests of an OpenAI Batch file (``raw``, called ``name`` in errors) and its bad
    lines. ``check(url, body)`` raises the ``ApiError`` serve would answer the body with
    (``answering.check_body``); ``endpoint``: the one ``url`` every line must name (a batch of
    serve's is made for one endpoint). An ``InputError`` where the file is not in this format.
    """
    fmt, lines = scan(raw, name)
    if fmt is not None and fmt.holds != REQUESTS:
        raise InputError(f"{name}: its lines are in the {fmt.name} format, not OpenAI Batch requests "
                         "({\"custom_id\", \"method\", \"url\", \"body\"})")
    good, bad = [], []
    for line in lines:
        given = (line.record or {}).get("custom_id")
        custom_id = given if isinstance(given, str) and given else None
        if line.fields is None:
            bad.append(BadLine(custom_id, line.error, line.number))
            continue
        url, body = line.fields["url"], line.fields["body"]
        if endpoint is not None and url != endpoint:
            bad.append(BadLine(custom_id, f"{line.where}: url: {url!r}, but this batch is for {endpoint}",
                               line.number))
            continue
        try:
            check(url, body)
        except ApiError as e:
            bad.append(BadLine(custom_id, f"{line.where}: body.{e.message}", line.number, e.status))
            continue
        good.append(RequestLine(custom_id, url, body, line.number))
    return good, bad


def output_line(custom_id: str, body: dict, key: Optional[str] = None) -> dict:
    """The output line of a request answered: ``body`` as serve answered it.

    >>> line = output_line("a", {"id": "chatcmpl-1", "object": "chat.completion"}, key="batch_req_1")
    >>> line["response"]["status_code"], line["response"]["request_id"], line["error"]
    (200, 'chatcmpl-1', None)
    """
    return {"id": key or f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": body.get("id") or f"req_{uuid.uuid4().hex}",
                         "body": body},
            "error": None}


def error_line(custom_id: Optional[str], error: ApiError, key: Optional[str] = None) -> dict:
    """The output line of a request refused or failed: the status and error body serve would
    answer with, and OpenAI's ``error`` (``code``, ``message``).

    >>> error_line(None, ApiError(400, "f:3: not JSON (Expecting value)"), key="k")["error"]
    {'code': 'invalid_request', 'message': 'f:3: not JSON (Expecting value)'}
    """
    code = error.code or ("invalid_request" if error.status < 500 else "server_error")
    return {"id": key or f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
            "response": {"status_code": error.status, "request_id": f"req_{uuid.uuid4().hex}",
                         "body": error.body()},
            "error": {"code": code, "message": error.message}}


def bad_line_error(line: BadLine) -> ApiError:
    return ApiError(line.status, line.error)


def answered(record: dict) -> bool:
    """An output line of a request answered (status 200)."""
    return ((record.get("response") or {}).get("status_code") == 200) and not record.get("error")


async def answer_lines(requests: Sequence[RequestLine], answerer: Answerer, write: Callable[[dict], None],
                       slots: int, start=None, key: Callable[[RequestLine], Optional[str]] = lambda r: None) -> None:
    """Answer ``requests``, at most ``slots`` at once, each run started by ``start`` (default
    ``Service.start_behind``: a slot no live request waits for), and ``write`` each output line
    as soon as it is answered. Cancelling the task aborts the lines in flight and writes nothing
    for them: a rerun answers them again. ``key``: each line's output ``id`` (None: a fresh one)."""
    gate = asyncio.Semaphore(slots)
    start = start or answerer.service.start_behind

    async def one(request: RequestLine) -> None:
        async with gate:
            try:
                body = await answerer.whole(request.url, request.body, start)
                line = output_line(request.custom_id, body, key(request))
            except ApiError as e:
                line = error_line(request.custom_id, e, key(request))
            except Exception as e:  # a run that failed: its line says how, the others go on
                line = error_line(request.custom_id, api_error(e), key(request))
        write(line)

    tasks = [asyncio.ensure_future(one(request)) for request in requests]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def answer_file(raw: bytes, name: str, store: ResultStore, roles, cfg: SpecReasonConfig, mode: str,
                parallel: int, limit: Optional[int] = None, log=print) -> Dict[str, int]:
    """``sgl-specreason batch`` on an OpenAI Batch file: answer the requests ``store`` holds no
    answer for (keyed by ``custom_id``), write an error line for each bad line not written
    before, and return the counts (answered, failed, bad, done before)."""
    settings = ServeSettings(mode=mode, max_in_flight=parallel)
    requests, bad = read_requests(raw, name, lambda url, body: check_body(url, body, cfg))
    if limit is not None:
        requests = requests[:limit]
    records = store.read("custom_id")
    done: Set[str] = {r["custom_id"] for r in records if answered(r)}
    said = {(r.get("custom_id"), (r.get("error") or {}).get("message")) for r in records if r.get("error")}
    todo = [r for r in requests if r.custom_id not in done]
    counts = {"answered": 0, "failed": 0, "bad": len(bad), "done_before": len(requests) - len(todo)}
    log(f"{len(todo)} requests to answer, {counts['done_before']} answered before in {store.path}"
        + (f", {len(bad)} bad input lines" if bad else ""))
    with store.append() as writer, tqdm(total=len(todo), unit="request", file=sys.stderr,
                                       disable=not todo) as bar:
        for line in bad:  # each written once: a rerun that finds it again says it, writes it not
            log(f"bad input: {line.error}")
            if (line.custom_id, line.error) not in said:
                writer.write(error_line(line.custom_id, bad_line_error(line)))

        def write(record: dict) -> None:
            writer.write(record)
            counts["answered" if answered(record) else "failed"] += 1
            bar.set_postfix({"failed": counts["failed"]}, refresh=False)
            bar.update(1)

        async def main() -> None:
            service = Service(ProgramSolver(roles, mode), settings)
            try:
                await answer_lines(todo, Answerer(service, cfg, settings, roles), write, parallel)
            finally:
                await service.close()

        if todo:
            asyncio.run(main())
    return counts


def is_request_file(raw: bytes) -> bool:
    """Whether a file's lines are OpenAI Batch requests (told from its first good line)."""
    fmt, _ = scan(raw, "")
    return fmt is not None and fmt.holds == REQUESTS

