"""``serve`` over its life: clients that go away mid-stream or while waiting (their runs are
aborted on the runtimes), shutdown with runs in flight, SIGTERM of a ``serve`` process, and the
server's own figures (``GET /stats``). The real programs on scripted fake runtimes, or a scripted
solver, as in ``test_serve``."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from live_app import live_app
from sgl_specreason.errors import RuntimeTimeoutError
from sgl_specreason.runtime import free_port
from sgl_specreason.serve import ServeSettings, create_app
from sgl_specreason.trace import DRAFT, Step
from test_serve import CFG, CHAT, STEPS, app_on_fakes, fakes, scripted

pytestmark = pytest.mark.timeout(60)


# -- clients that go away, and shutdown ----------------------------------------------------------------

def slow_after_first_step(kind, steps):
    """The draft's second step takes 60 s, unless aborted."""
    return 60.0 if kind == "step" and len(steps) >= 1 else 0.0


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_that_goes_away_mid_stream_has_its_run_aborted():
    draft, base = fakes(draft_delay=slow_after_first_step)
    app = app_on_fakes(draft, base)
    with live_app(app) as (url, _server):
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}) as reply:
                # the iterator is kept until the client leaves: a dropped one is finalized at once,
                # and httpcore closes the connection when its stream's generator is closed, so the
                # client would go away here, racing the second draft request it waits for below
                lines = reply.iter_lines()
                first = next(lines)
                assert STEPS[0] in first
                wait_until(lambda: len(draft.requests) == 2)  # the second step is being drafted
                assert draft.requests[1].finish == {}  # and not aborted while the client is still here
        began = time.monotonic()
        wait_until(lambda: draft.requests[1].finish == {"type": "abort"})
        wait_until(lambda: not app.state.service.runs)
        assert time.monotonic() - began < 15  # not the 60 s the step would take (room for a loaded machine)
        assert len(draft.requests) == 2  # nothing sent after the abort


def test_a_waiting_client_that_goes_away_has_its_run_aborted():
    draft, base = fakes(draft_delay=slow_after_first_step)
    app = app_on_fakes(draft, base)
    with live_app(app) as (url, _server):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=1.0)
        wait_until(lambda: len(draft.requests) == 2 and draft.requests[1].finish == {"type": "abort"})
        wait_until(lambda: not app.state.service.runs)


def test_shutdown_aborts_the_runs_still_in_flight_after_the_grace_period():
    draft, base = fakes(draft_delay=slow_after_first_step)
    app = app_on_fakes(draft, base)
    with live_app(app, grace_s=0.5) as (url, server):
        reply = {}
        asking = threading.Thread(target=lambda: reply.update(r=httpx.post(url + "/v1/chat/completions",
                                                                           json=CHAT, timeout=30)))
        asking.start()
        wait_until(lambda: len(draft.requests) == 2)
        began = time.monotonic()
        server.should_exit = True
        wait_until(lambda: draft.requests[1].finish == {"type": "abort"}, timeout=10)
        asking.join(10)
    assert time.monotonic() - began < 8
    assert not app.state.service.runs and app.state.service.closing


def test_sigterm_stops_taking_requests_aborts_what_is_in_flight_and_stops_the_runtimes(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "serve_on_fakes.py"), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parent)
    try:
        def up():
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(url + "/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=50)
        reply = {}
        asking = threading.Thread(target=lambda: reply.update(r=httpx.post(url + "/v1/chat/completions",
                                                                           json=CHAT, timeout=30)))
        asking.start()
        wait_until(lambda: httpx.get(url + "/health").json()["in_flight"] == 1)
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        proc.wait(timeout=20)
        asking.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and time.monotonic() - began < 10  # the grace period is 1 s
    assert reply["r"].status_code == 503 and reply["r"].json()["error"]["code"] == "shutting_down"
    assert "draft finishes: ['stop', 'abort']" in log.read_text()


# -- the server's own figures ------------------------------------------------------------------------

def test_stats_count_requests_and_failures_and_time_the_server_apart_from_the_run():
    def slow(job, on_step, scope):
        time.sleep(0.2)  # the run: not the server's own time
        return scripted()(job, on_step, scope)

    with TestClient(create_app(None, CFG, solver=slow)) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert http.post("/v1/chat/completions", json={**CHAT, "stream": True}).status_code == 200
        assert http.post("/v1/chat/completions", json={**CHAT, "seed": 2}).status_code == 400
        http.get("/health")  # not a run route: not counted
        stats = http.get("/stats", params={"recent": 10}).json()
        plain = http.get("/stats").json()
    assert stats["requests"] == {"answered": 3, "failed": 1, "stream_errors": 0}
    overhead = stats["overhead_ms"]
    assert overhead["count"] == 2 and len(overhead["recent"]) == 2  # the 400 never ran
    assert all(0 <= ms < 150 for ms in overhead["recent"]), overhead  # the 200 ms run is left out
    assert stats["in_flight"] == 0 and "recent" not in plain["overhead_ms"]
    parts = stats["overhead_parts_ms"]  # the server's time told in its parts, request by request
    assert list(parts)[:3] == ["before_run", "to_worker", "after_run"]
    for ms, split in zip(overhead["recent"], parts["recent"]):
        assert len(split) == 3 and min(split) >= 0 and sum(split) == pytest.approx(ms, abs=0.01)
    assert sum(parts[name]["sum"] for name in ("before_run", "to_worker", "after_run")) == \
        pytest.approx(overhead["sum"], abs=0.02)


def test_stats_count_an_error_inside_a_stream_and_need_the_api_key():
    def fails_after_a_step(job, on_step, scope):
        on_step(Step(0, DRAFT, "x", 1, score=9.0))
        time.sleep(0.05)
        raise RuntimeTimeoutError("the base runtime did not answer within 2 s")

    app = create_app(None, CFG, ServeSettings(api_key="k"), solver=fails_after_a_step)
    with TestClient(app) as http:
        key = {"Authorization": "Bearer k"}
        reply = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=key)
        assert reply.status_code == 200 and '"runtime_timeout"' in reply.text
        assert http.get("/stats").status_code == 401
        stats = http.get("/stats", headers=key).json()
    assert stats["requests"] == {"answered": 1, "failed": 1, "stream_errors": 1}
