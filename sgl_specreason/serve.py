"""SpecReason behind an OpenAI-compatible HTTP endpoint (``sgl-specreason serve``).

    sgl-specreason serve --draft-url http://127.0.0.1:30001 --base-url http://127.0.0.1:30000

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    reply = client.chat.completions.create(model="specreason", messages=[
        {"role": "user", "content": "What is 17 * 23?"}])

Routes: ``POST /v1/chat/completions`` (a conversation, solved by the ``specreason`` program;
``sgl_specreason.chat`` says how the messages become its prompt), ``POST /v1/completions`` (a
prompt continued step by step by the ``continuation`` program, as the drop-in backend serves
a long ``gen``), ``GET /v1/models``, ``GET /health`` and ``GET /stats`` (requests answered and
failed, and the server's own time per request: ``Stats``). Each request is one SpecReason run
on a worker thread; at most ``max_in_flight`` run at once, up to ``max_queue`` more wait, and
the next one gets 429.

What a response carries besides OpenAI's fields:

- ``usage.prompt_tokens`` is the request's prompt as the runtimes read it (the first call of
  the run), ``usage.prompt_tokens_details.cached_tokens`` the part of it their radix cache
  served, ``usage.completion_tokens`` the kept tokens (steps, and the closing answer);
- ``specreason``: steps drafted, kept and rewritten, acceptance, judge calls, tokens per role
  (every call of the run: generated, kept, prompt, cached), the stop reason; with
  ``"specreason": {"trace": true}`` in the request, every step and runtime call.

A request may set ``"specreason": {"judge": NAME, "threshold": X}`` (the openai client's
``extra_body``). ``max_tokens`` is the run's token budget: a chat run's reasoning stops once
its kept steps reach it and, without an answer by then, the model states one (at most
``answer_max_tokens`` more); a completion stops at it. ``temperature`` and ``top_p`` apply to
both models. A chat's ``stop`` strings cut the text and end the run; a completion's end it the
way the base model's would.

Errors come in OpenAI's format (``{"error": {"message", "type", "param", "code"}}``): 400 for a
bad body, naming the field, and for a prompt longer than the runtimes' context; 401 without
the API key; 413 for a body over the size limit; 429 when the queue is full; 502/503/504 when
a runtime fails, is down or times out. A client that goes away has its run's requests aborted
on the runtimes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import ipaddress
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import AsyncIterator, Callable, Dict, List, Optional, Tuple, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from sgl_specreason.calls import Cancelled, CancelScope, Role, ScopedBackend, call
from sgl_specreason.chat import Conversation, conversation
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import (
    ConfigError,
    InputError,
    PromptTooLongError,
    RuntimeCallError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
    SpecReasonError,
)
from sgl_specreason.problems import make_problem
from sgl_specreason.stopping import BUDGET
from sgl_specreason.templates import STEP_SEPARATOR, Continuation
from sgl_specreason.trace import BASE, DRAFT, ProblemResult, Step

log = logging.getLogger("sgl_specreason.serve")

#: seconds between two looks at whether a waiting client is still there
DISCONNECT_POLL_S = 0.25

#: the routes that start a SpecReason run (what ``Stats`` counts)
RUN_PATHS = ("/v1/chat/completions", "/v1/completions")


# -- settings, jobs, the solver ------------------------------------------------------------------

@dataclass(frozen=True)
class ServeSettings:
    """How the server admits and checks requests (the SpecReason settings are a
    ``SpecReasonConfig`` beside it)."""

    model_name: str = "specreason"  # the one model /v1/models lists
    api_key: Optional[str] = None  # None: no bearer-token check
    max_in_flight: int = 4  # SpecReason runs at once
    max_queue: int = 64  # requests waiting for a run slot; the next one gets 429
    max_body_bytes: int = 1 << 20
    #: seconds the shutdown waits for the runs it aborted to end
    abort_wait_s: float = 5.0

    def __post_init__(self):
        if self.max_in_flight < 1 or self.max_queue < 0 or self.max_body_bytes < 1:
            raise ConfigError(f"max_in_flight and max_body_bytes must be at least 1 and max_queue "
                              f"at least 0, got {self.max_in_flight}, {self.max_body_bytes}, {self.max_queue}")


@dataclass(frozen=True)
class Job:
    """One request, checked and ready to run: a conversation to solve, or a prompt to continue."""

    id: str
    cfg: SpecReasonConfig
    conversation: Optional[Conversation] = None
    prompt: Optional[str] = None
    max_tokens: Optional[int] = None  # a completion's budget (a chat's is cfg.token_budget)
    stops: Tuple[str, ...] = ()
    trace: bool = False  # include every step and call in the response

    @property
    def is_chat(self) -> bool:
        return self.conversation is not None


#: ``solver(job, on_step, scope)``: run the job (on the calling thread), call ``on_step`` with
#: each kept step as it is kept, send every runtime request within ``scope``; the result, or
#: the error that ended the run
Solver = Callable[[Job, Callable[[Step], None], CancelScope], ProblemResult]


class ProgramSolver:
    """The solver that runs the SpecReason programs on ``roles`` ({"draft": Role, "base":
    Role}, as ``open_runtimes`` yields them; each run keeps to one replica of each role)."""

    def __init__(self, roles: Dict[str, Role]):
        self.roles = roles
        self._runs = itertools.count()

    def __call__(self, job: Job, on_step: Callable[[Step], None], scope: CancelScope) -> ProblemResult:
        from programs import continuation, specreason

        index = next(self._runs)
        draft, base = self.roles[DRAFT].pick(index), self.roles[BASE].pick(index)
        backends = {DRAFT: ScopedBackend(draft.backend, scope), BASE: ScopedBackend(base.backend, scope)}
        if job.is_chat:
            result = call(specreason, backends[BASE], problem=make_problem(job.conversation.question, id=job.id),
                          cfg=job.cfg, monitor=_Relay(on_step),
                          draft=Role(DRAFT, backends[DRAFT], job.conversation.template(draft.template)),
                          base=Role(BASE, backends[BASE], job.conversation.template(base.template)))
            if result.error and not scope.cancelled:
                # the program records its error as text (one failing problem never takes a
                # batch down); the request that failed holds the error itself
                failed = [e for b in backends.values() for e in b.errors if not isinstance(e, Cancelled)]
                raise failed[0] if failed else SpecReasonError(result.error)
            return result
        template = Continuation(job.prompt, base.template)
        return call(continuation, backends[BASE], cfg=job.cfg, max_tokens=job.max_tokens,
                    stops=list(job.stops), on_step=on_step, draft=Role(DRAFT, backends[DRAFT], template),
                    base=Role(BASE, backends[BASE], template))


class _Relay:
    """The monitor the ``specreason`` program reports to: hands on each kept step."""

    def __init__(self, on_step: Callable[[Step], None]):
        self.on_step_ = on_step

    def on_step(self, problem, step: Step) -> None:
        self.on_step_(step)

    def on_result(self, result: ProblemResult) -> None:
        pass


# -- errors in OpenAI's format ---------------------------------------------------------------------

class ApiError(Exception):
    """An error response: HTTP status, and the fields of OpenAI's error object."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             413: "invalid_request_error", 429: "rate_limit_error"}

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def api_error(e: BaseException, prompt_param: str = "messages") -> ApiError:
    """The response for an error a run ended with. ``prompt_param``: the field holding the
    prompt (named when it is too long)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, PromptTooLongError):
        return ApiError(400, f"the prompt is longer than the runtimes' context: {e}", prompt_param,
                        "context_length_exceeded")
    if isinstance(e, (ConfigError, InputError)):
        return ApiError(400, str(e))
    if isinstance(e, Cancelled):
        return ApiError(503, "the run was stopped: the server is shutting down", code="cancelled")
    if isinstance(e, RuntimeUnavailableError):
        return ApiError(503, str(e), code="runtime_unavailable")
    if isinstance(e, RuntimeTimeoutError):
        return ApiError(504, str(e), code="runtime_timeout")
    if isinstance(e, RuntimeCallError):
        return ApiError(502, str(e), code="runtime_error")
    log.error("a run failed", exc_info=e)
    return ApiError(500, f"internal error: {type(e).__name__}: {e}", code="internal_error")


def _param(loc) -> Optional[str]:
    """A validation error's location as a field path: ("body", "messages", 0, "content") ->
    "messages[0].content"; the type names pydantic adds for union members are left out."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("str", "int", "float", "bool", "list", "dict"):
            continue
        else:
            out += ("." if out else "") + part
    return out or None


def _validation_error(e: RequestValidationError) -> ApiError:
    first = e.errors()[0]
    param = _param(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
    if param is None:
        return ApiError(400, "the body must be a JSON object")
    return ApiError(400, f"{param}: {first.get('msg')}", param)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the body is larger than {limit} bytes (--max-body-bytes)")


class _BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes, by its Content-Length or as it
    arrives (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            error = ApiError(413, f"the body is larger than {self.limit} bytes (--max-body-bytes)")
            return await error.response()(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


# -- request bodies ----------------------------------------------------------------------------------

class _Strict(BaseModel):
    # wrong types are errors, not coerced ("0.5" is no temperature); unknown fields are ignored,
    # as other OpenAI-compatible servers do (clients send their own extras)
    model_config = ConfigDict(strict=True, extra="ignore")


class SpecReasonOptions(_Strict):
    judge: Optional[str] = None
    threshold: Optional[float] = Field(None, ge=0, le=10)
    trace: bool = False


class ContentPart(_Strict):
    type: str
    text: Optional[str] = None


class Message(_Strict):
    role: str
    content: Union[str, List[ContentPart], None] = None


class _Common(_Strict):
    model: str
    max_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stop: Union[str, List[str], None] = None
    stream: Optional[bool] = False
    n: Optional[int] = Field(None, ge=1)
    logprobs: Optional[Union[bool, int]] = None
    specreason: Optional[SpecReasonOptions] = None


class ChatRequest(_Common):
    messages: List[Message]
    max_completion_tokens: Optional[int] = Field(None, ge=1, le=1_048_576)
    tools: Optional[list] = None


class CompletionRequest(_Common):
    prompt: Union[str, List[str]]
    echo: Optional[bool] = None


def _text_of(message: Message, i: int) -> str:
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        raise ApiError(400, f"messages[{i}].content: a message needs text", f"messages[{i}].content")
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            param = f"messages[{i}].content[{j}].type"
            raise ApiError(400, f"{param}: only text parts are supported, got {part.type!r}", param)
        texts.append(part.text)
    return "\n".join(texts)


def _common_checks(body: _Common) -> None:
    if body.n not in (None, 1):
        raise ApiError(400, f"n: only n = 1 is supported (one SpecReason run per request), got {body.n}", "n")
    if body.logprobs:
        raise ApiError(400, "logprobs: SpecReason returns no log-probabilities", "logprobs")


def _config(cfg: SpecReasonConfig, body: _Common, budget: Optional[int], budget_param: str) -> SpecReasonConfig:
    """The server's config with what the request sets, each checked and named if out of range."""
    options = body.specreason or SpecReasonOptions()
    changes = (
        ("token_budget", budget, budget_param),
        ("draft_temperature", body.temperature, "temperature"),
        ("base_temperature", body.temperature, "temperature"),
        ("top_p", body.top_p, "top_p"),
        ("score_method", options.judge, "specreason.judge"),
        ("threshold", options.threshold, "specreason.threshold"),
    )
    for field, value, param in changes:
        if value is None:
            continue
        try:
            cfg = cfg.replace(**{field: value})
        except ConfigError as e:
            raise ApiError(400, f"{param}: {e}", param) from None
    return cfg


def _stops(stop: Union[str, List[str], None]) -> Tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    if len(stops) > 16:
        raise ApiError(400, f"stop: at most 16 stop strings, got {len(stops)}", "stop")
    return tuple(s for s in stops if s)


def chat_job(body: ChatRequest, cfg: SpecReasonConfig) -> Job:
    """The job a chat request asks for; an ``ApiError`` naming the field that is wrong."""
    _common_checks(body)
    if body.tools:
        raise ApiError(400, "tools: SpecReason calls no tools", "tools")
    try:
        talk = conversation([(m.role, _text_of(m, i)) for i, m in enumerate(body.messages)])
    except InputError as e:
        param = str(e).split(":", 1)[0]
        raise ApiError(400, str(e), param) from None
    budget = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    options = body.specreason or SpecReasonOptions()
    return Job(f"chatcmpl-{uuid.uuid4().hex}", _config(cfg, body, budget, param), conversation=talk,
               stops=_stops(body.stop), trace=options.trace)


def completion_job(body: CompletionRequest, cfg: SpecReasonConfig) -> Job:
    """The job a completion request asks for; an ``ApiError`` naming the field that is wrong."""
    _common_checks(body)
    if body.echo:
        raise ApiError(400, "echo: not supported", "echo")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ApiError(400, f"prompt: one prompt per request, got {len(prompt)}", "prompt")
        prompt = prompt[0]
    if not prompt:
        raise ApiError(400, "prompt: the prompt is empty", "prompt")
    cfg = _config(cfg, body, body.max_tokens, "max_tokens")
    options = body.specreason or SpecReasonOptions()
    return Job(f"cmpl-{uuid.uuid4().hex}", cfg, prompt=prompt, max_tokens=cfg.token_budget,
               stops=_stops(body.stop), trace=options.trace)


# -- runs ---------------------------------------------------------------------------------------------

class Run:
    """One job run by the solver on a worker thread; its kept steps, then its result (or
    error), arrive on ``events`` in the event loop."""

    def __init__(self, job: Job, solver: Solver, executor: ThreadPoolExecutor, queue_s: float = 0.0):
        self.job = job
        self.scope = CancelScope()
        self.events: asyncio.Queue = asyncio.Queue()
        self.queue_s = queue_s  # seconds the request waited for a run slot
        self.run_s: Optional[float] = None  # seconds the solver took, once it is done
        self._loop = asyncio.get_running_loop()
        self.future = self._loop.run_in_executor(executor, self._work, solver)

    def _put(self, event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting for this run any more

    def _work(self, solver: Solver) -> None:
        started = time.perf_counter()
        try:
            result = solver(self.job, lambda step: self._put(("step", step)), self.scope)
        except Exception as e:  # handed to the request, which answers with it
            self.run_s = time.perf_counter() - started
            self._put(("error", e))
            return
        self.run_s = time.perf_counter() - started
        self._put(("done", result))

    def cancel(self) -> None:
        """Abort what the run has in flight on the runtimes and send nothing more (aborting
        is an HTTP call per request: on a thread of its own, not in the event loop)."""
        if not self.future.done() and not self.scope.cancelled:
            threading.Thread(target=self.scope.cancel, name="specreason-abort", daemon=True).start()


@dataclass
class Finished:
    """The end of a run's output."""

    result: ProblemResult
    finish_reason: str  # "stop" or "length"


class StopScan:
    """Streamed text cut before the first of ``stops``; a tail that begins a stop string is
    held back until the next piece shows whether it is one.

    >>> scan = StopScan(["END"])
    >>> scan.feed("one EN"), scan.feed("D two"), scan.stopped
    ('one ', '', True)
    """

    def __init__(self, stops=()):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) - 1 for s in self.stops), default=0)
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        self.text += piece
        start = max(0, self.sent - self.hold)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        end = min(hits) if hits else max(self.sent, len(self.text) - self._partial())
        self.stopped = bool(hits)
        out, self.sent = self.text[self.sent:end], end
        return out

    def _partial(self) -> int:
        """The length of the longest tail of the text that begins a stop string."""
        for n in range(min(self.hold, len(self.text)), 0, -1):
            if any(stop.startswith(self.text[-n:]) for stop in self.stops):
                return n
        return 0

    def flush(self) -> str:
        out, self.sent = ("", self.sent) if self.stopped else (self.text[self.sent:], len(self.text))
        return out


async def outputs(run: Run) -> AsyncIterator[Union[str, Finished]]:
    """The text of a run as it is kept (one piece per step; a chat's closing answer last), then
    ``Finished``; an ``ApiError`` if the run failed."""
    job = run.job
    scan = StopScan(job.stops if job.is_chat else ())  # a completion's stops are the program's
    steps: List[Step] = []
    joined = ""  # the steps' text as the result joins it
    while True:
        kind, item = await run.events.get()
        if kind == "step" and not scan.stopped:
            piece = (STEP_SEPARATOR if steps else "") + item.text
            steps.append(item)
            joined += piece
            out = scan.feed(piece)
            if out or not scan.stops:  # one piece per kept step, even an empty first one
                yield out
            if scan.stopped:
                run.cancel()  # the text is over: the rest of the run is not wanted
        elif kind == "done" or (kind == "error" and scan.stopped):
            result = item if kind == "done" else ProblemResult(job.id, "", "specreason", steps=steps)
            if not scan.stopped:
                rest = result.text[len(joined):] if result.text.startswith(joined) else ""
                out = scan.feed(rest) + scan.flush()
                if out:
                    yield out
            yield Finished(result, _finish_reason(job, result, scan.stopped))
            return
        elif kind == "error":
            raise api_error(item, "messages" if job.is_chat else "prompt")


def _finish_reason(job: Job, result: ProblemResult, stopped: bool) -> str:
    if stopped:
        return "stop"
    if job.is_chat:
        return "length" if result.stop_reason == BUDGET else "stop"
    return "length" if result.stop_reason == "length" else "stop"


def usage(result: ProblemResult) -> dict:
    """OpenAI's usage of a run: the prompt as the run's first call read it, what the radix cache
    served of it, and the kept tokens.

    >>> usage(ProblemResult("1", "q", "specreason"))["total_tokens"]
    0
    """
    first = next((step.calls[0] for step in result.steps if step.calls), None)
    prompt = first.prompt_tokens if first else 0
    completion = sum(step.kept_tokens for step in result.steps)
    if result.answer_call is not None:
        completion += result.answer_call.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": first.cached_tokens if first else 0}}


def extension(result: ProblemResult, cfg: SpecReasonConfig, trace: bool = False) -> dict:
    """The ``specreason`` field of a response: what the run did."""
    totals = result.totals()
    kept = {DRAFT: totals.kept_draft_tokens, BASE: totals.kept_base_tokens}
    generated = {DRAFT: totals.draft_tokens, BASE: totals.base_tokens}
    out = {
        "judge": cfg.score_method,
        "threshold": cfg.threshold,
        "steps": {"total": totals.steps, "drafted": totals.judged_steps, "kept": totals.accepted_steps,
                  "rewritten": totals.judged_steps - totals.accepted_steps},
        "acceptance": totals.acceptance_rate,
        "judge_calls": totals.judge_calls,
        "tokens": {role: {"generated": generated[role], "kept": kept[role],
                          "prompt": totals.prompt_tokens.get(role, 0),
                          "cached": totals.cached_tokens.get(role, 0)} for role in (DRAFT, BASE)},
        "wasted_tokens": totals.wasted_tokens,
        "stop_reason": result.stop_reason,
        "wall_s": round(result.wall_s, 4),
    }
    if trace:
        out["trace"] = {"steps": [asdict(step) for step in result.steps],
                        "answer_call": asdict(result.answer_call) if result.answer_call else None}
    return out


# -- admission --------------------------------------------------------------------------------------

class Service:
    """Runs jobs: at most ``max_in_flight`` at once, ``max_queue`` waiting; tracks what is in
    flight so that shutdown can abort it."""

    def __init__(self, solver: Solver, settings: ServeSettings):
        self.solver = solver
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="specreason-run")
        self.slots = asyncio.Semaphore(settings.max_in_flight)
        self.queued = 0
        self.runs: set = set()
        self.closing = False
        self.stats = Stats()

    async def start(self, job: Job) -> Run:
        """Start ``job`` when a slot is free (waiting in the queue until then); 429 when the
        queue is full, 503 once the server is shutting down."""
        if self.closing:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        if self.slots.locked() and self.queued >= self.settings.max_queue:
            raise ApiError(429, f"{len(self.runs)} runs in flight and {self.queued} requests waiting "
                                f"(--max-in-flight {self.settings.max_in_flight}, --max-queue "
                                f"{self.settings.max_queue}); try again later", code="queue_full")
        self.queued += 1
        waiting = time.perf_counter()
        try:
            await self.slots.acquire()
        finally:
            self.queued -= 1
        if self.closing:
            self.slots.release()
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        run = Run(job, self.solver, self.executor, queue_s=time.perf_counter() - waiting)
        self.runs.add(run)

        def finished(_future):
            self.runs.discard(run)
            self.slots.release()

        run.future.add_done_callback(finished)  # the slot is held until the worker is done
        return run

    async def close(self) -> None:
        """Refuse new jobs, abort the runs in flight and wait a little for them to end."""
        self.closing = True
        runs = list(self.runs)
        for run in runs:
            run.cancel()
        if runs:
            await asyncio.wait([run.future for run in runs], timeout=self.settings.abort_wait_s)
        self.executor.shutdown(wait=False, cancel_futures=True)


class Stats:
    """What ``GET /stats`` tells: the requests to the run routes (``RUN_PATHS``) answered, those
    that failed (an error status, or an error sent inside a stream that had begun), and per
    request that ran, the server's own time: from the request's arrival to the last byte of its
    response, less the wait for a run slot and the run itself (the solver's time on its worker
    thread). That is parsing, checking, handing the run to its thread and its steps back,
    and writing the response. The last ``keep`` values are kept, so memory stays bounded.

    >>> stats = Stats(keep=2)
    >>> for ms in (1.0, 2.0, 4.0):
    ...     stats.take(status=200, overhead_s=ms / 1000, queue_s=0.0)
    >>> body = stats.body(recent=2)
    >>> body["requests"], body["overhead_ms"]["count"], body["overhead_ms"]["recent"]
    ({'answered': 3, 'failed': 0, 'stream_errors': 0}, 3, [2.0, 4.0])
    """

    def __init__(self, keep: int = 1024):
        self.answered = 0
        self.failed = 0
        self.stream_errors = 0
        self.overhead_count = 0
        self.overhead_sum_ms = 0.0
        self.overhead_max_ms = 0.0
        self.queue_sum_ms = 0.0
        self.recent: "collections.deque[float]" = collections.deque(maxlen=keep)
        self.lock = threading.Lock()

    def take(self, status: Optional[int], overhead_s: Optional[float], queue_s: float = 0.0,
             stream_error: bool = False) -> None:
        """One answered request: its status (None: the client left before it), the server's own
        time (None: no run, or one that had not ended when the response did)."""
        with self.lock:
            self.answered += 1
            if status is None or status >= 400 or stream_error:
                self.failed += 1
            self.stream_errors += bool(stream_error)
            if overhead_s is not None:
                ms = 1000 * overhead_s
                self.overhead_count += 1
                self.overhead_sum_ms += ms
                self.overhead_max_ms = max(self.overhead_max_ms, ms)
                self.queue_sum_ms += 1000 * queue_s
                self.recent.append(round(ms, 4))

    def body(self, recent: int = 0) -> dict:
        """The JSON of ``GET /stats``; ``recent``: how many of the last overheads to list."""
        with self.lock:
            count = self.overhead_count
            out = {"requests": {"answered": self.answered, "failed": self.failed,
                                "stream_errors": self.stream_errors},
                   "overhead_ms": {"count": count, "mean": self.overhead_sum_ms / count if count else None,
                                   "max": self.overhead_max_ms if count else None,
                                   "sum": self.overhead_sum_ms, "keep": self.recent.maxlen},
                   "queue_wait_ms": {"sum": self.queue_sum_ms,
                                     "mean": self.queue_sum_ms / count if count else None}}
            if recent > 0:
                out["overhead_ms"]["recent"] = list(self.recent)[-recent:]
        return out


class _RequestTiming:
    """One request's figures, filled as it goes (the handler adds its run)."""

    def __init__(self):
        self.arrived = time.perf_counter()
        self.status: Optional[int] = None
        self.run: Optional[Run] = None
        self.stream_error = False


#: the ASGI scope key under which a request's ``_RequestTiming`` travels to its handler
TIMING_KEY = "sgl_specreason.timing"


class _Timing:
    """ASGI middleware: times each request to a run route from its arrival to the last byte of
    its response, and hands the figures to ``stats``."""

    def __init__(self, app, stats: Stats):
        self.app, self.stats = app, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in RUN_PATHS:
            return await self.app(scope, receive, send)
        timing = scope[TIMING_KEY] = _RequestTiming()
        ended: List[float] = []

        async def timed(message):
            if message["type"] == "http.response.start":
                timing.status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ended.append(time.perf_counter())

        try:
            await self.app(scope, receive, timed)
        finally:
            run = timing.run
            overhead = None
            if ended and run is not None and run.run_s is not None:
                overhead = max(0.0, ended[0] - timing.arrived - run.queue_s - run.run_s)
            self.stats.take(timing.status if ended else None, overhead,
                            run.queue_s if run is not None else 0.0, timing.stream_error)


@asynccontextmanager
async def _watching(request: Request, run: Run):
    """Cancel ``run`` if the client goes away while the block waits for it."""
    async def watch():
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await request.is_disconnected():
                run.cancel()
                return

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


def _sse(payload) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


# -- the app ------------------------------------------------------------------------------------------

def create_app(roles: Optional[Dict[str, Role]], cfg: SpecReasonConfig,
               settings: ServeSettings = ServeSettings(), solver: Optional[Solver] = None) -> FastAPI:
    """The ASGI app serving SpecReason on ``roles`` with ``cfg`` (a request may change some of
    it); ``solver`` replaces the programs (tests pass a scripted one)."""
    service = Service(solver or ProgramSolver(roles), settings)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await service.close()

    app = FastAPI(title="sgl-specreason", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_Timing, stats=service.stats)  # outermost: it sees every response

    @app.exception_handler(ApiError)
    async def on_api_error(_request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request, e: RequestValidationError):
        return _validation_error(e).response()

    @app.exception_handler(HTTPException)
    async def on_http(_request, e: HTTPException):
        return ApiError(e.status_code, str(e.detail)).response()

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer <key> (the server's "
                                "--api-key)", code="invalid_api_key")

    @app.get("/health")
    async def health():
        async def healthy(backend) -> bool:
            check = getattr(backend, "health", None)
            return True if check is None else await asyncio.to_thread(check, 5.0)

        replicas = [(name, replica.backend) for name, role in (roles or {}).items()
                    for replica in role.replicas or (role,)]
        answers = await asyncio.gather(*(healthy(backend) for _, backend in replicas))
        checks = {f"{name} {getattr(backend, 'base_url', '')}".strip(): answer
                  for (name, backend), answer in zip(replicas, answers)}
        ok = all(checks.values())
        body = {"status": "ok" if ok else "unavailable", "runtimes": checks,
                "in_flight": len(service.runs), "queued": service.queued}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/stats")
    async def stats(request: Request, recent: int = 0):
        check_key(request)
        body = service.stats.body(max(0, recent))
        body.update({"in_flight": len(service.runs), "queued": service.queued})
        return body

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        served = {name: getattr(role.backend, "model_path", None) for name, role in (roles or {}).items()}
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "sgl-specreason", "specreason": served}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check_key(request)
        job = chat_job(body, cfg)
        return await _respond(job, body.stream, request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_key(request)
        job = completion_job(body, cfg)
        return await _respond(job, body.stream, request, chat=False)

    async def _respond(job: Job, stream: Optional[bool], request: Request, chat: bool):
        created = int(time.time())
        run = await service.start(job)
        timing = request.scope.get(TIMING_KEY)
        if timing is not None:
            timing.run = run
        out = outputs(run)
        shape = _ChatShape(job, settings.model_name, created) if chat else _CompletionShape(job, settings.model_name, created)
        try:
            async with _watching(request, run):
                if not stream:
                    items = [item async for item in out]
                    return shape.whole("".join(i for i in items if isinstance(i, str)), items[-1])
                # awaited here, so that a run that fails before its first step gets its status code
                first = await out.__anext__()
        except asyncio.CancelledError:  # shutting down, and the grace period is over
            run.cancel()
            return ApiError(503, "the server is shutting down: the run was aborted", code="shutting_down").response()
        except BaseException:
            run.cancel()
            raise

        async def events():
            try:
                item = first
                while True:
                    if isinstance(item, Finished):
                        yield _sse(shape.last(item))
                        break
                    yield _sse(shape.piece(item))
                    item = await out.__anext__()
                yield _sse("[DONE]")
            except ApiError as e:  # after the status line: the error goes in the stream
                if timing is not None:
                    timing.stream_error = True
                yield _sse(e.body())
                yield _sse("[DONE]")
            finally:
                run.cancel()  # the client went away, or the stream ended early: nothing more is wanted

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


class _ChatShape:
    """Chat completion objects and chunks."""

    def __init__(self, job: Job, model: str, created: int):
        self.job, self.head = job, {"id": job.id, "created": created, "model": model}
        self.first = True

    def whole(self, text: str, end: Finished) -> dict:
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": end.finish_reason}],
                "usage": usage(end.result), "specreason": extension(end.result, self.job.cfg, self.job.trace)}

    def _chunk(self, delta: dict, finish: Optional[str]) -> dict:
        if self.first:
            delta, self.first = {"role": "assistant", **delta}, False
        return {**self.head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def piece(self, text: str) -> dict:
        return self._chunk({"content": text}, None)

    def last(self, end: Finished) -> dict:
        return {**self._chunk({}, end.finish_reason), "usage": usage(end.result),
                "specreason": extension(end.result, self.job.cfg, self.job.trace)}


class _CompletionShape:
    """Text completion objects and chunks."""

    def __init__(self, job: Job, model: str, created: int):
        self.job, self.head = job, {"id": job.id, "object": "text_completion", "created": created, "model": model}

    def _choice(self, text: str, finish: Optional[str]) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def whole(self, text: str, end: Finished) -> dict:
        return {**self.head, "choices": [self._choice(text, end.finish_reason)], "usage": usage(end.result),
                "specreason": extension(end.result, self.job.cfg, self.job.trace)}

    def piece(self, text: str) -> dict:
        return {**self.head, "choices": [self._choice(text, None)]}

    def last(self, end: Finished) -> dict:
        return self.whole("", end)


# -- the command ----------------------------------------------------------------------------------------

def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The server's own flags. Call after ``flags.add_runtime_flags`` on a parser made with
    ``conflict_handler="resolve"``: ``--api-key`` is the server's key here, the runtimes' is
    ``--runtime-api-key``."""
    from sgl_specreason.flags import positive_int

    group = parser.add_argument_group("serving")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; another needs --api-key or --allow-no-key)")
    group.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    group.add_argument("--api-key", dest="serve_api_key",
                       help="clients must send Authorization: Bearer KEY (default: no check, loopback only)")
    group.add_argument("--allow-no-key", action="store_true",
                       help="listen on a non-loopback address without --api-key")
    group.add_argument("--runtime-api-key", dest="api_key", help="API key of the given runtime servers")
    group.add_argument("--max-in-flight", type=positive_int, default=4,
                       help="SpecReason runs at once (default 4)")
    group.add_argument("--max-queue", type=int, default=64,
                       help="requests that wait for a run slot; the next one gets HTTP 429 (default 64)")
    group.add_argument("--max-body-bytes", type=positive_int, default=1 << 20,
                       help="largest request body (default 1 MiB)")
    group.add_argument("--grace-seconds", type=float, default=30.0,
                       help="on SIGTERM or Ctrl-C, how long requests in flight may take to finish "
                            "before they are aborted (default 30)")
    group.add_argument("--served-model-name", default="specreason",
                       help="the model name /v1/models lists (default specreason; requests may name any)")


def check_listen(host: str, api_key: Optional[str], allow_no_key: bool) -> None:
    """Refuse to listen on a non-loopback address without an API key, unless told to.

    >>> check_listen("0.0.0.0", None, False)
    Traceback (most recent call last):
    ...
    sgl_specreason.errors.ConfigError: --host 0.0.0.0 is not a loopback address: anyone who can reach it could use the runtimes. Pass --api-key KEY (clients then send it as a bearer token), or --allow-no-key if the network is yours
    """
    if api_key or allow_no_key or _is_loopback(host):
        return
    raise ConfigError(f"--host {host} is not a loopback address: anyone who can reach it could use the "
                      f"runtimes. Pass --api-key KEY (clients then send it as a bearer token), or "
                      f"--allow-no-key if the network is yours")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _check_port_free(host: str, port: int) -> None:
    """Fail before the runtimes start (minutes) if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None


def serve(args) -> int:
    """``sgl-specreason serve``: open the runtimes (the URLs given, or local servers), then
    serve until SIGTERM or Ctrl-C; requests in flight get ``--grace-seconds`` to finish, the
    rest are aborted, and the local servers are stopped."""
    import uvicorn

    from sgl_specreason.flags import config_from_args, runtime_options
    from sgl_specreason.modes import roles_for
    from sgl_specreason.runner import dry_run, open_runtimes

    cfg = config_from_args(args)
    check_listen(args.host, args.serve_api_key, args.allow_no_key)
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be at least 0, got {args.max_queue}")
    settings = ServeSettings(model_name=args.served_model_name, api_key=args.serve_api_key,
                             max_in_flight=args.max_in_flight, max_queue=args.max_queue,
                             max_body_bytes=args.max_body_bytes)
    opts = runtime_options(args, args.max_in_flight)
    if args.dry_run:
        print(f"# would serve http://{args.host}:{args.port}/v1 once the runtimes below are ready")
        return dry_run(opts, cfg, roles_for("specreason"))
    _check_port_free(args.host, args.port)
    with open_runtimes(opts, cfg, roles_for("specreason")) as roles:
        for role in roles.values():
            print(f"{role.name}: {role.backend.model_path} at {role.backend.base_url} "
                  f"(template {role.template.name})")
        print(f"judge: {cfg.score_method} score >= {cfg.threshold:g} keeps a drafted step; at most "
              f"{settings.max_in_flight} runs at once, {settings.max_queue} waiting")
        print(f"serving http://{args.host}:{args.port}/v1 (model {settings.model_name!r}"
              f"{', API key required' if settings.api_key else ''})")
        app = create_app(roles, cfg, settings)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                                               timeout_graceful_shutdown=args.grace_seconds))
        server.run()
    return 0
