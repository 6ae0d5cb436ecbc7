"""What a load test reads off the processes themselves: the client's CPU time and TCP
connections (``count_connections``, ``ClientMeter``), and the CPU time of each process of a
server running on this machine (``server_processes``, ``cpu_seconds``)."""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Dict, Optional, Sequence


_connects: "collections.Counter[str]" = collections.Counter()
_connects_lock = threading.Lock()
_plain_connect = None


def count_connections() -> None:
    """From now on, count every TCP connection this process opens, by peer (``host:port``).

    ``socket.socket.connect`` is wrapped, so the count holds for any HTTP client in the process
    (urllib, requests, httpx): each opens its connections through it. Calling it again does
    nothing."""
    global _plain_connect
    with _connects_lock:
        if _plain_connect is not None:
            return
        _plain_connect = plain = socket.socket.connect

    def connect(sock, address):
        plain(sock, address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            with _connects_lock:
                _connects[f"{address[0]}:{address[1]}"] += 1

    socket.socket.connect = connect


def connections_opened() -> Dict[str, int]:
    """TCP connections opened so far, by peer, since ``count_connections`` (empty before)."""
    with _connects_lock:
        return dict(_connects)


class ClientMeter:
    """What the load-test process spends over a ``with`` block: CPU seconds (every thread,
    user and system) and the TCP connections it opened, by peer.

    >>> with ClientMeter() as meter:
    ...     _ = sum(range(1000))
    >>> meter.cpu_s >= 0 and meter.connections == {}
    True
    """

    def __init__(self):
        self.cpu_s = 0.0
        self.connections: Dict[str, int] = {}

    def __enter__(self) -> "ClientMeter":
        self._cpu = time.process_time()
        self._connections = connections_opened()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu_s = time.process_time() - self._cpu
        now = connections_opened()
        self.connections = {peer: n - self._connections.get(peer, 0) for peer, n in now.items()
                            if n - self._connections.get(peer, 0)}


def server_processes(url: str) -> list:
    """The processes of the server listening on ``url``'s port on this machine (the one that
    listens and its descendants: SGLang's HTTP server, scheduler and detokenizer), as
    ``psutil.Process``; empty when no process here listens there."""
    import psutil
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    try:
        pids = {c.pid for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    except psutil.Error:
        return []
    out = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            out += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    return out


def cpu_seconds(processes: Sequence) -> Dict[str, float]:
    """User + system CPU seconds of each process so far, by ``name:pid`` (gone ones left out)."""
    import psutil

    out = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
            out[f"{proc.name()}:{proc.pid}"] = times.user + times.system
        except psutil.Error:
            pass
    return out


#: SGLang's cumulative decode moments (``/v1/loads``), in order: decode iterations, sum of batch
#: sizes b, sum of step times t (us), sum of b², sum of b·t, tokens generated
DECODE_MOMENTS = ("steps", "sum_b", "sum_t_us", "sum_bb", "sum_bt_us", "generated")


def runtime_counters(backend) -> Optional[Dict[str, float]]:
    """A runtime's own cumulative counters of its iterations (SGLang's ``GET /v1/loads``): its
    decode moments (``DECODE_MOMENTS``, enough to fit step time against batch size) and its
    prefill busy time and uncached tokens. None where the runtime does not answer it."""
    try:
        loads = backend.request("/v1/loads?include=core", timeout=10.0).get("loads") or []
    except Exception:  # a router, an older server, a runtime that went away: no figures
        return None
    out: Dict[str, float] = dict.fromkeys(DECODE_MOMENTS, 0.0)
    out.update(prefill_busy_s=0.0, prefill_tokens=0.0)
    for load in loads:
        for name, value in zip(DECODE_MOMENTS, load.get("decode_moments") or ()):
            out[name] += value
        out["prefill_busy_s"] += load.get("total_prefill_busy_us", 0) / 1e6
        out["prefill_tokens"] += load.get("total_prefill_uncached_tokens", 0)
    return out


def counters_between(before: Optional[Dict[str, float]], after: Optional[Dict[str, float]]):
    """What the counters grew by between two readings (None unless both were read)."""
    if before is None or after is None:
        return None
    return {name: after[name] - before.get(name, 0.0) for name in after}
