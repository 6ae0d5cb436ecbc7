"""The HTTP side of a runtime: one pooled ``httpx.Client`` per runtime, a deadline on every
request, resends where they are safe, and errors that name the runtime.

Connections. The client is shared by every thread that calls the endpoint (``httpx.Client`` is
thread-safe) and keeps up to ``connections`` keep-alive connections to its runtime, so the
three or four requests of a SpecReason step reuse open connections instead of opening one each.
A request that finds every connection busy waits for one, at most its read deadline. An idle
connection is closed after ``keepalive`` seconds: 4 s by default, before SGLang's server would
close it (5 s unless ``SGLANG_TIMEOUT_KEEP_ALIVE`` says otherwise), so a request is never sent
on a connection the server is closing; the local servers keep connections longer, and their
endpoints are told so. Proxies from the environment are not used: runtimes are reached directly.

Deadlines. Every request (generate, streamed generate, tokenize, abort, flush_cache, health,
model info) has a connect deadline (``connect_timeout``, at most ``timeout``) and a read
deadline (``timeout``, ``request_timeout``): the longest the runtime may stay silent, for a
stream the longest between two of its chunks.

Retries (``retries``, ``request_retries``), only where they are safe:

- a connection that could not be made (refused, unreachable, no answer to the connect): the
  request never reached the runtime; httpx's transport tries again, ``retries`` times, after
  0, 0.5, 1, 2 ... s;
- an HTTP 5xx, or a connection dropped before the answer came: the runtime may have begun the
  request. It is sent again as a new request, ``retries`` times at most (after 0.5, 1, 2 ... s;
  the policy is a ``tenacity.Retrying``).
  A generate request that carries a request id (``rid``: one that its caller can abort) gets a
  fresh one each time, so that it cannot collide with the first one, which may still be running
  on the runtime, and is registered anew in its cancel scope (an abort reaches it; a scope
  cancelled meanwhile stops it). Generation has no effect beyond the runtime's time, so
  sending it again is safe.
- never: a timeout (the runtime may still be working on it), a rejected request (HTTP 4xx), a
  stream that has begun, an abort.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import httpx
import orjson
import tenacity

from sgl_specreason.errors import (
    PromptTooLongError,
    RuntimeCallError,
    RuntimeServerError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)

TOO_LONG = re.compile(r"longer than the model's context length|exceeds the maximum|too long", re.I)

#: seconds SGLang's HTTP server keeps an idle connection (``SGLANG_TIMEOUT_KEEP_ALIVE`` unset)
SGLANG_KEEPALIVE_S = 5


def client_keepalive(server_keepalive_s: float) -> float:
    """Seconds the client keeps an idle connection to a server that keeps it
    ``server_keepalive_s``: one less, so that a request is never sent on a connection the
    server is closing."""
    return float(server_keepalive_s - 1)


#: seconds an idle keep-alive connection is kept by default (for SGLang's 5 s)
KEEPALIVE_S = client_keepalive(SGLANG_KEEPALIVE_S)

#: ``tokenizer=`` value that always asks the runtime


def dumps(payload) -> bytes:
    """JSON of a request; non-string keys become strings, as ``json.dumps`` makes them."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


def _resendable(error: BaseException) -> bool:
    """Whether a failed request may be sent again: an HTTP 5xx, or a connection dropped before
    the answer came (the errors that say so)."""
    return getattr(error, "resend", False)


class RuntimeHttp:
    """HTTP requests to one SGLang runtime (``role`` names it in errors): JSON in and out,
    streams, deadlines, resends."""

    def __init__(self, base_url: str, role: str = "runtime", timeout: float = 600.0,
                 api_key: Optional[str] = None, connect_timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5, connections: int = 64, keepalive: float = KEEPALIVE_S):
        self.retries = retries
        self.backoff = backoff
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.role = role
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connections = connections
        self.keepalive = keepalive
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                              keepalive_expiry=keepalive)
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, trust_env=False, follow_redirects=False,
            transport=httpx.HTTPTransport(retries=retries, limits=limits))

    def close(self) -> None:
        """Close the pooled connections (a later request opens new ones)."""
        self.client.close()

    @property
    def where(self) -> str:
        return f"{self.role} runtime at {self.base_url}"

    def _deadlines(self, limit: float) -> httpx.Timeout:
        return httpx.Timeout(limit, connect=min(self.connect_timeout, limit))

    def request(self, path: str, payload: Optional[dict] = None, timeout: Optional[float] = None,
                method: Optional[str] = None, parse: bool = True,
                renew: Optional[Callable[[dict], dict]] = None):
        """GET (no payload) or POST JSON to the runtime; the decoded JSON reply (or, with
        ``parse=False``, the reply's text: some endpoints answer in plain text). An HTTP 5xx or
        a dropped connection sends it again (``retries`` times at most), ``renew(payload)`` if
        given (a fresh request id)."""
        return self.with_resends(lambda p: self.send(path, p, timeout, method, parse),
                                  payload, renew)

    def with_resends(self, attempt, payload, renew):
        sending = [payload]

        def renew_before_resend(_state) -> None:  # raises Cancelled if the scope was cancelled
            if renew is not None:
                sending[0] = renew(sending[0])

        resends = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff),
            retry=tenacity.retry_if_exception(_resendable), before_sleep=renew_before_resend,
            reraise=True)
        try:
            return resends(lambda: attempt(sending[0]))
        except RuntimeCallError as e:
            tried = resends.statistics.get("attempt_number", 1)
            if _resendable(e) and tried > 1:
                raise type(e)(f"{e} (tried {tried} times)") from e
            raise

    def send(self, path, payload, timeout, method, parse):
        limit = self.timeout if timeout is None else timeout
        method = method or ("GET" if payload is None else "POST")
        content = None if payload is None else dumps(payload)
        try:
            response = self.client.request(method, path, content=content,
                                           timeout=self._deadlines(limit))
        except httpx.HTTPError as e:
            raise self.failure(e, path, limit) from e
        self.check_status(response.status_code, response.content, path)
        if not parse:
            return response.content.decode("utf-8", "replace")
        try:
            return orjson.loads(response.content)
        except ValueError as e:
            raise RuntimeCallError(f"{self.where} sent a reply to {path} that is not JSON") from e

    def check_status(self, code: int, body: bytes, path: str) -> None:
        if code < 400:
            return
        detail = body.decode("utf-8", "replace")[:500]
        if code == 400 and TOO_LONG.search(detail):
            raise PromptTooLongError(f"{self.where} rejected the prompt: {detail}")
        error = (RuntimeServerError if code >= 500 else RuntimeCallError)(
            f"{self.where} answered HTTP {code} to {path}: {detail}")
        error.resend = code >= 500
        error.status = code
        raise error

    def failure(self, e: httpx.HTTPError, path: str, limit: float, during: str = "") -> RuntimeCallError:
        """The error that says what went wrong with a request, for the person at the terminal."""
        where = self.where
        if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
            tried = f" (tried {self.retries + 1} times)" if self.retries else ""
            reason = (f"no connection within {min(self.connect_timeout, limit):g} s"
                      if isinstance(e, httpx.ConnectTimeout) else str(e) or type(e).__name__)
            return RuntimeUnavailableError(
                f"cannot reach the {where}: {reason}{tried}. Is the server running and the URL right?")
        if isinstance(e, httpx.PoolTimeout):
            return RuntimeTimeoutError(
                f"no connection to the {where} came free within {limit:g} s (all {self.connections} "
                f"busy); give it more connections or fewer requests at once")
        if isinstance(e, httpx.TimeoutException):
            what = f"send the next chunk of {path}" if during else f"answer {path}"
            return RuntimeTimeoutError(
                f"{where} did not {what} within {limit:g} s (request_timeout); "
                "is it overloaded or stopped?")
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            error = RuntimeUnavailableError(
                f"the {where} dropped the connection during {path}{during} ({e!r}); did it die?")
            error.resend = not during
            return error
        return RuntimeUnavailableError(f"cannot reach the {where}: {e!r}")

    def open_stream(self, payload: dict) -> httpx.Response:
        path, limit = "/generate", self.timeout
        request = self.client.build_request("POST", path, content=dumps(payload),
                                            timeout=self._deadlines(limit))
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as e:
            raise self.failure(e, path, limit) from e
        if response.status_code >= 400:
            try:
                body = response.read()
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            self.check_status(response.status_code, body, path)
        return response

    def chunks(self, response: httpx.Response):
        path, pos, done = "/generate", 0, False
        try:
            for line in response.iter_lines():  # to the end: a connection read to its end is kept
                if done or not line.startswith("data:"):
                    continue
                line = line[5:].strip()
                if line == "[DONE]":
                    done = True
                    continue
                try:
                    obj = orjson.loads(line)
                except ValueError as e:
                    raise RuntimeCallError(f"{self.where} streamed a chunk of {path} that is not "
                                           "JSON") from e
                if "error" in obj:  # SGLang reports a failure inside the stream
                    error = obj["error"]
                    detail = str(error.get("message", error) if isinstance(error, dict) else error)[:500]
                    if TOO_LONG.search(detail):
                        raise PromptTooLongError(f"{self.where} rejected the prompt: {detail}")
                    raise RuntimeCallError(f"{self.where} ended the stream of {path} with an error: {detail}")
                text = obj["text"][pos:]
                pos += len(text)
                yield text, obj["meta_info"]
        except httpx.HTTPError as e:
            raise self.failure(e, path, self.timeout, during=" (streaming)") from e

