"""The ASGI app: routes, the API key, the body limit, and a client that goes away."""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from typing import Dict, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve.errors import ApiError, validation_error
from sgl_specreason.serve.jobs import (
    Job,
    ProgramSolver,
    Solver,
    chat_job,
    completion_job,
)
from sgl_specreason.serve.responses import ChatShape, CompletionShape, sse
from sgl_specreason.serve.runs import Finished, Run, ServeSettings, Service, outputs
from sgl_specreason.serve.schema import ChatRequest, CompletionRequest
from sgl_specreason.serve.stats import TIMING_KEY, RequestTimer

#: seconds between two looks at whether a waiting client is still there
DISCONNECT_POLL_S = 0.25


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
    app.add_middleware(RequestTimer, stats=service.stats)  # outermost: it sees every response

    @app.exception_handler(ApiError)
    async def on_api_error(_request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request, e: RequestValidationError):
        return validation_error(e).response()

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
        shape = ChatShape(job, settings.model_name, created) if chat else CompletionShape(job, settings.model_name, created)
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
                        yield sse(shape.last(item))
                        break
                    yield sse(shape.piece(item))
                    item = await out.__anext__()
                yield sse("[DONE]")
            except ApiError as e:  # after the status line: the error goes in the stream
                if timing is not None:
                    timing.stream_error = True
                yield sse(e.body())
                yield sse("[DONE]")
            finally:
                run.cancel()  # the client went away, or the stream ended early: nothing more is wanted

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
