"""The ASGI app: routes, the API key, the body limit, and a client that goes away."""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from typing import Dict, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve.errors import ApiError, validation_error
from sgl_specreason.serve.files import FileStore
from sgl_specreason.serve.answering import Answerer
from sgl_specreason.serve.batch_routes import batch_router
from sgl_specreason.serve.batches import Batches
from sgl_specreason.serve.replies import respond
from sgl_specreason.serve.runs import ServeSettings, Service
from sgl_specreason.serve.schema import ChatRequest, CompletionRequest
from sgl_specreason.serve.solver import ProgramSolver, Solver
from sgl_specreason.serve.stats import RequestTimer


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int, flag: str):
        super().__init__(413, f"the body is larger than {limit} bytes ({flag})")


class _BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes, by its Content-Length or as it
    arrives (chunked); an upload to ``/v1/files`` may take ``file_limit`` (a batch's input)."""

    def __init__(self, app, limit: int, file_limit: int):
        self.app, self.body_limit, self.file_limit = app, limit, file_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope.get("path") == "/v1/files"
        # the multipart form around a file takes a little more than the file itself
        limit = self.file_limit + (1 << 16) if upload else self.body_limit
        flag = "--max-file-bytes" if upload else "--max-body-bytes"
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            error = ApiError(413, f"the body is larger than {limit} bytes ({flag})")
            return await error.response()(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit, flag)
            return message

        await self.app(scope, limited, send)


def create_app(roles: Optional[Dict[str, Role]], cfg: SpecReasonConfig,
               settings: ServeSettings = ServeSettings(), solver: Optional[Solver] = None) -> FastAPI:
    """The ASGI app serving SpecReason on ``roles`` with ``cfg`` (a request may change some of
    it); ``solver`` replaces the programs (tests pass a scripted one)."""
    solver = solver or ProgramSolver(roles, settings.mode)
    service = Service(solver, settings)
    answerer = Answerer(service, cfg, settings, roles)
    batches = None
    if settings.data_dir is not None:
        files = FileStore(settings.data_dir / "files", settings.files_keep_s)
        batches = Batches(settings.data_dir / "batches", files, answerer, settings.batch_share,
                          settings.max_batch_lines)

    @asynccontextmanager
    async def lifespan(_app):
        if batches is not None:
            batches.start()  # unfinished batches of an earlier run first
        yield
        if batches is not None:
            await batches.stop()  # before the runs are aborted: an aborted line is not written
        await service.close()

    app = FastAPI(title="sgl-specreason", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service
    app.state.batches = batches
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes, file_limit=settings.max_file_bytes)
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

    app.include_router(batch_router(settings, check_key, lambda: batches))

    @app.get("/health")
    async def health():
        async def healthy(backend) -> bool:
            check = getattr(backend, "health", None)
            return True if check is None else await asyncio.to_thread(check, 5.0)

        runtimes = [(name, role.backend) for name, role in (roles or {}).items()]
        answers = await asyncio.gather(*(healthy(backend) for _, backend in runtimes))
        checks = {f"{name} {getattr(backend, 'base_url', '')}".strip(): answer
                  for (name, backend), answer in zip(runtimes, answers)}
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

    context: list = []  # the shortest context of the runtimes, once asked

    def model_card() -> dict:
        served = {name: getattr(role.backend, "model_path", None) for name, role in (roles or {}).items()}
        if not context:
            context.append(_context_length(roles))
        return {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "sgl-specreason",
                "root": settings.model_name, "max_model_len": context[0], "specreason": served}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [await asyncio.to_thread(model_card)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        check_key(request)
        if model_id != settings.model_name:
            raise ApiError(404, f"The model '{model_id}' does not exist (this server serves "
                                f"'{settings.model_name}')", "model", "model_not_found")
        return await asyncio.to_thread(model_card)

    def include_usage(body) -> bool:
        return bool(body.stream_options and body.stream_options.include_usage)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        check_key(request)
        jobs = await answerer.chat_jobs(body)
        return await respond(service, jobs, bool(body.stream), request, True, settings.model_name,
                             include_usage(body), answerer.scored_by)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_key(request)
        jobs = await answerer.completion_jobs(body)
        return await respond(service, jobs, bool(body.stream), request, False, settings.model_name,
                             include_usage(body), answerer.scored_by)

    return app


def _context_length(roles: Optional[Dict[str, Role]]) -> Optional[int]:
    """The shortest context of the runtimes, as their own ``/v1/models`` tells it (None when
    none tells)."""
    lengths = []
    for role in (roles or {}).values():
        ask = getattr(role.backend, "request", None)
        if ask is None:
            continue
        try:
            data = ask("/v1/models", timeout=10.0).get("data") or []
        except Exception:  # a runtime that does not answer: the card goes without it
            continue
        lengths += [m["max_model_len"] for m in data if isinstance(m.get("max_model_len"), int)]
    return min(lengths) if lengths else None
