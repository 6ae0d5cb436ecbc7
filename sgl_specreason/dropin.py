"""SpecReason as an SGLang backend: an existing program gets it without being rewritten.

    import sglang as sgl
    from sgl_specreason.dropin import SpecReasonBackend

    sgl.set_default_backend(SpecReasonBackend(base="http://127.0.0.1:30000",
                                              draft="http://127.0.0.1:30001"))

    @sgl.function
    def solve(s, question):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=4096))   # served by SpecReason

What it speeds up: a ``gen`` that asks for at least ``min_tokens`` new tokens with plain
sampling (temperature, top-p, stop strings). The draft runtime continues the program's text one
step (up to a blank line) at a time, the base runtime judges each step and rewrites the ones
that score low; the ``gen`` ends as the base model's would: at its end of sequence, at one of
the call's stop strings, or at ``max_tokens`` kept tokens. The text goes into the variable as
usual; ``meta_info["specreason"]`` holds the whole trace (a ``ProblemResult``: steps, scores,
every runtime call).

What goes straight to the base runtime, unchanged: shorter ``gen`` calls, constrained ones
(``regex``, ``json_schema``, ``dtype``; ``select``/``choices``), calls that ask for
log-probabilities, ``n > 1``, ``ignore_eos``, ``min_tokens``, stop token ids or stop regexes,
and top-k / min-p / penalties; prefix caching and forking (``fork`` pre-fills the shared prefix
on the base runtime). ``route(sampling_params)`` tells which way a call goes and why.

The draft model reads the same text as the base model, framed by the base model's chat
template: pick a draft that shares it (the Qwen2.5 family, R1 distills of one base family).

Runtimes given as URLs are reached through ``Endpoint``: pooled keep-alive connections and a
deadline on every request, streamed ones included (a ``gen(..., stream=True)`` that goes to the
base runtime streams through ``Endpoint.generate_stream``, chunk by chunk within
``request_timeout``). A backend object given instead is used as it is.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional, Union

from sglang.lang.backend.base_backend import BaseBackend

from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import POLL_S, Role, call
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.judges import QUESTION, get_judge
from sgl_specreason.programs import continuation
from sgl_specreason.rendering import model_template
from sgl_specreason.templates import STEP_SEPARATOR, Continuation
from sgl_specreason.trace import BASE, DRAFT, Totals

SPECREASON = "specreason"


def route(p, min_tokens: int = 256) -> str:
    """``"specreason"``, or why a ``gen`` with sampling parameters ``p`` (the frontend's
    ``SglSamplingParams``) goes straight to the base runtime.

    >>> from sglang.lang.ir import SglSamplingParams
    >>> route(SglSamplingParams(max_new_tokens=1024, temperature=0.6, top_p=0.95))
    'specreason'
    >>> route(SglSamplingParams(max_new_tokens=1024, regex="(yes|no)"))
    'constrained (regex, json_schema or dtype)'
    >>> route(SglSamplingParams(max_new_tokens=64))
    'max_tokens below min_tokens (256)'
    """
    reasons = (
        (p.max_new_tokens is None or p.max_new_tokens < min_tokens,
         f"max_tokens below min_tokens ({min_tokens})"),
        (p.regex or p.json_schema or p.dtype, "constrained (regex, json_schema or dtype)"),
        (p.return_logprob, "asks for log-probabilities"),
        (p.n != 1, "n > 1"),
        (p.ignore_eos or p.min_new_tokens, "ignore_eos or min_tokens"),
        (p.stop_token_ids or p.stop_regex, "stop token ids or stop regex"),
        (p.top_k not in (-1, None) or p.min_p or p.frequency_penalty or p.presence_penalty,
         "top_k, min_p or penalties"),
        (not 0 <= p.temperature <= 2 or not 0 < p.top_p <= 1, "temperature or top_p out of range"),
    )
    return next((why for hit, why in reasons if hit), SPECREASON)


class SpecReasonBackend(BaseBackend):
    """An SGLang backend over a base and a draft runtime (URLs or backends) that serves long
    ``gen`` calls with SpecReason and hands everything else to the base runtime.

    The paper's judge question (``greedy``, ``average``) is framed by the base model's own chat
    template: its tokenizer folder is ``base_tokenizer``, or the runtime's tokenizer or model
    path when it is a folder here; ``base_template`` names a hand-written one instead. The
    judges that read the step's log-probabilities ask no question and need neither.

    >>> backend = SpecReasonBackend("http://127.0.0.1:30000", "http://127.0.0.1:30001",
    ...                             SpecReasonConfig(score_method="likelihood-numbers", threshold=6))  # doctest: +SKIP
    """

    def __init__(self, base: Union[str, BaseBackend], draft: Union[str, BaseBackend],
                 cfg: Optional[SpecReasonConfig] = None, min_tokens: int = 256,
                 base_template: Optional[str] = None, api_key: Optional[str] = None,
                 connections: int = 64, base_tokenizer: Optional[str] = None):
        super().__init__()
        self.cfg = cfg or SpecReasonConfig()
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise ConfigError(f"min_tokens must be an integer of at least 1, got {min_tokens!r}")
        self.min_tokens = min_tokens
        self.base, self.draft = (
            b if isinstance(b, BaseBackend) else
            Endpoint(b, role=role, timeout=self.cfg.request_timeout, api_key=api_key,
                     retries=self.cfg.request_retries, connections=connections)
            for b, role in ((base, BASE), (draft, DRAFT)))
        self.chat_template = self.base.get_chat_template()
        self.is_chat_model = False
        self.support_concate_and_append = getattr(self.base, "support_concate_and_append", False)
        try:  # frames the paper judge's question; the likelihood judges need no framing
            info = self.base.model_info
            self.base_chat = model_template(BASE, info["model_path"], base_template, base_tokenizer,
                                            info.get("tokenizer_path"))
        except ConfigError:
            if get_judge(self.cfg.score_method).asks == QUESTION:
                raise
            self.base_chat = None
        self._lock = threading.Lock()
        #: what every SpecReason-served call cost, added up
        self.totals = Totals()
        self.calls = {SPECREASON: 0, BASE: 0}

    # -- gen ------------------------------------------------------------------------------------
    def generate(self, s, sampling_params):
        if route(sampling_params, self.min_tokens) != SPECREASON:
            self._count(BASE)
            return self.base.generate(s, sampling_params)
        result = self._continue(s.text_, sampling_params)
        return result.text, self._meta(result)

    def generate_stream(self, s, sampling_params):
        """Routed calls stream one kept step at a time."""
        if route(sampling_params, self.min_tokens) != SPECREASON:
            self._count(BASE)
            yield from self.base.generate_stream(s, sampling_params)
            return
        chunks: "queue.Queue" = queue.Queue()

        def work():
            try:
                chunks.put(("done", self._continue(s.text_, sampling_params,
                                                   on_step=lambda step: chunks.put(("step", step)))))
            except BaseException as e:  # raised in the program's thread below
                chunks.put(("error", e))

        threading.Thread(target=work, name="specreason-stream", daemon=True).start()
        first = True
        while True:
            try:  # short waits: a wait without a timeout holds signals off (calls.POLL_S)
                kind, item = chunks.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "error":
                raise item
            if kind == "done":
                yield "", self._meta(item)
                return
            yield ("" if first else STEP_SEPARATOR) + item.text, {}
            first = False

    def _continue(self, prompt: str, p, on_step=None):
        cfg = self.cfg.replace(draft_temperature=p.temperature, base_temperature=p.temperature,
                               top_p=p.top_p)
        template = Continuation(prompt, self.base_chat)
        stop = [p.stop] if isinstance(p.stop, str) else list(p.stop or ())
        result = call(continuation, self.base, cfg=cfg, draft=Role(DRAFT, self.draft, template),
                      base=Role(BASE, self.base, template), max_tokens=p.max_new_tokens, stops=stop,
                      on_step=on_step)
        self._count(SPECREASON, result.totals())
        return result

    def _meta(self, result) -> dict:
        kept = sum(step.kept_tokens for step in result.steps)
        return {"completion_tokens": kept, "e2e_latency": result.wall_s,
                "finish_reason": {"type": result.stop_reason}, "specreason": result}

    def _count(self, way: str, totals: Optional[Totals] = None) -> None:
        with self._lock:
            self.calls[way] += 1
            if totals is not None:
                self.totals.merge(totals)

    # -- everything else: the base runtime ----------------------------------------------------------
    def select(self, s, choices, temperature, choices_method=None):
        self._count(BASE)
        return self.base.select(s, choices, temperature, choices_method)

    def get_model_name(self):
        return self.base.get_model_name()

    def cache_prefix(self, prefix_str: str):
        return self.base.cache_prefix(prefix_str)

    def commit_lazy_operations(self, s):
        return self.base.commit_lazy_operations(s)

    def fill_image(self, s):
        return self.base.fill_image(s)

    def begin_program(self, s):
        return self.base.begin_program(s)

    def end_program(self, s):
        return self.base.end_program(s)

    def concatenate_and_append(self, src_rids, dst_rid):
        return self.base.concatenate_and_append(src_rids, dst_rid)

    def get_server_info(self):
        return self.base.get_server_info()

    def flush_cache(self):
        """Empty both runtimes' radix caches."""
        self.base.flush_cache()
        self.draft.flush_cache()

    def shutdown(self):
        self.base.shutdown()
        self.draft.shutdown()
