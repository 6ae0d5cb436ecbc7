"""The load generator's loops and its figures, with a stand-in for solving (no runtime)."""

import statistics
import threading
import time

import pytest

from sgl_specreason.loadtest import Level, arrivals, closed_loop, level_line, markdown, open_loop
from sgl_specreason.problems import make_problem
from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step

PROBLEMS = [make_problem(f"q{i}?", id=str(i)) for i in range(5)]


class Recorder:
    """Solves by sleeping; records how many ran at once and when each started."""

    def __init__(self, seconds=0.05):
        self.seconds = seconds
        self.running = 0
        self.peak = 0
        self.starts = []
        self.lock = threading.Lock()

    def __call__(self, problem):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.starts.append(time.monotonic())
        self.wait()
        with self.lock:
            self.running -= 1
        result = ProblemResult(problem.id, problem.question, "specreason", wall_s=self.seconds)
        step = Step(0, DRAFT, "x", 4, draft_tokens=4, score=8.0, wall_s=self.seconds,
                    calls=[Call(DRAFT, "draft", 10, 6, 4, 0.03), Call(BASE, "judge", 12, 10, 1, 0.01)])
        result.steps.append(step)
        return result

    def wait(self):
        time.sleep(self.seconds)


class Gated(Recorder):
    """Solves by waiting at ``gate`` (a barrier that opens when enough problems are running at
    once, or an event), so that what runs together is set by events, not by timing."""

    def __init__(self, gate):
        super().__init__(seconds=0.0)
        self.gate = gate

    def wait(self):
        if isinstance(self.gate, threading.Barrier):
            self.gate.wait(timeout=30)  # broken (an error) unless enough run at once
        else:
            assert self.gate.wait(timeout=30)


def test_closed_loop_keeps_exactly_c_clients_busy_and_stops_at_the_count():
    solve = Gated(threading.Barrier(3))  # three must run at once for any to finish
    results = closed_loop(PROBLEMS, 3, 9, 60, solve)
    assert len(results) == 9 and solve.peak == 3 and not [r for r in results if r.error]
    assert sorted(r.id for r in results).count("0") == 2  # problems are reused in turn


def test_closed_loop_stops_starting_problems_at_the_time_limit():
    over = threading.Event()  # the first problems run until the time limit has passed
    threading.Timer(0.6, over.set).start()
    results = closed_loop(PROBLEMS, 2, 1000, 0.5, Gated(over))
    assert len(results) == 2  # one per client, none started after the limit


def test_open_loop_arrivals_are_seeded_poisson_and_bounded():
    times = arrivals(50.0, 4000, seed=7)
    assert times == arrivals(50.0, 4000, seed=7) and times != arrivals(50.0, 4000, seed=8)
    gaps = [y - x for x, y in zip([0.0] + times, times)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 50, rel=0.1)  # exponential: sd = mean
    solve = Recorder(seconds=0.0)
    began = time.monotonic()
    open_loop(PROBLEMS, 50.0, 20, 60, solve, seed=7)
    assert len(solve.starts) == 20
    assert all(s - began >= t - 0.001 for s, t in zip(sorted(solve.starts), times[:20]))  # none early
    # arrivals do not wait for the problems before them: all ten must run at once to finish
    held = Gated(threading.Barrier(10))
    results = open_loop(PROBLEMS, 100.0, 10, 60, held, seed=1)
    assert len(results) == 10 and not [r for r in results if r.error] and held.peak == 10
    assert len(open_loop(PROBLEMS, 1.0, 1000, 0.0, Recorder(seconds=0.0))) == 0  # nothing after the limit


def test_level_line_figures():
    results = closed_loop(PROBLEMS, 2, 4, 60, Recorder())
    results.append(ProblemResult("bad", "q", "specreason", error="RuntimeTimeoutError: late"))
    line = level_line(Level("closed", 2), "specreason", results, 2.0, "load_test")
    o = line["other"]
    assert line["num_requests"] == 5 and o["errors"] == 1
    assert o["problems_per_s"] == 2.0 and o["output_tokens_per_s"] == pytest.approx(4 * 4 / 2)  # 4 done
    assert o["acceptance_rate"] == 1.0 and o["judge_calls_per_s"] == 2.0
    assert o["cache_hit_ratio"] == {DRAFT: 0.6, BASE: pytest.approx(10 / 12)}
    assert o["client_overhead_ms_per_step"]["p50"] == pytest.approx(10.0)  # 50 ms wall - 40 ms served
    assert o["problem_latency_s"]["p99"] == pytest.approx(0.05)
    assert "| c=2 | specreason | 5 | 1 | 2.000 |" in markdown([line])


def test_the_client_meter_counts_cpu_and_every_tcp_connection_by_peer():
    import socket
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sgl_specreason.meters import ClientMeter, count_connections

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    peer = f"127.0.0.1:{server.server_address[1]}"
    count_connections()
    count_connections()  # a second call changes nothing
    try:
        with ClientMeter() as meter:
            for _ in range(3):  # urllib: a new connection per request
                urllib.request.urlopen(f"http://{peer}/", timeout=10).read()
            socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10).close()
            sum(i * i for i in range(200_000))
    finally:
        server.shutdown()
        server.server_close()
    assert meter.connections == {peer: 4}
    assert meter.cpu_s > 0
    results = [Recorder()(PROBLEMS[0]), Recorder()(PROBLEMS[1])]
    o = level_line(Level("closed", 1), "base", results, 1.0, "load_test", meter)["other"]
    assert o["client_connections"] == 4 and o["client_connections_per_problem"] == 2.0
    assert o["client_connections_by_peer"] == {peer: 4}
    assert o["client_cpu_ms_per_step"] == pytest.approx(1000 * meter.cpu_s / 2)
    row = markdown([level_line(Level("closed", 1), "base", results, 1.0, "load_test", meter)])
    assert "| 10.00 / 10.00 |" in row and "| 2.00 |" in row


def test_pyspy_split_sums_a_raw_profile_by_part(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from pyspy_split import main as split_main

    profile = tmp_path / "client.txt"
    profile.write_text(
        "thread (1);<module> (load_test.py:1);Endpoint.request (sgl_specreason/backend.py:160);"
        "Client.send (httpx/_client.py:914) 30\n"
        "thread (2);step_spans (sgl_specreason/calls.py:90);encode (sgl_specreason/tokens.py:70) 10\n"
        "thread (3);StreamExecutor._thread_worker_func (sglang/lang/interpreter.py:400) 60\n")
    assert split_main([str(profile), "--rate", "100", "--wall-s", "2", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "1.00 CPU s" in out and "off the CPU (waiting): 3.0 of 4.0 thread-seconds" in out
    rows = {line.rsplit(None, 4)[0].strip(): line.split()[-4:] for line in out.splitlines()[1:4]}
    assert rows["HTTP client (Endpoint, httpx, urllib, sockets)"] == ["0.30", "s", "30.0", "%"]
    assert "SGLang frontend" in out and "tokenizer" in out


def test_judge_server_time_is_the_base_runtimes_calls_on_each_drafted_step():
    from sgl_specreason.loadtest import judge_server_ms

    drafted = Step(0, DRAFT, "x", 4, draft_text="x", calls=[
        Call(DRAFT, "draft", 10, 6, 4, 0.5), Call(BASE, "judge", 12, 10, 1, 0.02), Call(BASE, "logprobs", 12, 10, 1, 0.01)])
    rewritten = Step(1, BASE, "y", 4, draft_text="z", calls=[Call(BASE, "judge", 12, 10, 1, 0.04),
                                                             Call(BASE, "step", 12, 10, 5, 0.9)])
    written = Step(2, BASE, "w", 4, calls=[Call(BASE, "step", 12, 10, 5, 0.9)])  # not drafted: not counted
    result = ProblemResult("p", "q", "specreason", steps=[drafted, rewritten, written])
    assert judge_server_ms([result]) == pytest.approx(35.0)
    assert judge_server_ms([ProblemResult("p", "q", "base", steps=[written])]) is None
