"""Offline batches against the real SGLang CPU servers: killed and resumed with nothing lost or
twice, runtime faults (through a fault-injecting proxy) turned into per-problem error records
that a rerun retries, bad input lines reported by line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgl_specreason.cli import main
from sgl_specreason.trace import BASE, DRAFT
from faultproxy import FaultProxy

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--token-budget", "16", "--step-max-tokens", "8", "--answer-max-tokens", "4", "--quiet"]


def write_problems(path, questions, extra_lines=()):
    lines = [json.dumps({"id": f"p{i}", "question": q, "answer": str(i)}) for i, q in enumerate(questions)]
    path.write_text("\n".join(lines + list(extra_lines)) + "\n")
    return [f"p{i}" for i in range(len(questions))]


def results(path, mode):
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("mode") == mode:
            out.append(record)
    return out


def test_killed_batch_resumes_with_nothing_lost_and_nothing_twice(roles, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_problems(data, [f"What is {i} + {i}?" for i in range(8)])
    cmd = [sys.executable, str(ROOT / "scripts" / "run_batch.py"), "--input", str(data), "--output", str(out),
           "--draft-url", roles[DRAFT].backend.base_url, "--base-url", roles[BASE].backend.base_url, *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not out.exists() or len(results(out, "specreason")) < 2):
            assert proc.poll() is None, "the batch ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = {r["id"] for r in results(out, "specreason")}
    assert 2 <= len(finished) < len(ids), "killed too late to test a resume"
    with open(out, "a") as handle:  # and as if the kill had hit in the middle of a write
        handle.write('{"id": "p7", "mode": "specreason", "te')
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(ids) - len(finished)} problems to solve, {len(finished)} done before" in rerun.stdout
    assert "removed a torn last line" in rerun.stdout
    final = results(out, "specreason")  # every line parses: the torn one is gone
    assert sorted(r["id"] for r in final) == sorted(ids)  # none lost, none twice
    assert all(r["error"] is None for r in final)
    # a third run finds everything done and starts nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"0 problems to solve, {len(ids)} done before" in again.stdout


@pytest.mark.parametrize("parallel", ["1", "3"])
def test_sigterm_ends_a_batch_at_once_and_a_rerun_finishes_it(roles, tmp_path, parallel):
    # With one problem at a time the main thread waits for a gen; with several, for run_batch's
    # workers. Either wait, without a timeout, held SIGTERM off until it ended.
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_problems(data, [f"Count the apples: {i} apples and {i + 1} more." for i in range(6)])
    cmd = [sys.executable, str(ROOT / "scripts" / "run_batch.py"), "--input", str(data), "--output", str(out),
           "--mode", "base", "--base-url", roles[BASE].backend.base_url, "--parallel", parallel,
           "--token-budget", "200", "--step-max-tokens", "24", "--answer-max-tokens", "4", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not out.exists() or not results(out, "base")):
            assert proc.poll() is None, "the batch ended before it could be stopped"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=60)
        # Not after the problems in flight are done (each takes many seconds here): at once.
        assert time.monotonic() - stopped < 5, "SIGTERM waited for the problems in flight"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "interrupted" in err
    finished = {r["id"] for r in results(out, "base")}
    assert 1 <= len(finished) < len(ids)
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=600).returncode == 0
    assert sorted(r["id"] for r in results(out, "base")) == sorted(ids)  # none lost, none twice


def batch(url, data, out, *extra):
    return main(["batch", "--mode", "base", "--input", str(data), "--output", str(out), "--base-url", url,
                 *TINY, *extra])


def test_a_failing_runtime_gives_error_records_the_batch_goes_on_and_a_rerun_retries_only_those(roles, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_problems(data, ["What is 1 + 1?", "How many bananas are 2 + 2 bananas?", "What is 3 + 3?"])

    def fault(path, body):  # the server fails every request about bananas
        return "503" if path == "/generate" and b"banana" in body else None

    with FaultProxy(roles[BASE].backend.base_url, fault) as proxy:
        assert batch(proxy.url, data, out, "--request-retries", "2") == 1  # some items failed
        failed = [seen for seen in proxy.seen if seen[1] == "503"]
    assert len(failed) == 3  # the first try and two retries, then the item is given up
    records = {r["id"]: r for r in results(out, "base")}
    assert set(records) == set(ids)
    assert "HTTP 503" in records["p1"]["error"] and "tried 3 times" in records["p1"]["error"]
    assert records["p0"]["error"] is None and records["p2"]["error"] is None
    with FaultProxy(roles[BASE].backend.base_url, lambda path, body: None) as healthy:
        assert batch(healthy.url, data, out) == 0
        generated = [seen for seen in healthy.seen if seen[0] == "/generate"]
    assert generated, "the rerun solved nothing"
    final = results(out, "base")
    assert [r["id"] for r in final if r["error"] is None].count("p1") == 1
    assert sorted(r["id"] for r in final if r["error"] is None) == sorted(ids)
    assert len(final) == 4  # p0, p2 once; p1's error record and its retry


def test_transient_faults_are_retried_with_backoff(roles, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_problems(data, ["What is 2 + 5?"])
    faults = iter(["drop", "503"])

    def fault(path, body):  # the first two /generate requests fail, then the runtime is back
        return next(faults, None) if path == "/generate" else None

    with FaultProxy(roles[BASE].backend.base_url, fault) as proxy:
        assert batch(proxy.url, data, out, "--request-retries", "2") == 0
        kinds = [what for path, what in proxy.seen if path == "/generate"]
    assert kinds[:3] == ["drop", "503", None]
    assert results(out, "base")[0]["error"] is None


def test_a_runtime_that_stops_answering_times_out_per_item(roles, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_problems(data, ["What is 4 + 4?", "What is 5 + 5 bananas?"])

    def fault(path, body):
        return ("hang", 8) if path == "/generate" and b"banana" in body else None

    with FaultProxy(roles[BASE].backend.base_url, fault) as proxy:
        started = time.monotonic()
        assert batch(proxy.url, data, out, "--request-timeout", "2") == 1
        assert time.monotonic() - started < 60
    records = {r["id"]: r for r in results(out, "base")}
    assert "RuntimeTimeoutError" in records["p1"]["error"] and "within 2 s" in records["p1"]["error"]
    assert records["p0"]["error"] is None


def test_a_prompt_longer_than_the_context_is_an_item_error_not_retried(roles, tmp_path):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_problems(data, ["What is 6 + 6?", "count: " + "one two three " * 3000])
    with FaultProxy(roles[BASE].backend.base_url, lambda path, body: None) as proxy:
        assert batch(proxy.url, data, out) == 1
        generate_calls = [what for path, what in proxy.seen if path == "/generate"]
    records = {r["id"]: r for r in results(out, "base")}
    assert "PromptTooLongError" in records["p1"]["error"]
    assert records["p0"]["error"] is None
    assert len(generate_calls) >= 2  # p0's steps and p1's single, unretried try


def test_bad_lines_are_reported_by_line_and_skipped_or_rejected(roles, tmp_path, capsys):
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_problems(data, ["What is 7 + 7?"], extra_lines=[
        "{not json", json.dumps({"id": "q"}), json.dumps({"id": "e", "question": "  "}),
        json.dumps({"id": "p0", "question": "again?"})])
    assert batch("http://127.0.0.1:9", data, out, "--on-bad-line", "reject") == 2  # before any runtime
    err = capsys.readouterr().err
    for where in (f"{data}:2: not JSON", f"{data}:3: give one of 'question', 'messages' or 'prompt', got none of them", f"{data}:4: problem e: the question is empty",
                  f"{data}:5: duplicate id 'p0' (first on line 1)"):
        assert where in err, err
    assert "4 bad input line(s)" in err and not out.exists()
    assert batch(roles[BASE].backend.base_url, data, out) == 1  # skipped; the good one is solved
    assert [r["id"] for r in results(out, "base")] == ["p0"]


def test_load_test_runs_both_modes_at_each_level_and_writes_its_report(roles, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from load_test import main as load_main

    data = tmp_path / "in.jsonl"
    write_problems(data, ["What is 1 + 2?", "What is 2 + 3?", "What is 3 + 4?"])
    argv = ["--concurrency", "1", "2", "--request-rates", "2", "--num-problems", "3", "--data-path", str(data),
            "--out-dir", str(tmp_path / "lt"), "--draft-url", roles[DRAFT].backend.base_url,
            "--base-url", roles[BASE].backend.base_url, *TINY[:-1]]
    assert load_main(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "lt" / "load_test.jsonl").read_text().splitlines()]
    assert [(x["other"]["loop"], x["other"]["concurrency"] or x["other"]["request_rate"], x["backend"])
            for x in lines] == [("closed", 1, "specreason"), ("closed", 1, "base"), ("closed", 2, "specreason"),
                                ("closed", 2, "base"), ("open", 2, "specreason"), ("open", 2, "base")]
    for x in lines:
        o = x["other"]
        assert x["num_requests"] == 3 and o["errors"] == 0 and o["problems_per_s"] > 0
        assert o["problem_latency_s"]["p50"] <= o["problem_latency_s"]["p99"]
        assert 0 < o["client_overhead_ms_per_step"]["p50"] < 1000 * o["step_latency_s"]["p50"]
        assert (o["judge_calls_per_s"] > 0) == (x["backend"] == "specreason")
        assert o["client_cpu_ms_per_step"] > 0 and o["client_connections_per_problem"] >= 0
    assert (tmp_path / "lt" / "load_test.png").stat().st_size > 0
    assert "| c=2 | specreason | 3 | 0 |" in (tmp_path / "lt" / "load_test.md").read_text()


