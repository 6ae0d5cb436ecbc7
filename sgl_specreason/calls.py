"""The glue the programs use to run sub-programs on a runtime and read their results.

The SGLang frontend runs each state on a worker thread and keeps a failed request's exception in
``state.error()`` instead of raising it; reading a variable of a failed ``gen`` then fails with
an unrelated ``KeyError``. These helpers wait for the result and re-raise the real error.
"""

from __future__ import annotations

import inspect
import threading
import time
import warnings
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from sglang.lang.ir import SglFunction

from sgl_specreason.answers import extract_answer
from sgl_specreason.errors import RuntimeCallError
from sgl_specreason.grading import grade, kind_of
from sgl_specreason.templates import ChatTemplate

# The frontend also prints each failed request's traceback as a warning; gen_result re-raises
# the error itself, with a message naming the runtime, so the warning is noise.
warnings.filterwarnings("ignore", message="Error in stream_executor")


@dataclass(frozen=True)
class Role:
    """One runtime (a server, or SGLang's router in front of several) and how to prompt the
    model it serves."""

    name: str  # "draft" or "base"
    backend: Any  # an SGLang backend (Endpoint / RuntimeEndpoint)
    template: ChatTemplate


#: longest wait between two looks at the clock. Python runs signal handlers in the main thread,
#: between bytecodes; a wait without a timeout there (for a gen, a thread, a future) holds
#: Ctrl-C and SIGTERM off until it ends, minutes on a CPU, whenever the kernel hands the signal
#: to another thread. Every wait in the library is a loop of short ones.
POLL_S = 0.2


def wait_result(future):
    """``future.result()``, in short waits (see ``POLL_S``)."""
    while True:
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            continue


def wait_event(event: threading.Event) -> None:
    """``event.wait()``, in short waits (see ``POLL_S``)."""
    while not event.wait(POLL_S):
        pass


def gen_result(state, name: str) -> Tuple[str, dict]:
    """Text and ``meta_info`` of the ``gen`` called ``name`` in ``state``, or its real error."""
    executor = state.stream_executor
    event = executor.variable_event.get(name)
    if event is not None:
        wait_event(event)
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
    log-prob for its first position; ``judges.likelihood.step_token_logprobs`` skips it), and how many
    tokens each step takes. The steps start where ``prefix`` and every ``prefix + step`` stop
    sharing tokens (a step's first characters can merge with the prefix's last token)."""
    ids = backend.tokenize([prefix] + [prefix + step for step in steps])
    start = len(ids[0])
    for other in ids[1:]:
        start = min(start, next((i for i, (a, b) in enumerate(zip(ids[0], other)) if a != b),
                                min(len(ids[0]), len(other))))
    return max(start - 1, 0), [len(other) - start for other in ids[1:]]


#: keyword arguments ``SglFunction.run`` takes for itself (the program's default sampling
#: parameters): a program argument of one of these names never reaches the program
_RUN_OWN = frozenset(inspect.signature(SglFunction.run).parameters) - {"self", "args", "kwargs", "backend"}


def call(program, backend, **arguments):
    """Run a sub-program on ``backend`` and return what it returned, raising its error.

    >>> from sgl_specreason.programs import base_step
    >>> call(base_step, None, prompt="x", stop="\\n")
    Traceback (most recent call last):
    ...
    TypeError: base_step: argument(s) stop would be taken by SglFunction.run as default sampling parameters, not passed to the program; give them other names
    """
    taken = _RUN_OWN & set(arguments)
    if taken:
        raise TypeError(f"{program.func.__name__}: argument(s) {', '.join(sorted(taken))} would be "
                        "taken by SglFunction.run as default sampling parameters, not passed to the "
                        "program; give them other names")
    state = program.run(backend=backend, **arguments)
    error = state.error()
    if isinstance(error, BaseException):
        raise error
    return state.ret_value


class Cancelled(RuntimeCallError):
    """A request was not sent because its caller had given up on it."""


class CancelScope:
    """The requests of one sub-program run, so that its caller can abort them.

    A sub-program that takes a ``cancel`` argument and is given a scope has every request it
    sends registered here by ``Endpoint`` (the SGLang frontend hands a program's arguments to the
    backend with each call, forks included); ``cancel()`` asks each runtime to abort what is in
    flight (the runtime answers those requests at once, with the text so far and finish reason
    ``abort``) and refuses what would be sent later. A backend without ``abort`` (a plain
    ``RuntimeEndpoint``) sends nothing here: its requests run to their end and are discarded.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._in_flight: Dict[str, Any] = {}  # request id -> backend
        self.cancelled = False

    def enter(self, rid: str, backend) -> None:
        with self._lock:
            if self.cancelled:
                raise Cancelled(f"request to the {getattr(backend, 'role', 'runtime')} runtime "
                                "not sent: its result is no longer wanted")
            self._in_flight[rid] = backend

    def leave(self, rid: str) -> None:
        with self._lock:
            self._in_flight.pop(rid, None)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            in_flight = list(self._in_flight.items())
        for rid, backend in in_flight:
            backend.abort(rid)


class Pending:
    """A helper running on a thread of its own (``start``): ``result()`` waits for it; ``cancel()``
    aborts its requests, waits, and gives back what it returned (None if it failed)."""

    def __init__(self, future: Future, scope: CancelScope):
        self._future = future
        self._scope = scope

    def result(self):
        return wait_result(self._future)

    def cancel(self):
        self._scope.cancel()
        try:
            return wait_result(self._future)
        except Exception:
            return None


def start(helper: Callable, *args, **kwargs) -> Pending:
    """Run ``helper(*args, cancel=scope, **kwargs)`` on a new thread; it passes ``cancel`` on to
    the sub-programs it calls, so that ``Pending.cancel`` reaches their requests."""
    future: Future = Future()
    scope = CancelScope()

    def work():
        try:
            future.set_result(helper(*args, cancel=scope, **kwargs))
        except BaseException as e:  # handed to whoever waits for the result
            future.set_exception(e)

    threading.Thread(target=work, name=f"specreason-{getattr(helper, '__name__', 'helper')}",
                     daemon=True).start()
    return Pending(future, scope)



class ScopedBackend:
    """``backend`` with every request that any program sends through it registered in
    ``scope`` too, and every request that failed kept in ``errors``.

    A server runs a whole SpecReason run on two of these sharing one scope, so that
    ``scope.cancel()`` aborts whatever the run has in flight (its client went away, the server
    is shutting down) and refuses the rest; and so that the error a program recorded as text
    (``recording``) can be raised again as itself. A sub-program's own scope (work begun on a
    guess) keeps working beside it. Everything else is ``backend``'s own.

    >>> ScopedBackend(object(), CancelScope()).errors
    []
    """

    def __init__(self, backend, scope: CancelScope):
        self.inner = backend
        self.scope = scope
        self.errors: List[BaseException] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, s, sampling_params):
        try:
            return self.inner.generate(_InScope(s, self.scope), sampling_params)
        except Exception as e:
            self.errors.append(e)
            raise

    def generate_stream(self, s, sampling_params):
        try:
            yield from self.inner.generate_stream(_InScope(s, self.scope), sampling_params)
        except Exception as e:
            self.errors.append(e)
            raise


class _InScope:
    """A program's state as a backend reads it, with ``scope`` as its ``cancel`` argument
    (beside the program's own scope, if it has one)."""

    def __init__(self, state, scope: CancelScope):
        self._state = state
        arguments = getattr(state, "arguments", None)
        arguments = arguments if isinstance(arguments, dict) else {}
        own = arguments.get("cancel")
        self.arguments = {**arguments, "cancel": scope if own is None else _BothScopes(scope, own)}

    def __getattr__(self, name):
        return getattr(self._state, name)


class _BothScopes:
    """A request registered in two scopes: either one's ``cancel`` aborts it."""

    def __init__(self, outer: CancelScope, inner: CancelScope):
        self.outer, self.inner = outer, inner

    def enter(self, rid: str, backend) -> None:
        self.outer.enter(rid, backend)
        try:
            self.inner.enter(rid, backend)
        except BaseException:
            self.outer.leave(rid)
            raise

    def leave(self, rid: str) -> None:
        self.inner.leave(rid)
        self.outer.leave(rid)

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
        if self.problem.answer is not None:
            result.correct = grade(result.text, self.problem.answer, kind_of(self.problem)).correct
        recorded = exc is not None and isinstance(exc, Exception)
        if recorded:
            result.error = f"{type(exc).__name__}: {exc}"
            result.correct = None if result.correct is None else False
        if self.monitor is not None and (exc is None or recorded):
            self.monitor.on_result(result)
        return recorded  # an error is recorded in the result, not raised
