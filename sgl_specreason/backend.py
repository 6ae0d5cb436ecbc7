"""An SGLang ``RuntimeEndpoint`` with what the stock one lacks: one pooled HTTP client with a
deadline on every request, clear errors, and token counts without a round trip.

The frontend's own calls open a new connection per request and have no timeout (streaming goes
through ``requests`` with none at all), so a runtime that stops answering would hang a program
for ever, and a refused connection surfaces as a bare ``URLError``. ``Endpoint`` sends the same
requests through one ``httpx.Client`` per runtime and turns failures into errors that name the
runtime.

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

Tokens. ``tokenize`` gives the token ids the runtime's ``/tokenize`` would (``encode`` with its
special tokens, as SGLang's endpoint does). Where the runtime's tokenizer is at hand (the
runtime's model or tokenizer folder exists here, or a folder is given as ``tokenizer``), they
are computed in process with one cached tokenizer per folder, checked once against the
runtime's ``/tokenize`` on a probe text; otherwise, or when the probe disagrees, the runtime is
asked.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Callable, Iterator, List, Optional

import httpx
import orjson
import tenacity
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template_by_model_path
from sglang.lang.global_config import global_config

from sgl_specreason import tokens
from sgl_specreason.errors import (
    PromptTooLongError,
    RuntimeCallError,
    RuntimeServerError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)

_TOO_LONG = re.compile(r"longer than the model's context length|exceeds the maximum|too long", re.I)

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
ASK_RUNTIME = "runtime"


def _dumps(payload) -> bytes:
    """JSON of a request; non-string keys become strings, as ``json.dumps`` makes them."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


def _resendable(error: BaseException) -> bool:
    """Whether a failed request may be sent again: an HTTP 5xx, or a connection dropped before
    the answer came (the errors that say so)."""
    return getattr(error, "resend", False)


class RuntimeLoad:
    """The generate requests this process has in flight to one runtime, and the seconds it had
    any: the runtime's busy time as its clients see it. A ``with`` block counts one request.

    >>> load = RuntimeLoad()
    >>> with load:
    ...     load.in_flight
    1
    >>> load.in_flight, load.busy_seconds() > 0
    (0, True)
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.in_flight = 0
        self._busy_s = 0.0
        self._since = 0.0

    def __enter__(self) -> "RuntimeLoad":
        with self._lock:
            if self.in_flight == 0:
                self._since = time.monotonic()
            self.in_flight += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._busy_s += time.monotonic() - self._since

    def busy_seconds(self) -> float:
        with self._lock:
            return self._busy_s + (time.monotonic() - self._since if self.in_flight else 0.0)


class Endpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` over one pooled HTTP client, with deadlines and errors naming the
    runtime.

    >>> draft = Endpoint("http://127.0.0.1:30001", role="draft", timeout=120)  # doctest: +SKIP
    """

    def __init__(self, base_url: str, role: str = "runtime", timeout: float = 600.0,
                 api_key: Optional[str] = None, connect_timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5, connections: int = 64, tokenizer: Optional[str] = None,
                 keepalive: float = KEEPALIVE_S):
        BaseBackend.__init__(self)
        self.retries = retries
        self.backoff = backoff
        self.support_concate_and_append = True
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = None
        self.role = role
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connections = connections
        self.keepalive = keepalive
        #: generate requests in flight and busy time (read by ``speculation`` and load tests)
        self.load = RuntimeLoad()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                              keepalive_expiry=keepalive)
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, trust_env=False, follow_redirects=False,
            transport=httpx.HTTPTransport(retries=retries, limits=limits))
        self._tokenizer_choice = tokenizer
        self._tokenizer = None  # the in-process tokenizer, once chosen and checked
        self._tokenizer_decided = False
        self._tokenizer_lock = threading.Lock()
        #: why tokens are counted by the runtime, not here (None while in process or undecided)
        self.tokenizer_note: Optional[str] = None
        try:
            self.model_info = self.request("/get_model_info", timeout=min(timeout, connect_timeout))
        except BaseException:
            self.client.close()
            raise
        self.chat_template = get_chat_template_by_model_path(self.model_info["model_path"])

    @property
    def model_path(self) -> str:
        return self.model_info["model_path"]

    def __repr__(self) -> str:
        return f"Endpoint({self.role} at {self.base_url})"

    def close(self) -> None:
        """Close the pooled connections (a later request opens new ones)."""
        self.client.close()

    # -- HTTP ---------------------------------------------------------------------------------
    @property
    def _where(self) -> str:
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
        return self._with_resends(lambda p: self._send(path, p, timeout, method, parse),
                                  payload, renew)

    def _with_resends(self, attempt, payload, renew):
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

    def _send(self, path, payload, timeout, method, parse):
        limit = self.timeout if timeout is None else timeout
        method = method or ("GET" if payload is None else "POST")
        content = None if payload is None else _dumps(payload)
        try:
            response = self.client.request(method, path, content=content,
                                           timeout=self._deadlines(limit))
        except httpx.HTTPError as e:
            raise self._failure(e, path, limit) from e
        self._check_status(response.status_code, response.content, path)
        if not parse:
            return response.content.decode("utf-8", "replace")
        try:
            return orjson.loads(response.content)
        except ValueError as e:
            raise RuntimeCallError(f"{self._where} sent a reply to {path} that is not JSON") from e

    def _check_status(self, code: int, body: bytes, path: str) -> None:
        if code < 400:
            return
        detail = body.decode("utf-8", "replace")[:500]
        if code == 400 and _TOO_LONG.search(detail):
            raise PromptTooLongError(f"{self._where} rejected the prompt: {detail}")
        error = (RuntimeServerError if code >= 500 else RuntimeCallError)(
            f"{self._where} answered HTTP {code} to {path}: {detail}")
        error.resend = code >= 500
        raise error

    def _failure(self, e: httpx.HTTPError, path: str, limit: float, during: str = "") -> RuntimeCallError:
        """The error that says what went wrong with a request, for the person at the terminal."""
        where = self._where
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

    # -- the calls the frontend makes -----------------------------------------------------------
    def _payload(self, s, sampling_params) -> dict:
        self._handle_dtype_to_regex(sampling_params)
        data = {
            "text": s.text_,
            "sampling_params": {
                "skip_special_tokens": global_config.skip_special_tokens_in_output,
                "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
                **sampling_params.to_srt_kwargs(),
            },
        }
        for item in ("return_logprob", "logprob_start_len", "top_logprobs_num",
                     "return_text_in_logprobs"):
            value = getattr(sampling_params, item, None)
            if value is not None:
                data[item] = value
        self._add_images(s, data)
        return data

    def generate(self, s, sampling_params):
        data = self._payload(s, sampling_params)
        with self.load, _Scoped(s, self) as scoped:
            obj = self.request("/generate", scoped.first(data), renew=scoped.renew)
        return obj["text"], obj["meta_info"]

    def generate_stream(self, s, sampling_params) -> Iterator:
        """``generate`` as SGLang streams it: (new text, ``meta_info``) per chunk, each chunk
        within the read deadline. Sent again only while nothing has come back."""
        data = self._payload(s, sampling_params)
        data["stream"] = True
        with self.load, _Scoped(s, self) as scoped:
            response = self._with_resends(self._open_stream, scoped.first(data), scoped.renew)
            try:
                yield from self._chunks(response)
            finally:
                response.close()

    def _open_stream(self, payload: dict) -> httpx.Response:
        path, limit = "/generate", self.timeout
        request = self.client.build_request("POST", path, content=_dumps(payload),
                                            timeout=self._deadlines(limit))
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as e:
            raise self._failure(e, path, limit) from e
        if response.status_code >= 400:
            try:
                body = response.read()
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            self._check_status(response.status_code, body, path)
        return response

    def _chunks(self, response: httpx.Response):
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
                    raise RuntimeCallError(f"{self._where} streamed a chunk of {path} that is not "
                                           "JSON") from e
                if "error" in obj:  # SGLang reports a failure inside the stream
                    error = obj["error"]
                    detail = str(error.get("message", error) if isinstance(error, dict) else error)[:500]
                    if _TOO_LONG.search(detail):
                        raise PromptTooLongError(f"{self._where} rejected the prompt: {detail}")
                    raise RuntimeCallError(f"{self._where} ended the stream of {path} with an error: {detail}")
                text = obj["text"][pos:]
                pos += len(text)
                yield text, obj["meta_info"]
        except httpx.HTTPError as e:
            raise self._failure(e, path, self.timeout, during=" (streaming)") from e

    def abort(self, rid: str) -> None:
        """Ask the runtime to stop request ``rid``; it answers that request at once with what it
        has (finish reason ``abort``). Best effort: a request that already ended is left as is."""
        try:
            self._send("/abort_request", {"rid": rid}, min(10.0, self.timeout), None, False)
        except RuntimeCallError:
            pass  # the request will simply run to its end

    def _prefill_only(self, text: str, s=None):
        data = {"text": text, "sampling_params": {"max_new_tokens": 0}}
        if s is not None:
            self._add_images(s, data)
        self.request("/generate", data)

    def cache_prefix(self, prefix_str: str):
        self._prefill_only(prefix_str)

    def commit_lazy_operations(self, s):
        self._prefill_only(s.text_, s)

    def fill_image(self, s):
        self._prefill_only(s.text_, s)

    def _generate_http_request(self, s, data):
        self._add_images(s, data)
        return self.request("/generate", data)

    def concatenate_and_append(self, src_rids: List[str], dst_rid: str):
        self.request("/concate_and_append_request", {"src_rids": src_rids, "dst_rid": dst_rid},
                     parse=False)

    def get_server_info(self):
        return self.request("/server_info")

    def start_profile(self):
        self.request("/start_profile", {}, method="POST", parse=False)

    def stop_profile(self):
        self.request("/stop_profile", {}, method="POST", parse=False)

    def flush_cache(self):
        """Empty the runtime's radix cache (SGLang answers in plain text)."""
        self.request("/flush_cache", {}, method="POST", parse=False)

    def health(self, timeout: float = 10.0) -> bool:
        """True when the runtime answers ``/health`` in time."""
        try:
            self._send("/health", None, timeout, None, False)
            return True
        except RuntimeCallError:
            return False

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, texts: List[str]) -> List[List[int]]:
        """Token ids of each text as the runtime's ``/generate`` would see them: in process
        where the runtime's tokenizer is at hand (see the module's docstring), else from the
        runtime's ``/tokenize``."""
        tokenizer = self.prepare_tokenizer()
        if tokenizer is None:
            return self.tokenize_on_runtime(texts)
        return tokens.encode(tokenizer, texts)

    def tokenize_on_runtime(self, texts: List[str]) -> List[List[int]]:
        """Token ids of each text from the runtime's ``/tokenize`` (a round trip)."""
        reply = self.request("/tokenize", {"prompt": list(texts), "add_special_tokens": True})
        return reply["tokens"]

    def prepare_tokenizer(self):
        """The in-process tokenizer, or None when the runtime is asked; the first call loads it
        and checks it against the runtime (a command calls it before its clock starts)."""
        if self._tokenizer_decided:
            return self._tokenizer
        with self._tokenizer_lock:
            if not self._tokenizer_decided:
                self._tokenizer, self.tokenizer_note = self._choose_tokenizer()
                self._tokenizer_decided = True
        return self._tokenizer

    def _choose_tokenizer(self):
        choice = self._tokenizer_choice
        if choice == ASK_RUNTIME:
            return None, "asked for (tokenizer: runtime)"
        folder = tokens.tokenizer_folder(choice) if choice else (
            tokens.tokenizer_folder(self.model_info.get("tokenizer_path"))
            or tokens.tokenizer_folder(self.model_info.get("model_path")))
        if folder is None:
            given = f"{choice} holds no tokenizer" if choice else \
                f"the runtime's tokenizer ({self.model_info.get('tokenizer_path') or self.model_path}) is not a folder here"
            return None, given
        try:
            tokenizer = tokens.local_tokenizer(folder)
        except Exception as e:  # a folder transformers cannot read: the runtime still can
            return None, f"the tokenizer in {folder} did not load here ({type(e).__name__}: {e})"
        here = tokens.encode(tokenizer, tokens.PROBES)
        there = self.tokenize_on_runtime(tokens.PROBES)
        if here != there:
            return None, f"the tokenizer in {folder} counts tokens unlike the runtime's /tokenize"
        return tokenizer, None


class _Scoped:
    """A generate request's request id in the cancel scope of the program that sends it.

    A program run with a cancel scope (``calls.CancelScope``) can have its requests aborted:
    each carries a request id registered in the scope while it runs. Sent again, it carries a
    fresh id, registered in its stead (a scope cancelled meanwhile refuses it: ``Cancelled``).
    Without a scope a request carries no id; the runtime gives every request its own."""

    def __init__(self, s, backend):
        arguments = getattr(s, "arguments", None)
        self.scope = arguments.get("cancel") if isinstance(arguments, dict) else None
        self.backend = backend
        self.rid: Optional[str] = None

    def __enter__(self) -> "_Scoped":
        return self

    def __exit__(self, *exc) -> None:
        if self.rid is not None:
            self.scope.leave(self.rid)

    def first(self, data: dict) -> dict:
        return data if self.scope is None else self.renew(data)

    def renew(self, data: dict) -> dict:
        if self.scope is None:
            return data
        if self.rid is not None:
            self.scope.leave(self.rid)
            self.rid = None
        rid = uuid.uuid4().hex
        self.scope.enter(rid, self.backend)  # raises Cancelled once the scope was cancelled
        self.rid = rid
        return {**data, "rid": rid}
