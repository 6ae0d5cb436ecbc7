"""Errors in OpenAI's format: ``{"error": {"message", "type", "param", "code"}}``, and the
response each failure of a run gets. No web framework is imported here until a response is
built, so that ``batch`` (which answers OpenAI Batch lines as ``serve`` would) runs without one."""

from __future__ import annotations

import logging
from typing import Optional

from sgl_specreason.calls import Cancelled
from sgl_specreason.errors import (
    ConfigError,
    InputError,
    PromptTooLongError,
    RuntimeCallError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)

log = logging.getLogger("sgl_specreason.serve")


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

    def response(self):
        """The error as a JSON response of the web server."""
        from fastapi.responses import JSONResponse

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


def validation_error(e) -> ApiError:
    """The 400 of a body the schema refuses: ``e`` is FastAPI's ``RequestValidationError`` or
    pydantic's ``ValidationError`` (both list their ``errors()``), the first error named."""
    first = e.errors()[0]
    param = _param(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
    if param is None:
        return ApiError(400, "the body must be a JSON object")
    if first.get("type") == "extra_forbidden":
        return ApiError(400, f"{param}: unknown or unsupported field; serve refuses what it would not "
                             "honour (docs/usage.md lists every field it takes)", param)
    return ApiError(400, f"{param}: {first.get('msg')}", param)
