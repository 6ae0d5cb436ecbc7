"""What this process has in flight to a runtime, for how long it had anything, and each
request's share of that time."""

from __future__ import annotations

import bisect
import threading
import time

#: changes of the in-flight count remembered for ``share_of`` (older ones are read as the oldest)
HISTORY = 4096


class RuntimeLoad:
    """The generate requests this process has in flight to one runtime, and the seconds it had
    any: the runtime's busy time as its clients see it. A ``with`` block counts one request.

    It also keeps the runtime's *shared clock*: a clock that runs at 1/n while n requests are in
    flight and stands still while none is. Over a request's life it advances by the request's
    share of the runtime's busy time (the shares of all requests add up to the busy time), which
    is what the request adds to the runtime's busy time under continuous batching wherever that
    time grows with the work batched (see ``speculation``).

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
        self._shared_s = 0.0  # the shared clock at _times[-1]
        self._times = [time.monotonic()]  # each change of in_flight: when, ...
        self._clock = [0.0]  # ... the shared clock then, ...
        self._counts = [0]  # ... and the count from then on

    def __enter__(self) -> "RuntimeLoad":
        with self._lock:
            now = self._advance()
            if self.in_flight == 0:
                self._since = now
            self.in_flight += 1
            self._remember(now)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            now = self._advance()
            self.in_flight -= 1
            if self.in_flight == 0:
                self._busy_s += now - self._since
            self._remember(now)

    def busy_seconds(self) -> float:
        with self._lock:
            return self._busy_s + (time.monotonic() - self._since if self.in_flight else 0.0)

    def share_of(self, seconds: float) -> float:
        """The shared clock's advance over the last ``seconds``: the share of the runtime's busy
        time of one request that was in flight all that time.

        >>> load = RuntimeLoad()
        >>> load._times, load._clock, load._counts = [0.0, 10.0, 14.0], [0.0, 0.0, 2.0], [0, 2, 1]
        >>> load._at(12.0), load._at(16.0)  # 2 s at two requests, then 2 s at one
        (1.0, 4.0)
        """
        with self._lock:
            now = time.monotonic()
            return max(0.0, self._at(now) - self._at(now - max(0.0, seconds)))

    def _advance(self) -> float:
        now = time.monotonic()
        self._shared_s = self._at(now)
        return now

    def _remember(self, now: float) -> None:
        self._times.append(now)
        self._clock.append(self._shared_s)
        self._counts.append(self.in_flight)
        if len(self._times) > 2 * HISTORY:
            del self._times[:HISTORY], self._clock[:HISTORY], self._counts[:HISTORY]

    def _at(self, t: float) -> float:
        """The shared clock at time ``t`` (not before the oldest change remembered)."""
        i = max(0, bisect.bisect_right(self._times, t) - 1)
        count = self._counts[i]
        return self._clock[i] + (max(0.0, t - self._times[i]) / count if count else 0.0)
