"""Runs: a job on a worker thread, its kept steps streamed back to the event loop; admission
(at most so many at once, a bounded queue, 429 beyond it) and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, List, Optional, Tuple, Union

from sgl_specreason.calls import CancelScope
from sgl_specreason.errors import ConfigError
from sgl_specreason.serve.errors import ApiError, api_error
from sgl_specreason.serve.jobs import Job
from sgl_specreason.serve.reasoning import ReasoningSplit
from sgl_specreason.serve.solver import Solver
from sgl_specreason.serve.stats import Stats
from sgl_specreason.stopping import BUDGET
from sgl_specreason.templates import STEP_SEPARATOR
from sgl_specreason.trace import ProblemResult, Step


@dataclass(frozen=True)
class ServeSettings:
    """How the server admits and checks requests (the SpecReason settings are a
    ``SpecReasonConfig`` beside it)."""

    model_name: str = "specreason"  # the one model /v1/models lists
    mode: str = "specreason"  # the mode a chat is solved in (any registered mode)
    api_key: Optional[str] = None  # None: no bearer-token check
    max_in_flight: int = 4  # SpecReason runs at once
    max_queue: int = 64  # requests waiting for a run slot; the next one gets 429
    max_body_bytes: int = 1 << 20
    #: a chat reply's thinking in ``reasoning_content``, apart from its ``content`` (a request's
    #: ``separate_reasoning`` overrides it); off: one ``content``, thinking and answer together
    separate_reasoning: bool = True
    #: seconds the shutdown waits for the runs it aborted to end
    abort_wait_s: float = 5.0
    #: where ``/v1/files`` and ``/v1/batches`` keep files and batch state; None: no batches
    data_dir: Optional[Path] = None
    #: run slots batch lines may hold at once (None: half of ``max_in_flight``, at least 1)
    batch_slots: Optional[int] = None
    max_file_bytes: int = 200 << 20  # largest upload to /v1/files (OpenAI's limit)
    max_batch_lines: int = 50_000  # requests in one batch (OpenAI's limit)
    files_keep_s: float = 30 * 24 * 3600  # how long a file is kept unless deleted (OpenAI's 30 days)

    @property
    def batch_share(self) -> int:
        """The run slots batch lines may hold at once."""
        return self.batch_slots or max(1, self.max_in_flight // 2)

    def __post_init__(self):
        if self.max_in_flight < 1 or self.max_queue < 0 or self.max_body_bytes < 1:
            raise ConfigError(f"max_in_flight and max_body_bytes must be at least 1 and max_queue "
                              f"at least 0, got {self.max_in_flight}, {self.max_body_bytes}, {self.max_queue}")
        if self.batch_slots is not None and not 1 <= self.batch_slots <= self.max_in_flight:
            raise ConfigError(f"--batch-slots must be from 1 to --max-in-flight ({self.max_in_flight}), "
                              f"got {self.batch_slots}")


class Run:
    """One job run by the solver on a worker thread; its kept steps, then its result (or
    error), arrive on ``events`` in the event loop."""

    def __init__(self, job: Job, solver: Solver, executor: ThreadPoolExecutor, queue_s: float = 0.0):
        self.job = job
        self.scope = CancelScope()
        self.events: asyncio.Queue = asyncio.Queue()
        self.queue_s = queue_s  # seconds the request waited for a run slot
        #: when the run was handed to the executor, and when its worker began and ended it
        #: (``perf_counter``): what ``stats`` splits serve's own time by
        self.launched = time.perf_counter()
        self.worked: Tuple[Optional[float], Optional[float]] = (None, None)
        self._loop = asyncio.get_running_loop()
        self.future = self._loop.run_in_executor(executor, self._work, solver)

    def _put(self, event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting for this run any more

    def _work(self, solver: Solver) -> None:
        started = time.perf_counter()
        try:
            event = ("done", solver(self.job, lambda step: self._put(("step", step)), self.scope))
        except Exception as e:  # handed to the request, which answers with it
            event = ("error", e)
        self.worked = (started, time.perf_counter())
        self._put(event)

    @property
    def run_s(self) -> Optional[float]:
        """Seconds the solver took, once it is done."""
        began, ended = self.worked
        return None if ended is None else ended - began

    def cancel(self) -> None:
        """Abort what the run has in flight on the runtimes and send nothing more (aborting
        is an HTTP call per request: on a thread of its own, not in the event loop)."""
        if not self.future.done() and not self.scope.cancelled:
            threading.Thread(target=self.scope.cancel, name="specreason-abort", daemon=True).start()


@dataclass
class Finished:
    """The end of a run's output."""

    result: ProblemResult
    finish_reason: str  # "stop" or "length"
    #: the thinking sent apart from the content (``reasoning_content``); None: not split
    reasoning: Optional[str] = None


class StopScan:
    """Streamed text cut before the first of ``stops``; a tail that begins a stop string is
    held back until the next piece shows whether it is one.

    >>> scan = StopScan(["END"])
    >>> scan.feed("one EN"), scan.feed("D two"), scan.stopped
    ('one ', '', True)
    """

    def __init__(self, stops=()):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) - 1 for s in self.stops), default=0)
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        self.text += piece
        start = max(0, self.sent - self.hold)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        end = min(hits) if hits else max(self.sent, len(self.text) - self._partial())
        self.stopped = bool(hits)
        out, self.sent = self.text[self.sent:end], end
        return out

    def _partial(self) -> int:
        """The length of the longest tail of the text that begins a stop string."""
        for n in range(min(self.hold, len(self.text)), 0, -1):
            if any(stop.startswith(self.text[-n:]) for stop in self.stops):
                return n
        return 0

    def flush(self) -> str:
        out, self.sent = ("", self.sent) if self.stopped else (self.text[self.sent:], len(self.text))
        return out


@dataclass
class Piece:
    """Text of a run as it is kept, with its tokens' log-probabilities (when asked)."""

    text: str
    logprobs: list = field(default_factory=list)
    #: thinking, sent apart from ``text`` (``reasoning_content``; ``reasoning.ReasoningSplit``)
    reasoning: str = ""
    #: the run's last text: ``Finished`` is all that follows, so a stream can send the two as
    #: one chunk (the run's end on its last tokens)
    final: bool = False


class Aligner:
    r"""Which tokens' log-probabilities belong to the text sent so far: each token ends at a
    character offset of the whole text; text held back or cut by a stop string holds back or
    drops the tokens that end beyond what was sent.

    >>> a = Aligner()
    >>> a.add("ab", [["a", -1.0, []], ["b", -2.0, []]]); a.add("\n\n", [])
    >>> [t[0] for t in a.upto(1)], [t[0] for t in a.upto(4)]
    (['a'], ['b'])
    """

    def __init__(self):
        self.length = 0
        self.pending: List[Tuple[int, list]] = []

    def add(self, text: str, entries: Optional[list]) -> None:
        offset = self.length
        for entry in entries or ():
            offset += len(entry[0])
            self.pending.append((offset, entry))
        self.length += len(text)

    def upto(self, end: int) -> list:
        out = [entry for stop, entry in self.pending if stop <= end]
        self.pending = [(stop, entry) for stop, entry in self.pending if stop > end]
        return out


async def outputs(run: Run) -> AsyncIterator[Union[Piece, Finished]]:
    """The text of a run as it is kept (one piece per step; a chat's closing answer last), then
    ``Finished``; an ``ApiError`` if the run failed. With ``job.thinking``, each piece's
    thinking is apart from its content (the log-probabilities stay with the piece: they cover
    every kept token, thinking included). The piece of the run's last text is ``final``: a step
    that the program marked ``Step.final`` (it ends the run, and no answer follows) or that hit
    a stop string, sent as soon as it is kept, or else the closing answer. A run whose last
    step was not marked (a solver that does not set ``Step.final``) has none: its end comes
    alone."""
    job = run.job
    scan = StopScan(job.stops if job.is_chat else ())  # a completion's stops are the program's
    split = ReasoningSplit(job.thinking) if job.thinking is not None else None
    reasoning: List[str] = []

    def piece(text: str, entries: list, answer: bool = False, final: bool = False) -> Piece:
        if split is None:
            return Piece(text, entries, final=final)
        thought, said = (split.answer if answer else split.feed)(text)
        if final:  # nothing follows: what the split held back (the start of a marker?) goes too
            more = split.flush()
            thought, said = thought + more[0], said + more[1]
        reasoning.append(thought)
        return Piece(said, entries, thought, final)

    tokens = Aligner()
    steps: List[Step] = []
    joined = ""  # the steps' text as the result joins it
    while True:
        kind, item = await run.events.get()
        if kind == "step" and not scan.stopped:
            if steps:
                tokens.add(STEP_SEPARATOR, None)  # a blank line between steps: no token of theirs
            piece_text = (STEP_SEPARATOR if steps else "") + item.text
            tokens.add(item.text, item.logprobs)
            steps.append(item)
            joined += piece_text
            out = scan.feed(piece_text)
            if item.final:  # nothing follows: no stop string can begin in what was held back
                out += scan.flush()
            if out or not scan.stops:  # one piece per kept step, even an empty first one
                yield piece(out, tokens.upto(scan.sent), final=item.final or scan.stopped)
            if scan.stopped:
                run.cancel()  # the text is over: the rest of the run is not wanted
        elif kind == "done" or (kind == "error" and scan.stopped):
            result = item if kind == "done" else ProblemResult(job.id, "", "specreason", steps=steps)
            last = None
            if not scan.stopped:
                rest = result.text[len(joined):] if result.text.startswith(joined) else ""
                answer = result.answer_logprobs or []  # the answer ends the text; what precedes it
                cut = len(rest) - sum(len(entry[0]) for entry in answer)  # (</think>, blank line) has none
                tokens.add(rest[:cut], None)
                tokens.add(rest[cut:], answer)
                out = scan.feed(rest) + scan.flush()
                if out:
                    last = piece(out, tokens.upto(scan.sent), answer=True, final=True)
            if split is not None and last is None:
                thought, said = split.flush()
                reasoning.append(thought)
                if thought or said:
                    last = Piece(said, [], thought, final=True)
            if last is not None:
                yield last
            yield Finished(result, _finish_reason(job, result, scan.stopped),
                           None if split is None else "".join(reasoning))
            return
        elif kind == "error":
            raise api_error(item, "messages" if job.is_chat else "prompt")


def _finish_reason(job: Job, result: ProblemResult, stopped: bool) -> str:
    if stopped:
        return "stop"
    answer_cut = result.answer_call is not None and result.answer_call.finish_reason == "length"
    if result.stop_reason in (BUDGET, "length") or answer_cut:
        return "length"
    return "stop"


class Service:
    """Runs jobs: at most ``max_in_flight`` at once, ``max_queue`` waiting; tracks what is in
    flight so that shutdown can abort it."""

    def __init__(self, solver: Solver, settings: ServeSettings):
        self.solver = solver
        self.settings = settings
        self.executor = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="specreason-run")
        self.slots = asyncio.Semaphore(settings.max_in_flight)
        self.queued = 0
        self.runs: set = set()
        self.closing = False
        self.stats = Stats()
        #: set whenever a slot may have come free for ``start_behind`` (a run ended, a waiting
        #: request took its slot, the server began closing)
        self.freed = asyncio.Event()

    async def start(self, job: Job) -> Run:
        """Start ``job`` when a slot is free (waiting in the queue until then); 429 when the
        queue is full, 503 once the server is shutting down."""
        if self.closing:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        if self.slots.locked() and self.queued >= self.settings.max_queue:
            raise ApiError(429, f"{len(self.runs)} runs in flight and {self.queued} requests waiting "
                                f"(--max-in-flight {self.settings.max_in_flight}, --max-queue "
                                f"{self.settings.max_queue}); try again later", code="queue_full")
        self.queued += 1
        waiting = time.perf_counter()
        try:
            await self.slots.acquire()
        finally:
            self.queued -= 1
            self.freed.set()
        return self._launch(job, waiting)

    async def start_behind(self, job: Job) -> Run:
        """Start ``job`` once a slot is free and no request waits for one: live requests go
        first, a batch line takes only a slot nobody waits for. No 429: the batch waits."""
        waiting = time.perf_counter()
        while not self.closing and (self.slots.locked() or self.queued):
            self.freed.clear()
            await self.freed.wait()
        if self.closing:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        await self.slots.acquire()  # free and unclaimed: at once
        return self._launch(job, waiting)

    def _launch(self, job: Job, waiting: float) -> Run:
        if self.closing:
            self.slots.release()
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        run = Run(job, self.solver, self.executor, queue_s=time.perf_counter() - waiting)
        self.runs.add(run)

        def finished(_future):
            self.runs.discard(run)
            self.slots.release()
            self.freed.set()

        run.future.add_done_callback(finished)  # the slot is held until the worker is done
        return run

    async def close(self) -> None:
        """Refuse new jobs, abort the runs in flight and wait a little for them to end."""
        self.closing = True
        self.freed.set()
        runs = list(self.runs)
        for run in runs:
            run.cancel()
        if runs:
            await asyncio.wait([run.future for run in runs], timeout=self.settings.abort_wait_s)
        self.executor.shutdown(wait=False, cancel_futures=True)
