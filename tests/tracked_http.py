"""The HTTP server under the in-process test servers (``HttpRuntime``, ``FaultProxy``): threaded,
HTTP/1.1 keep-alive, and keeping count of its clients' connections, so that a test can read how
many were opened and the most open at once, and closing the server ends the keep-alive ones too.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Type


class TrackedServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: Type["TrackedHandler"], bind_and_activate: bool = True):
        self.connections = 0  # accepted over the server's life
        self.open = 0
        self.peak = 0  # most open at once
        self._sockets = set()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler, bind_and_activate=bind_and_activate)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def opened(self, sock) -> None:
        with self._lock:
            self.connections += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
            self._sockets.add(sock)

    def closed(self, sock) -> None:
        with self._lock:
            self.open -= 1
            self._sockets.discard(sock)

    def close_connections(self) -> None:
        """End the clients' keep-alive connections (they would otherwise still be served)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TrackedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TrackedServer

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.opened(self.connection)

    def finish(self):
        self.server.closed(self.connection)
        try:
            super().finish()
        except OSError:
            pass
