"""A fault-injecting HTTP proxy in front of a real SGLang server, for failure tests.

``fault(path, body)`` decides per request: None passes it on; "503" answers HTTP 503; "drop"
closes the connection without an answer; ("hang", seconds) waits that long, then passes it on;
("reply", bytes) answers 200 with those bytes instead of the server. Leaving the ``with`` block
closes the clients' keep-alive connections too: a stopped proxy answers nothing more.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional

from tracked_http import TrackedHandler, TrackedServer


class FaultProxy:
    def __init__(self, upstream: str, fault: Callable[[str, bytes], Optional[object]]):
        self.upstream = upstream.rstrip("/")
        self.fault = fault
        self.seen: List[tuple] = []  # (path, what was done)
        self.bodies: List[bytes] = []  # of the POST requests, in order
        proxy = self

        class Handler(TrackedHandler):
            def _forward(self, body: Optional[bytes]):
                what = proxy.fault(self.path, body or b"")
                proxy.seen.append((self.path, what))
                if body:
                    proxy.bodies.append(body)
                if what == "503":
                    self._reply(503, b'{"error": "injected: service unavailable"}')
                    return
                if what == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(what, tuple) and what[0] == "reply":
                    self._reply(200, what[1])
                    return
                if isinstance(what, tuple) and what[0] == "hang":
                    time.sleep(what[1])
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        self._reply(resp.status, resp.read())
                except urllib.error.HTTPError as e:
                    self._reply(e.code, e.read())
                except OSError:
                    pass  # the client gave up (its timeout) while we hung

            def _reply(self, code: int, payload: bytes):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._forward(self.rfile.read(length))

        self.server = TrackedServer(Handler)
        self.server.handle_error = lambda request, address: None  # a dropped connection is the point
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()  # a keep-alive connection would otherwise still be served
