"""A request checked and turned into a job, and the solver that runs a job's program on the
runtimes."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from sgl_specreason.calls import Cancelled, CancelScope, Role, ScopedBackend, call
from sgl_specreason.chat import Conversation, conversation
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import (
    ConfigError,
    InputError,
    SpecReasonError,
)
from sgl_specreason.problems import make_problem
from sgl_specreason.programs import continuation, specreason
from sgl_specreason.serve.errors import ApiError
from sgl_specreason.serve.schema import (
    ChatRequest,
    CommonRequest,
    CompletionRequest,
    Message,
    SpecReasonOptions,
)
from sgl_specreason.templates import Continuation
from sgl_specreason.trace import BASE, DRAFT, ProblemResult, Step


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


def _common_checks(body: CommonRequest) -> None:
    if body.n not in (None, 1):
        raise ApiError(400, f"n: only n = 1 is supported (one SpecReason run per request), got {body.n}", "n")
    if body.logprobs:
        raise ApiError(400, "logprobs: SpecReason returns no log-probabilities", "logprobs")


def _config(cfg: SpecReasonConfig, body: CommonRequest, budget: Optional[int], budget_param: str) -> SpecReasonConfig:
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
