"""A scripted SGLang runtime that answers in milliseconds, for testing the SpecReason loop
without a model.

``FakeRuntime`` is an SGLang ``BaseBackend``: the frontend runs the real programs on it (forks,
cancel scopes, the drop-in backend included). It reads the prompt the way a model would see it:
the kept steps are the blank-line separated pieces after the first ``<think>`` (or, where the
prompt opens no thinking, after the last assistant turn's opening), and the request
is one of

- a judge call (one new token with log-probabilities): the last step in the prompt is scored by
  ``score(step)`` in 0..9. The paper's question gets that digit as its one token (probability
  1); a likelihood prefill gets ``score - 10`` as the log-prob of every prompt token from
  ``logprob_start_len`` on, so every likelihood judge reads ``score`` back. ``score`` may give
  one score per character of the step instead: those log-probs then vary along the step, and
  the question's digit is the worst;
- an answer after ``</think>``: ``answer``;
- a step: ``write(steps, fork)`` (``fork``: which of a request's forks asks, 0 for one), cut at
  ``max_new_tokens`` characters. Without a blank-line stop string the runtime writes steps
  until one states an answer, as a model that is not stopped would.

One character is one token. ``delay(kind, steps)`` gives each request's time in seconds (kind
"step", "judge" or "answer"); ``abort(rid)`` ends a request at once with half its text and
finish reason ``abort``, as SGLang does. Every request is kept in ``requests``;
``wait_for(predicate)`` waits until one matches (a test holds a judgement back until the work
begun beside it has been sent: work cancelled before it is sent leaves no call in the trace).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, List, Sequence

from sglang.lang.backend.base_backend import BaseBackend

from sgl_specreason.calls import Role
from sgl_specreason.templates import (
    JUDGE_INSTRUCTION,
    STEP_SEPARATOR,
    THINK_CLOSE,
    THINK_OPEN,
    template_for_model,
)
from sgl_specreason.stopping import has_answer

#: the log-prob of each character the draft writes, when asked for its log-probabilities
DRAFT_LOGPROB = -1.0
EOS = 2  # the token id a real runtime reports as ``matched`` when generation hits its end


@dataclass
class Request:
    kind: str  # "step", "judge" or "answer"
    steps: List[str]  # the kept steps the prompt holds (a judge's: the judged one last)
    prompt: str
    params: dict
    fork: int = 0
    text: str = ""
    finish: dict = field(default_factory=dict)


#: where the assistant's text begins in the chat formats the fakes are asked in (ChatML, R1's)
ASSISTANT_OPENERS = ("<|im_start|>assistant\n", "<\uff5cAssistant\uff5c>")


def kept_steps(prompt: str) -> List[str]:
    """The steps in a reasoning or judge prompt: after the first ``<think>``, or where the
    prompt opens no thinking (``plain``), after the last assistant turn's opening."""
    if JUDGE_INSTRUCTION in prompt:  # cut the judge's question and the turn markers before it
        prompt = prompt[:prompt.index(JUDGE_INSTRUCTION)]
    if THINK_OPEN in prompt:
        rest = prompt.split(THINK_OPEN, 1)[1]
    else:
        rest = prompt[max((prompt.rfind(o) + len(o) for o in ASSISTANT_OPENERS if o in prompt), default=0):]
    return rest.split(STEP_SEPARATOR)[:-1] if rest else []


class FakeRuntime(BaseBackend):
    def __init__(self, role: str, write: Callable[[Sequence[str], int], str],
                 score: Callable[[str], float] = lambda step: 9,
                 answer: str = "The answer is \\boxed{5}.",
                 delay: Callable[[str, Sequence[str]], float] = lambda kind, steps: 0.0,
                 model_path: str = "/models/SmolLM2-fake"):
        super().__init__()
        self.role, self.write, self.score, self.answer, self.delay = role, write, score, answer, delay
        self.model_info = {"model_path": model_path}
        self.base_url = f"fake://{role}"
        self.requests: List[Request] = []
        self._lock = threading.Condition()
        self._aborts = {}  # rid -> threading.Event
        self._forks = {}  # prompt -> forks asked so far
        self._cache: List[str] = []  # prompts seen: what a radix cache would hold

    @property
    def model_path(self) -> str:
        return self.model_info["model_path"]

    def get_model_name(self):
        return self.model_path

    # -- what the programs call -----------------------------------------------------------------
    def generate(self, s, sampling_params):
        p = sampling_params
        prompt = s.text_
        scope = s.arguments.get("cancel") if isinstance(getattr(s, "arguments", None), dict) else None
        rid = uuid.uuid4().hex
        aborted = threading.Event()
        with self._lock:
            self._aborts[rid] = aborted
        if scope is not None:
            scope.enter(rid, self)  # raises Cancelled once the scope was cancelled
        try:
            return self._answer(prompt, p, aborted)
        finally:
            if scope is not None:
                scope.leave(rid)
            with self._lock:
                self._aborts.pop(rid, None)

    def abort(self, rid: str) -> None:
        with self._lock:
            event = self._aborts.get(rid)
        if event is not None:
            event.set()

    def wait_for(self, predicate: Callable[[Request], bool], timeout: float = 5.0) -> float:
        """Wait until a request that ``predicate`` accepts has arrived; returns 0 (a delay)."""
        with self._lock:
            if not self._lock.wait_for(lambda: any(predicate(r) for r in self.requests), timeout):
                raise AssertionError(f"no such request reached the {self.role} runtime in {timeout} s")
        return 0.0

    def tokenize(self, texts: Sequence[str]) -> List[List[int]]:
        return [[ord(ch) for ch in text] for text in texts]

    def flush_cache(self):
        with self._lock:
            self._cache.clear()

    # -- the script -------------------------------------------------------------------------------
    def _answer(self, prompt: str, p, aborted: threading.Event):
        started = time.perf_counter()
        stops = [p.stop] if isinstance(p.stop, str) else list(p.stop or ())
        judge = bool(p.return_logprob and p.top_logprobs_num)  # drafts ask no top log-probs
        kind = "judge" if judge else "answer" if THINK_CLOSE in prompt.split(THINK_OPEN, 1)[-1] else "step"
        steps = kept_steps(prompt)
        with self._lock:
            fork = self._forks.get(prompt, 0) if kind == "step" else 0
            if kind == "step":
                self._forks[prompt] = fork + 1
            request = Request(kind, steps, prompt, {k: getattr(p, k) for k in (
                "max_new_tokens", "stop", "temperature", "return_logprob", "logprob_start_len", "regex",
                "json_schema", "frequency_penalty", "stop_token_ids",
                "top_logprobs_num")}, fork)
            self.requests.append(request)
            self._lock.notify_all()
            cached = max((_common(prompt, seen) for seen in self._cache), default=0)
            self._cache.append(prompt)
        meta = {"prompt_tokens": len(prompt), "cached_tokens": cached}
        if judge:
            text, finish = self._judge(prompt, steps, p, meta)
        elif kind == "answer":
            text, finish = self.answer[:p.max_new_tokens], {"type": "stop", "matched": EOS}
        else:
            text, finish = self._steps(steps, fork, p.max_new_tokens, stops)
        if aborted.wait(self.delay(kind, steps)):
            text, finish = text[:len(text) // 2], {"type": "abort"}
        if p.return_logprob and not judge:
            meta["output_token_logprobs"] = [[DRAFT_LOGPROB, ord(ch), ch] for ch in text]
        meta.update(completion_tokens=len(text), finish_reason=finish,
                    e2e_latency=time.perf_counter() - started)
        request.text, request.finish = text, finish
        return text, meta

    def _steps(self, steps, fork, limit, stops):
        """One step (or, without a blank-line stop, steps until an answer), and why it ended."""
        written = []
        while True:
            step = self.write(list(steps) + written, fork)
            written.append(step)
            if STEP_SEPARATOR in stops or has_answer(step) or len(written) > 50:
                break
        text = STEP_SEPARATOR.join(written)
        for stop in stops:
            if stop != STEP_SEPARATOR and stop in text:
                return text[:text.index(stop)], {"type": "stop", "matched": stop}
        if len(text) > limit:
            return text[:limit], {"type": "length", "length": limit}
        if STEP_SEPARATOR in stops and not has_answer(text):
            return text, {"type": "stop", "matched": STEP_SEPARATOR}
        return text, {"type": "stop", "matched": EOS}

    def _judge(self, prompt, steps, p, meta):
        scored = self.score(steps[-1]) if steps else 0.0
        # one score for the step, or one per character of it (its worst is the question's digit)
        each = [float(x) for x in scored] if isinstance(scored, (list, tuple)) else None
        value = min(each) if each else float(scored)
        digit = str(int(value))
        meta["output_token_logprobs"] = [[0.0, ord(digit), digit]]
        meta["output_top_logprobs"] = [[[0.0, ord(digit), digit]]]
        if p.logprob_start_len is not None and p.logprob_start_len >= 0:
            at = prompt.rfind(steps[-1] + STEP_SEPARATOR) if each else -1

            def logprob(i):
                return each[i - at] - 10.0 if each and at <= i < at + len(each) else value - 10.0
            meta["input_token_logprobs"] = [[None if i == p.logprob_start_len else logprob(i), ord(ch), ch]
                                            for i, ch in enumerate(prompt) if i >= p.logprob_start_len]
            # each position's one alternative: the token itself (SGLang lists none for the first)
            meta["input_top_logprobs"] = [None if entry[0] is None else [entry]
                                          for entry in meta["input_token_logprobs"]]
        return digit, {"type": "length", "length": 1}


#: a step of a ``OneStepRuntime`` that ends with this ends where the model ended its text
END = "<eos>"


class OneStepRuntime(FakeRuntime):
    """A fake runtime that writes one step per request and ends the text only where a step ends
    with ``END`` (an answer marker is no end here): a model under the ``plain`` framing."""

    def _steps(self, steps, fork, limit, stops):
        text = self.write(list(steps), fork)
        if text.endswith(END):
            return text[:-len(END)], {"type": "stop", "matched": EOS}
        if len(text) > limit:
            return text[:limit], {"type": "length", "length": limit}
        return text, {"type": "stop", "matched": STEP_SEPARATOR}


def script(*steps):
    """A model that writes ``steps`` in order (the last again, once they run out)."""
    return lambda kept, fork: steps[min(len(kept), len(steps) - 1)]


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def fake_roles(draft: FakeRuntime, base: FakeRuntime) -> dict:
    """The two roles the programs take, over fake runtimes (prompts in SmolLM2's template)."""
    template = template_for_model(base.model_path)
    return {"draft": Role("draft", draft, template), "base": Role("base", base, template)}
