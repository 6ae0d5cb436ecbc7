"""What this process has in flight to a runtime, and for how long it had anything."""

from __future__ import annotations

import threading
import time


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
