"""What ``GET /stats`` tells, and the middleware that times each request."""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, List, Optional, Sequence

if TYPE_CHECKING:
    from sgl_specreason.serve.runs import Run

#: the routes that start a SpecReason run (what ``Stats`` counts)
RUN_PATHS = ("/v1/chat/completions", "/v1/completions")
#: the parts of serve's own time per request (``Stats``): parsing, checking and rendering before
#: the run is handed to a worker thread; the wait for that thread to start it; the answer's
#: last steps and bytes after the run ended
PARTS = ("before_run", "to_worker", "after_run")




class Stats:
    """What ``GET /stats`` tells: the requests to the run routes (``RUN_PATHS``) answered, those
    that failed (an error status, or an error sent inside a stream that had begun), and per
    request that ran, the server's own time: from the request's arrival to the last byte of its
    response, less the wait for a run slot and the run itself (the solver's time on its worker
    thread). That is parsing, checking, handing the run to its thread and its steps back,
    and writing the response, told in three parts (``PARTS``): before the run was handed to
    its worker thread (the slot wait aside), from then to the worker starting it, and from the
    run's end to the response's last byte. The last ``keep`` values are kept, so memory stays
    bounded.

    >>> stats = Stats(keep=2)
    >>> for ms in (1.0, 2.0, 4.0):
    ...     stats.take(status=200, overhead_s=ms / 1000, queue_s=0.0)
    >>> body = stats.body(recent=2)
    >>> body["requests"], body["overhead_ms"]["count"], body["overhead_ms"]["recent"]
    ({'answered': 3, 'failed': 0, 'stream_errors': 0}, 3, [2.0, 4.0])
    """

    def __init__(self, keep: int = 1024):
        self.answered = 0
        self.failed = 0
        self.stream_errors = 0
        self.overhead_count = 0
        self.overhead_sum_ms = 0.0
        self.overhead_max_ms = 0.0
        self.queue_sum_ms = 0.0
        self.part_sums_ms = dict.fromkeys(PARTS, 0.0)
        self.recent: "collections.deque[float]" = collections.deque(maxlen=keep)
        self.recent_parts: "collections.deque[Optional[list]]" = collections.deque(maxlen=keep)
        self.lock = threading.Lock()

    def take(self, status: Optional[int], overhead_s: Optional[float], queue_s: float = 0.0,
             stream_error: bool = False, parts: Optional[Sequence[float]] = None) -> None:
        """One answered request: its status (None: the client left before it), the server's own
        time (None: no run, or one that had not ended when the response did) and its ``PARTS``
        in seconds (None: not known)."""
        with self.lock:
            self.answered += 1
            if status is None or status >= 400 or stream_error:
                self.failed += 1
            self.stream_errors += bool(stream_error)
            if overhead_s is not None:
                ms = 1000 * overhead_s
                self.overhead_count += 1
                self.overhead_sum_ms += ms
                self.overhead_max_ms = max(self.overhead_max_ms, ms)
                self.queue_sum_ms += 1000 * queue_s
                self.recent.append(round(ms, 4))
                split = [round(1000 * x, 4) for x in parts] if parts is not None else None
                self.recent_parts.append(split)
                for name, x in zip(PARTS, split or ()):
                    self.part_sums_ms[name] += x

    def body(self, recent: int = 0) -> dict:
        """The JSON of ``GET /stats``; ``recent``: how many of the last overheads to list."""
        with self.lock:
            count = self.overhead_count
            out = {"requests": {"answered": self.answered, "failed": self.failed,
                                "stream_errors": self.stream_errors},
                   "overhead_ms": {"count": count, "mean": self.overhead_sum_ms / count if count else None,
                                   "max": self.overhead_max_ms if count else None,
                                   "sum": self.overhead_sum_ms, "keep": self.recent.maxlen},
                   "queue_wait_ms": {"sum": self.queue_sum_ms,
                                     "mean": self.queue_sum_ms / count if count else None},
                   "overhead_parts_ms": {name: {"sum": total, "mean": total / count if count else None}
                                         for name, total in self.part_sums_ms.items()}}
            if recent > 0:
                out["overhead_ms"]["recent"] = list(self.recent)[-recent:]
                out["overhead_parts_ms"]["recent"] = list(self.recent_parts)[-recent:]
        return out


class RequestTiming:
    """One request's figures, filled as it goes (the handler adds its run)."""

    def __init__(self):
        self.arrived = time.perf_counter()
        self.status: Optional[int] = None
        self.run: Optional[Run] = None
        self.stream_error = False


#: the ASGI scope key under which a request's ``RequestTiming`` travels to its handler
TIMING_KEY = "sgl_specreason.timing"


class RequestTimer:
    """ASGI middleware: times each request to a run route from its arrival to the last byte of
    its response, and hands the figures to ``stats``."""

    def __init__(self, app, stats: Stats):
        self.app, self.stats = app, stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in RUN_PATHS:
            return await self.app(scope, receive, send)
        timing = scope[TIMING_KEY] = RequestTiming()
        ended: List[float] = []

        async def timed(message):
            if message["type"] == "http.response.start":
                timing.status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ended.append(time.perf_counter())

        try:
            await self.app(scope, receive, timed)
        finally:
            run = timing.run
            overhead = parts = None
            if ended and run is not None and run.run_s is not None:
                began, done = run.worked
                parts = [max(0.0, run.launched - run.queue_s - timing.arrived), max(0.0, began - run.launched),
                         max(0.0, ended[0] - done)]
                overhead = sum(parts)
            self.stats.take(timing.status if ended else None, overhead,
                            run.queue_s if run is not None else 0.0, timing.stream_error, parts)
