"""What ``serve`` does with a request body between its schema and its response, without the web
server: the body checked (``schema``), turned into jobs (``jobs``), checked against the models'
templates, prefilled once for several choices, run on the service's slots, and answered whole.
The HTTP routes (``app``) and OpenAI Batch lines, on ``serve`` (``batches``) and offline
(``sgl-specreason batch``), all answer through one ``Answerer``, so a batch line's body is the
one a live request with the same body gets.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Type

from pydantic import BaseModel, ValidationError

from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import InputError, SpecReasonError
from sgl_specreason.serve.errors import ApiError, api_error, validation_error
from sgl_specreason.serve.jobs import Job, chat_jobs, completion_jobs
from sgl_specreason.serve.responses import ChatShape, CompletionShape
from sgl_specreason.serve.runs import Finished, Run, ServeSettings, Service, outputs
from sgl_specreason.serve.schema import ChatRequest, CompletionRequest
from sgl_specreason.trace import BASE

CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
#: the request schema of each URL a body may be sent to (a live request, or a batch line's ``url``)
SCHEMAS: Dict[str, Type[BaseModel]] = {CHAT_URL: ChatRequest, COMPLETIONS_URL: CompletionRequest}

#: a choice answered: its job, text, log-probabilities, and end
Done = Tuple[Job, str, list, Finished]


def parse_body(url: str, body) -> BaseModel:
    """``body`` (decoded JSON) checked by the schema of ``url``, as the route of that URL checks
    it: an ``ApiError`` (400) naming the field that is wrong, or a 404 for a URL serve has no
    route for (400: a batch line's ``url`` is one of its fields).

    >>> parse_body(CHAT_URL, {"model": "m", "messages": [], "temprature": 1})
    Traceback (most recent call last):
    ...
    sgl_specreason.serve.errors.ApiError: temprature: unknown or unsupported field; serve refuses what it would not honour (docs/usage.md lists every field it takes)
    """
    schema = SCHEMAS.get(url)
    if schema is None:
        raise ApiError(400, f"url: {url!r} is not one serve answers; use one of {', '.join(SCHEMAS)}", "url")
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        raise validation_error(e) from None


class Answerer:
    """Answers request bodies with ``solver``'s runs on ``service``'s slots, under the server's
    ``cfg`` and ``settings``; ``roles`` tell whose log-probabilities a response carries."""

    def __init__(self, service: Service, cfg: SpecReasonConfig, settings: ServeSettings,
                 roles: Optional[Dict[str, Role]] = None):
        self.service, self.solver, self.cfg, self.settings = service, service.solver, cfg, settings
        # whose log-probabilities a response carries: the base model's, or a one-model mode's own
        mode = getattr(self.solver, "mode", None)
        self.judged = mode is None or mode.judged
        self.scored_by = None if mode is None or roles is None else getattr(
            roles[BASE if BASE in mode.roles else mode.roles[0]].backend, "model_path", None)

    async def chat_jobs(self, body: ChatRequest) -> List[Job]:
        """The jobs of a chat body, checked against the models' templates, prefilled once when
        several start from one prompt."""
        jobs = chat_jobs(body, self.cfg, self.judged, self.settings.separate_reasoning)
        jobs = await self._checked(jobs)
        await self._warm(jobs)
        return jobs

    async def completion_jobs(self, body: CompletionRequest) -> List[Job]:
        """The jobs of a completion body (token ids decoded by the base model's tokenizer, an
        echoed prompt scored), prefilled once when several start from one prompt."""
        decode = getattr(self.solver, "decode", None)
        jobs = await asyncio.to_thread(completion_jobs, body, self.cfg, decode, self.judged)
        jobs = await self._echo_logprobs(jobs)
        await self._warm(jobs)
        return jobs

    async def whole(self, url: str, body, start: Optional[Callable[[Job], Awaitable[Run]]] = None) -> dict:
        """The response body serve gives ``body`` sent to ``url``, answered whole (a batch line:
        ``stream`` is refused); an ``ApiError`` as the route would answer it. ``start``: how a
        run gets its slot (``Service.start`` by default; ``Service.start_behind`` for batch lines)."""
        request = parse_body(url, body)
        if request.stream:
            raise ApiError(400, "stream: a batch line is answered whole; leave stream out or set it false",
                           "stream")
        chat = url == CHAT_URL
        jobs = await (self.chat_jobs(request) if chat else self.completion_jobs(request))
        runs = await start_all(start or self.service.start, jobs)
        done = await collect(runs)
        shape = (ChatShape if chat else CompletionShape)(jobs, self.settings.model_name, int(time.time()),
                                                          self.scored_by)
        return shape.whole(done)

    async def _echo_logprobs(self, jobs: List[Job]) -> List[Job]:
        """An echoed prompt with logprobs: its tokens as the base model scores them, once per prompt."""
        scores = getattr(self.solver, "prompt_logprobs", None)
        if scores is None or not jobs[0].echo or jobs[0].logprobs is None:
            return jobs
        scored = {}
        try:
            for job in jobs:
                if job.prompt not in scored:
                    scored[job.prompt] = await asyncio.to_thread(scores, job.prompt, job.logprobs)
        except Exception as e:
            raise api_error(e, "prompt") from None
        return [replace(job, prompt_logprobs=scored[job.prompt]) for job in jobs]

    async def _checked(self, jobs: List[Job]) -> List[Job]:
        """Chat jobs whose conversation every runtime's template takes (a 400 naming the messages
        otherwise), each told whether its reply opens as thinking."""
        thinking = getattr(self.solver, "thinking", None)
        if thinking is None or jobs[0].constraint is not None:
            return jobs
        try:
            # on the event loop: rendering a conversation's first prompt takes well under a
            # millisecond (bodies are capped by --max-body-bytes), and a hop to asyncio's thread
            # pool cost tens of ms a request when 32 arrived at once beside starting runs
            told = thinking(jobs[0])
        except InputError as e:
            raise ApiError(400, f"messages: {e}", "messages") from None
        except SpecReasonError as e:
            raise api_error(e, "messages") from None
        return jobs if jobs[0].thinking is None else [replace(job, thinking=told) for job in jobs]

    async def _warm(self, jobs: Sequence[Job]) -> None:
        """Several runs from one prompt: prefill it once first, so that they share it."""
        warm = getattr(self.solver, "warm", None)
        if warm is None:
            return
        firsts: dict = {}
        for job in jobs:
            firsts.setdefault(job.prompt or job.conversation, []).append(job)
        for group in firsts.values():
            if len(group) > 1:
                try:
                    await asyncio.to_thread(warm, group[0])
                except Exception as e:
                    raise api_error(e, "messages" if group[0].is_chat else "prompt") from None


async def start_all(start: Callable[[Job], Awaitable[Run]], jobs: Sequence[Job]) -> List[Run]:
    """A run per job, each started by ``start`` when it has a slot; if one cannot start, those
    started are aborted."""
    runs: List[Run] = []
    try:
        for job in jobs:
            runs.append(await start(job))
    except BaseException:
        for run in runs:
            run.cancel()
        raise
    return runs


async def collect(runs: Sequence[Run]) -> List[Done]:
    """Every choice whole, in the order of ``runs``; the first error ends them all (an
    ``ApiError``, as the response of the request)."""
    async def one(run: Run) -> Done:
        text, entries = "", []
        async for item in outputs(run):
            if isinstance(item, Finished):
                return run.job, text, entries, item
            text += item.text
            entries += item.logprobs
        raise ApiError(500, "a run ended without its end", code="internal_error")

    tasks = [asyncio.ensure_future(one(run)) for run in runs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException as e:
        for task in tasks:
            task.cancel()
        for run in runs:
            run.cancel()
        if isinstance(e, Exception):
            raise api_error(e, "messages" if runs[0].job.is_chat else "prompt") from None
        raise


def check_body(url: str, body, cfg: SpecReasonConfig, judged: bool = True) -> None:
    """Check ``body`` for ``url`` as serve would before any run, with no runtime at hand: its
    schema, ``stream`` (a batch line is answered whole), and every field serve refuses (an
    ``ApiError`` naming it). A completion's token-id prompt is decoded only when the line runs.

    >>> check_body(CHAT_URL, {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "seed": 3},
    ...            SpecReasonConfig())
    Traceback (most recent call last):
    ...
    sgl_specreason.serve.errors.ApiError: seed: per-request seeds do not reach the runtimes (SGLang's frontend sends none); seed the local runtimes with --seed instead
    """
    request = parse_body(url, body)
    if request.stream:
        raise ApiError(400, "stream: a batch line is answered whole; leave stream out or set it false", "stream")
    if url == CHAT_URL:
        chat_jobs(request, cfg, judged)
    else:
        completion_jobs(request, cfg, lambda ids: "(token ids, decoded when the line runs)", judged)
