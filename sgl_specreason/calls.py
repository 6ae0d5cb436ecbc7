"""The glue the programs use to run sub-programs on a runtime and read their results.

The SGLang frontend runs each state on a worker thread and keeps a failed request's exception in
``state.error()`` instead of raising it; reading a variable of a failed ``gen`` then fails with
an unrelated ``KeyError``. These helpers wait for the result and re-raise the real error.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from sgl_specreason.answers import extract_answer, is_correct
from sgl_specreason.errors import RuntimeCallError
from sgl_specreason.templates import ChatTemplate

# The frontend also prints each failed request's traceback as a warning; gen_result re-raises
# the error itself, with a message naming the runtime, so the warning is noise.
warnings.filterwarnings("ignore", message="Error in stream_executor")


@dataclass(frozen=True)
class Role:
    """One runtime and how to prompt the model it serves; with ``replicas``, several runtimes
    serving the same model, one of which each problem keeps to (its prefixes stay cached there)."""

    name: str  # "draft" or "base"
    backend: Any  # an SGLang backend (Endpoint / RuntimeEndpoint)
    template: ChatTemplate
    replicas: Tuple["Role", ...] = ()

    def pick(self, index: int) -> "Role":
        """The replica for the ``index``-th problem (round robin), or this role itself."""
        return self.replicas[index % len(self.replicas)] if self.replicas else self


def gen_result(state, name: str) -> Tuple[str, dict]:
    """Text and ``meta_info`` of the ``gen`` called ``name`` in ``state``, or its real error."""
    executor = state.stream_executor
    event = executor.variable_event.get(name)
    if event is not None:
        event.wait()
    if name not in executor.variables:
        worker = getattr(executor, "worker", None)
        if worker is not None:
            worker.join(timeout=10)
        error = executor.error_
        if isinstance(error, BaseException):
            raise error
        raise RuntimeCallError(f"gen {name!r} produced no result and no error")
    return executor.variables[name], executor.meta_info.get(name) or {}


def step_spans(backend, prefix: str, steps: Sequence[str]) -> Tuple[int, List[int]]:
    """What a likelihood judge needs to read candidate steps' own log-probabilities: the
    ``logprob_start_len`` to ask with, one token before the steps start (SGLang reports no
    log-prob for its first position; ``scoring.step_token_logprobs`` skips it), and how many
    tokens each step takes. The steps start where ``prefix`` and every ``prefix + step`` stop
    sharing tokens (a step's first characters can merge with the prefix's last token)."""
    ids = backend.tokenize([prefix] + [prefix + step for step in steps])
    start = len(ids[0])
    for other in ids[1:]:
        start = min(start, next((i for i, (a, b) in enumerate(zip(ids[0], other)) if a != b),
                                min(len(ids[0]), len(other))))
    return max(start - 1, 0), [len(other) - start for other in ids[1:]]


def call(program, backend, **arguments):
    """Run a sub-program on ``backend`` and return what it returned, raising its error."""
    state = program.run(backend=backend, **arguments)
    error = state.error()
    if isinstance(error, BaseException):
        raise error
    return state.ret_value


class recording:
    """Times a problem, fills in its answer, and turns an error into the problem's error field,
    so one failing problem never takes a batch down with it; then hands the result to the
    monitor (if any), which prints and saves it."""

    def __init__(self, result, problem, monitor=None):
        self.result = result
        self.problem = problem
        self.monitor = monitor

    def __enter__(self):
        self.start = time.perf_counter()
        return self.result

    def __exit__(self, exc_type, exc, tb):
        result = self.result
        result.wall_s = time.perf_counter() - self.start
        result.reference = self.problem.answer
        result.answer = extract_answer(result.text)
        if self.problem.answer is not None and result.answer is not None:
            result.correct = is_correct(result.answer, self.problem.answer, self.problem.choices)
        elif self.problem.answer is not None:
            result.correct = False
        recorded = exc is not None and isinstance(exc, Exception)
        if recorded:
            result.error = f"{type(exc).__name__}: {exc}"
            result.correct = None if result.correct is None else False
        if self.monitor is not None and (exc is None or recorded):
            self.monitor.on_result(result)
        return recorded  # an error is recorded in the result, not raised
