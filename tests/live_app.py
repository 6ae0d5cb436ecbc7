"""An ASGI app served by a real uvicorn server on a thread, for tests that need real
connections: a client that goes away mid-stream, a server that shuts down under load."""

import threading
import time
from contextlib import contextmanager

import uvicorn

from sgl_specreason.runtime import free_port


@contextmanager
def live_app(app, grace_s: float = 1.0):
    """Yields (base URL, uvicorn server); stops the server on exit (``server.should_exit``)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=grace_s))
    thread = threading.Thread(target=server.run, name="live-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
