"""An SGLang ``RuntimeEndpoint`` with what the stock one lacks: timeouts and clear errors.

The frontend's HTTP calls have no timeout, so a runtime that stops answering would hang a
program forever, and a refused connection surfaces as a bare ``URLError``. ``Endpoint`` sends
the same requests with a deadline and turns failures into errors that name the runtime. What is
safe to send again (a refused or dropped connection, an HTTP 5xx: generation has no side
effects) is retried a bounded number of times with exponential backoff; a timeout is not (the
runtime may still be working on it) and neither is a rejected request (HTTP 4xx).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import List, Optional

from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template_by_model_path
from sglang.lang.global_config import global_config

from sgl_specreason.errors import (
    PromptTooLongError,
    RuntimeCallError,
    RuntimeServerError,
    RuntimeTimeoutError,
    RuntimeUnavailableError,
)

_TOO_LONG = re.compile(r"longer than the model's context length|exceeds the maximum|too long", re.I)


class Endpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` with a per-request timeout and errors naming the runtime.

    >>> draft = Endpoint("http://127.0.0.1:30001", role="draft", timeout=120)  # doctest: +SKIP
    """

    def __init__(self, base_url: str, role: str = "runtime", timeout: float = 600.0,
                 api_key: Optional[str] = None, connect_timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5):
        BaseBackend.__init__(self)
        self.retries = retries
        self.backoff = backoff
        self.support_concate_and_append = True
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.verify = None
        self.role = role
        self.timeout = timeout
        self.model_info = self.request("/get_model_info", timeout=min(timeout, connect_timeout))
        self.chat_template = get_chat_template_by_model_path(self.model_info["model_path"])

    @property
    def model_path(self) -> str:
        return self.model_info["model_path"]

    def __repr__(self) -> str:
        return f"Endpoint({self.role} at {self.base_url})"

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, path: str, payload: Optional[dict] = None, timeout: Optional[float] = None,
                method: Optional[str] = None, parse: bool = True):
        """GET (no payload) or POST JSON to the runtime; the decoded JSON reply (or, with
        ``parse=False``, the reply's text: some endpoints answer in plain text). Refused or
        dropped connections and HTTP 5xx are tried again, ``retries`` times at most."""
        for attempt in range(self.retries + 1):
            try:
                return self._request_once(path, payload, timeout, method, parse)
            except (RuntimeUnavailableError, RuntimeServerError) as e:
                if attempt == self.retries:
                    if self.retries:
                        raise type(e)(f"{e} (tried {self.retries + 1} times)") from e
                    raise
                time.sleep(self.backoff * 2 ** attempt)

    def _request_once(self, path, payload, timeout, method, parse):
        url = self.base_url + path
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        limit = self.timeout if timeout is None else timeout
        where = f"{self.role} runtime at {self.base_url}"
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            if e.code == 400 and _TOO_LONG.search(detail):
                raise PromptTooLongError(f"{where} rejected the prompt: {detail}") from None
            error = RuntimeServerError if e.code >= 500 else RuntimeCallError
            raise error(f"{where} answered HTTP {e.code} to {path}: {detail}") from None
        except (socket.timeout, TimeoutError) as e:
            raise RuntimeTimeoutError(
                f"{where} did not answer {path} within {limit:g} s (request_timeout); "
                "is it overloaded or stopped?"
            ) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise RuntimeTimeoutError(
                    f"{where} did not answer {path} within {limit:g} s (request_timeout); "
                    "is it overloaded or stopped?"
                ) from e
            raise RuntimeUnavailableError(
                f"cannot reach the {where}: {e.reason}. Is the server running and the URL right?"
            ) from e
        except (ConnectionError, http.client.HTTPException) as e:
            raise RuntimeUnavailableError(
                f"the {where} dropped the connection during {path} ({e!r}); did it die?"
            ) from e
        if not parse:
            return body.decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError as e:
            raise RuntimeCallError(f"{where} sent a reply to {path} that is not JSON") from e

    # -- the calls the frontend makes -----------------------------------------------------------
    def generate(self, s, sampling_params):
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
        # A program run with a cancel scope (calls.CancelScope) can have this request aborted.
        scope = s.arguments.get("cancel") if isinstance(getattr(s, "arguments", None), dict) else None
        if scope is None:
            obj = self.request("/generate", data)
        else:
            data["rid"] = uuid.uuid4().hex
            scope.enter(data["rid"], self)
            try:
                obj = self.request("/generate", data)
            finally:
                scope.leave(data["rid"])
        return obj["text"], obj["meta_info"]

    def abort(self, rid: str) -> None:
        """Ask the runtime to stop request ``rid``; it answers that request at once with what it
        has (finish reason ``abort``). Best effort: a request that already ended is left as is."""
        try:
            self.request("/abort_request", {"rid": rid}, timeout=10, parse=False)
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

    def get_server_info(self):
        return self.request("/server_info")

    def flush_cache(self):
        """Empty the runtime's radix cache (SGLang answers in plain text)."""
        self.request("/flush_cache", {}, method="POST", parse=False)

    def tokenize(self, texts: List[str]) -> List[List[int]]:
        """Token ids of each text as the runtime's ``/generate`` would see them."""
        reply = self.request("/tokenize", {"prompt": list(texts), "add_special_tokens": True})
        return reply["tokens"]

    def health(self, timeout: float = 10.0) -> bool:
        """True when the runtime answers ``/health`` in time."""
        try:
            urllib.request.urlopen(self.base_url + "/health", timeout=timeout).read()
            return True
        except Exception:
            return False
