"""A stand-in for an SGLang server's HTTP side, in process, for tests of the HTTP client.

It answers ``/get_model_info``, ``/health``, ``/generate`` (plain, or streamed as SGLang streams:
server-sent ``data:`` events of the whole text so far, then ``data: [DONE]``), ``/tokenize``,
``/abort_request`` and ``/flush_cache``, over HTTP/1.1 keep-alive. What it does is scripted:

- ``reply(payload)``: a plain ``/generate``'s text (default ``"ok"``), or a number: sleep that
  many seconds first, then answer ``"ok"``;
- ``chunks(payload)``: a streamed ``/generate``'s pieces of text in order; a number among them
  is a pause of that many seconds; an ``("error", message)`` item is an error event;
- ``tokenize(text)``: token ids (default: one per character, its code);
- ``loads()``: the body of ``GET /v1/loads`` (default: none, answered 404 as a router would);
- ``flush_busy``: how many ``/flush_cache`` calls are refused first, as SGLang refuses one while
  requests are running or queued (HTTP 400, ``Flush cache failed.``).

It keeps every request (``requests``: path and JSON body) and counts the connections it accepted
(``connections``) and the most open at once (``peak``).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Iterable, List, Optional

from tracked_http import TrackedHandler, TrackedServer


class HttpRuntime:
    def __init__(self, model_path: str = "/models/SmolLM2-135M-Instruct",
                 reply: Callable[[dict], object] = lambda payload: "ok",
                 chunks: Callable[[dict], Iterable] = lambda payload: ["one ", "two ", "three"],
                 tokenize: Optional[Callable[[str], List[int]]] = None, listen: bool = True,
                 loads: Optional[Callable[[], dict]] = None, flush_busy: int = 0):
        self.model_path = model_path
        self.reply, self.chunks, self.loads, self.flush_busy = reply, chunks, loads, flush_busy
        self.tokenize = tokenize or (lambda text: [ord(ch) for ch in text])
        self.requests: List[tuple] = []
        runtime = self

        class Handler(TrackedHandler):
            def _json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                runtime.requests.append((self.path, None))
                if self.path in ("/get_model_info", "/model_info"):
                    self._json(200, {"model_path": runtime.model_path, "tokenizer_path": runtime.model_path,
                                     "is_generation": True})
                elif self.path == "/health":
                    self._json(200, {})
                elif self.path.startswith("/v1/loads") and runtime.loads is not None:
                    self._json(200, runtime.loads())
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                runtime.requests.append((self.path, payload))
                if self.path == "/generate" and payload.get("stream"):
                    self._stream(payload)
                elif self.path == "/generate":
                    text = runtime.reply(payload)
                    if isinstance(text, (int, float)):
                        time.sleep(text)
                        text = "ok"
                    self._json(200, {"text": text, "meta_info": {"id": payload.get("rid", "x"), "prompt_tokens": 1,
                                                                  "completion_tokens": len(text), "e2e_latency": 0.001,
                                                                  "finish_reason": {"type": "stop"}}})
                elif self.path == "/tokenize":
                    prompts = payload["prompt"]
                    tokens = [runtime.tokenize(p) for p in prompts] if isinstance(prompts, list) \
                        else runtime.tokenize(prompts)
                    self._json(200, {"tokens": tokens, "count": 0, "max_model_len": 8192})
                elif self.path in ("/abort_request", "/flush_cache"):
                    busy = self.path == "/flush_cache" and runtime.flush_busy > 0
                    runtime.flush_busy -= busy
                    body = b"Flush cache failed.\n" if busy else b"ok"
                    self.send_response(400 if busy else 200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._json(404, {"detail": "Not Found"})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, payload):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                text = ""
                try:
                    for piece in runtime.chunks(payload):
                        if isinstance(piece, (int, float)):
                            time.sleep(piece)
                            continue
                        if isinstance(piece, tuple):
                            event = {"error": {"message": piece[1]}}
                        else:
                            text += piece
                            event = {"text": text, "meta_info": {"completion_tokens": len(text)}}
                        self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                except OSError:
                    self.close_connection = True  # the client went away

        self.server = TrackedServer(Handler, bind_and_activate=False)
        self.server.server_bind()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        if listen:
            self.listen()

    def listen(self) -> None:
        """Start accepting connections (until then, connecting is refused)."""
        self.server.server_activate()
        self.thread.start()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def peak(self) -> int:
        return self.server.peak

    def paths(self, path: str) -> List[dict]:
        """The JSON bodies of the requests to ``path``, in order."""
        return [payload for p, payload in self.requests if p == path]

    def __enter__(self) -> "HttpRuntime":
        return self

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()  # keep-alive connections end with the server
