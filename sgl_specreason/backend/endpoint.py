"""An SGLang ``RuntimeEndpoint`` with what the stock one lacks: one pooled HTTP client with a
deadline on every request, clear errors, and token counts without a round trip.

The frontend's own calls open a new connection per request and have no timeout (streaming goes
through ``requests`` with none at all), so a runtime that stops answering would hang a program
for ever, and a refused connection surfaces as a bare ``URLError``. ``Endpoint`` sends the same
requests through one ``httpx.Client`` per runtime and turns failures into errors that name the
runtime.

``RuntimeHttp`` (``backend.http``) holds the connections, deadlines and resends; ``RuntimeLoad``
(``backend.load``) counts what is in flight.

Tokens. ``tokenize`` gives the token ids the runtime's ``/tokenize`` would (``encode`` with its
special tokens, as SGLang's endpoint does). Where the runtime's tokenizer is at hand (the
runtime's model or tokenizer folder exists here, or a folder is given as ``tokenizer``), they
are computed in process with one cached tokenizer per folder, checked once against the
runtime's ``/tokenize`` on a probe text; otherwise, or when the probe disagrees, the runtime is
asked.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Iterator, List, Optional

import tenacity
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template_by_model_path
from sglang.lang.global_config import global_config

from sgl_specreason import tokens
from sgl_specreason.backend.http import KEEPALIVE_S, RuntimeHttp
from sgl_specreason.backend.load import RuntimeLoad
from sgl_specreason.errors import RuntimeCallError

#: ``tokenizer=`` value that always asks the runtime
ASK_RUNTIME = "runtime"
#: seconds a reading of the runtime's queue is used before it is read again (``saturated``)
QUEUE_READ_S = 1.0


#: what SGLang answers ``/flush_cache`` (HTTP 400) while requests are running or queued
FLUSH_REFUSED = "Flush cache failed"


def _flush_refused(error: BaseException) -> bool:
    return FLUSH_REFUSED in str(error)


class Endpoint(RuntimeHttp, RuntimeEndpoint):
    """``RuntimeEndpoint`` over one pooled HTTP client, with deadlines and errors naming the
    runtime.

    >>> draft = Endpoint("http://127.0.0.1:30001", role="draft", timeout=120)  # doctest: +SKIP
    """

    def __init__(self, base_url: str, role: str = "runtime", timeout: float = 600.0,
                 api_key: Optional[str] = None, connect_timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5, connections: int = 64, tokenizer: Optional[str] = None,
                 keepalive: float = KEEPALIVE_S):
        BaseBackend.__init__(self)
        RuntimeHttp.__init__(self, base_url, role, timeout, api_key, connect_timeout, retries, backoff,
                             connections, keepalive)
        self.support_concate_and_append = True
        self.verify = None
        #: generate requests in flight and busy time (read by ``speculation`` and load tests)
        self.load = RuntimeLoad()
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
        self._queue_lock = threading.Lock()
        self._queue_read_at: Optional[float] = None
        self._queue_full = False
        self._max_running: Optional[int] = None  # from /server_info, where /v1/loads is missing

    @property
    def model_path(self) -> str:
        return self.model_info["model_path"]

    def __repr__(self) -> str:
        return f"Endpoint({self.role} at {self.base_url})"

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
            response = self.with_resends(self.open_stream, scoped.first(data), scoped.renew)
            try:
                yield from self.chunks(response)
            finally:
                response.close()

    def abort(self, rid: str) -> None:
        """Ask the runtime to stop request ``rid``; it answers that request at once with what it
        has (finish reason ``abort``). Behind SGLang's router, which does not forward the abort,
        every worker it lists is asked (only the one running ``rid`` has it). Best effort: a
        request that already ended is left as is."""
        limit = min(10.0, self.timeout)
        try:
            self.send("/abort_request", {"rid": rid}, limit, None, False)
            return
        except RuntimeCallError as e:
            if getattr(e, "status", None) != 404:
                return  # the request will simply run to its end
        for worker in self.workers():
            try:
                self.send(worker + "/abort_request", {"rid": rid}, limit, None, False)
            except RuntimeCallError:
                pass

    def workers(self) -> List[str]:
        """The healthy workers behind this URL when it is SGLang's router (``GET /workers``);
        none when it is a runtime itself or does not answer."""
        try:
            listed = self.send("/workers", None, min(10.0, self.timeout), None, True)
        except RuntimeCallError:
            return []
        entries = listed.get("workers") if isinstance(listed, dict) else None
        return [w["url"].rstrip("/") for w in entries or () if isinstance(w, dict) and w.get("url")
                and w.get("is_healthy", True)]

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

    def saturated(self) -> bool:
        """Whether requests wait at the runtime, or its running batch is full: SGLang's own counts
        (``GET /v1/loads``, ``num_waiting_reqs`` and ``num_running_reqs`` against
        ``max_running_requests``), read at most every ``QUEUE_READ_S`` seconds. Where the runtime
        does not answer that (a router in front of it), the requests this process has in flight
        against the server's ``max_running_requests``; False where neither is known."""
        with self._queue_lock:
            now = time.monotonic()
            if self._queue_read_at is not None and now - self._queue_read_at < QUEUE_READ_S:
                return self._queue_full
            self._queue_read_at = now
            self._queue_full = self._read_queue()
            return self._queue_full

    def _read_queue(self) -> bool:
        try:
            loads = self.request("/v1/loads?include=core", timeout=5.0).get("loads") or []
            return any(x.get("num_waiting_reqs", 0) > 0
                       or 0 < x.get("max_running_requests", 0) <= x.get("num_running_reqs", 0)
                       for x in loads)
        except (RuntimeCallError, AttributeError, TypeError):
            pass
        if self._max_running is None:
            try:
                info = self.request("/server_info", timeout=5.0)
                self._max_running = int(info.get("max_running_requests") or 0)
            except (RuntimeCallError, AttributeError, TypeError, ValueError):
                self._max_running = 0
        return 0 < self._max_running <= self.load.in_flight

    def start_profile(self):
        self.request("/start_profile", {}, method="POST", parse=False)

    def stop_profile(self):
        self.request("/stop_profile", {}, method="POST", parse=False)

    def flush_cache(self, wait_s: float = 120.0):
        """Empty the runtime's radix cache (SGLang answers in plain text). SGLang empties only an
        idle runtime and refuses while requests are running or queued (requests a client gave up
        on may still be finishing), so a refusal is tried again, backing off, for ``wait_s``."""
        busy = tenacity.Retrying(stop=tenacity.stop_after_delay(wait_s),
                                 wait=tenacity.wait_exponential(multiplier=0.05, max=2.0),
                                 retry=tenacity.retry_if_exception(_flush_refused), reraise=True)
        try:
            busy(lambda: self.request("/flush_cache", {}, method="POST", parse=False))
        except RuntimeCallError as e:
            if not _flush_refused(e):
                raise
            raise RuntimeCallError(f"the {self.role} runtime at {self.base_url} still had requests running or "
                                   f"queued after {wait_s:g} s, and SGLang empties only an idle cache: {e}") from e

    def health(self, timeout: float = 10.0) -> bool:
        """True when the runtime answers ``/health`` in time."""
        try:
            self.send("/health", None, timeout, None, False)
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
        """Token ids of each text from the runtime's ``/tokenize`` (a round trip); behind SGLang's
        router, which does not forward it, from one of its workers."""
        payload = {"prompt": list(texts), "add_special_tokens": True}
        try:
            return self.request("/tokenize", payload)["tokens"]
        except RuntimeCallError as e:
            workers = self.workers() if getattr(e, "status", None) == 404 else []
            if not workers:
                raise
        return self.request(workers[0] + "/tokenize", payload)["tokens"]

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
