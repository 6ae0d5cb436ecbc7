"""The serve load measurement (``eval.serve_load``) without a server: its plan and resumption,
the load generator's command and result line, serve's figures, the memory check, the report,
and that it stops the process trees it starts."""

import argparse
import json
import sys
import time
from pathlib import Path

import psutil
import pytest

from sgl_specreason.eval import serve_load as sl
from sgl_specreason.eval.serve_load import command, measurement
from sgl_specreason.store import ResultStore

pytestmark = pytest.mark.timeout(60)

SETUP = sl.Setup()
RUNS = sl.plan([1, 8, 32], [4, 16, 32], 128, 64, (200, 32, 32, 8))


def bench_result(completed, num_prompts, ttft_ms=800.0, e2e_ms=9000.0, errors=()):
    """A result line as ``sglang.benchmark.serving --output-details`` writes it."""
    return {"backend": "sglang-oai-chat", "completed": completed, "duration": 40.0,
            "request_throughput": completed / 40.0, "output_throughput": 12.5, "total_output_tokens": 500,
            "median_ttft_ms": ttft_ms, "p99_ttft_ms": 2 * ttft_ms, "median_e2e_latency_ms": e2e_ms,
            "p99_e2e_latency_ms": 1.5 * e2e_ms, "errors": list(errors) + [""] * (num_prompts - len(errors)),
            "generated_texts": ["x"] * num_prompts}


def stats(answered, overheads, stream_errors=0):
    """A ``GET /stats?recent=N`` body after ``answered`` requests with these overheads (ms)."""
    return {"requests": {"answered": answered, "failed": stream_errors, "stream_errors": stream_errors},
            "overhead_ms": {"count": len(overheads), "recent": list(overheads)}}


def record_for(run, completed=None, overheads=(1.0, 2.0), error=None, samples=None):
    completed = run.num_prompts if completed is None else completed
    before, after = stats(10, [9.0] * 3), stats(10 + run.num_prompts, [9.0] * 3 + list(overheads))
    samples = samples or [(0.0, 500.0, 10), (1.0, 505.0, 11), (2.0, 510.0, 10 + run.num_prompts)]
    return sl.make_record(run, SETUP, bench_result(completed, run.num_prompts), before, after, samples, 42.0,
                          ["python", "-m", sl.BENCH_MODULE], error)


# -- the plan and resumption ----------------------------------------------------------------------

def test_the_plan_runs_each_level_through_serve_then_on_the_base_runtime_then_the_memory_run():
    assert [(r.kind, r.target, r.concurrency, r.num_prompts) for r in RUNS] == [
        ("level", "serve", 1, 4), ("level", "base", 1, 4), ("level", "serve", 8, 16),
        ("level", "base", 8, 16), ("level", "serve", 32, 32), ("level", "base", 32, 32),
        ("memory", "serve", 32, 200)]
    with pytest.raises(ValueError, match="fewer than concurrency"):
        sl.plan([32], [8], 128, 64, None)
    with pytest.raises(ValueError, match="one --num-prompts per"):
        sl.plan([1, 8], [4], 128, 64, None)


def test_beside_batch_runs_follow_each_level_and_leave_the_other_runs_keys_alone():
    runs = sl.plan([1, 8, 32], [4, 16, 32], 128, 64, (200, 32, 32, 8), batch_lines=200)
    assert [(r.kind, r.target, r.concurrency) for r in runs][:3] == [
        ("level", "serve", 1), ("level", "base", 1), ("beside-batch", "serve", 1)]
    assert [r.key(SETUP) for r in runs if r.kind != sl.BESIDE] == [r.key(SETUP) for r in RUNS]
    beside = [r for r in runs if r.kind == sl.BESIDE]
    assert [r.name for r in beside][0] == "beside-batch-serve-c1-n4-in128-out64-batch200"
    assert len(beside) == 3 and all(r.batch_lines == 200 for r in beside)
    ports = sl.Ports(8000, 30001, 30000)
    assert "--data-dir" not in sl.serve_command(SETUP, ports, Path("logs"), 256)
    cmd = sl.serve_command(SETUP, ports, Path("logs"), 256, data_dir=Path("work/serve-data"))
    assert cmd[cmd.index("--data-dir") + 1] == "work/serve-data"
    serve_cmd, _ = sl.shown_commands(runs, SETUP)
    assert "--data-dir logs/serve-load/serve-data" in serve_cmd


def test_a_level_beside_a_batch_is_checked_with_what_the_batch_did():
    run = sl.plan([8], [16], 128, 64, None, batch_lines=50)[-1]
    record = {**record_for(run), "batch": {"lines": 50, "done_during_run": 12}}
    [verdict] = [v for v in sl.verdicts([record]) if "beside" in v]
    assert verdict.startswith("- met: serve's own time per request < 5 ms at concurrency 8 while a batch ran "
                              "beside the live requests (12 of its 50 lines answered during the run): p50 1.50 ms")
    failed = {**record, "error": "the batch beside the run answered no line during it"}
    assert [v for v in sl.verdicts([failed]) if "beside" in v][0].startswith("- NOT met")
    assert "| beside-batch | serve | 8 | 16 | 0 |" in sl.table([record])


def test_a_rerun_skips_the_runs_done_and_retries_those_that_failed(tmp_path):
    store = ResultStore(tmp_path / "report.jsonl", log=lambda line: None)
    with store.append() as writer:
        writer.write(record_for(RUNS[0]))
        writer.write(record_for(RUNS[1], error="the load generator exited with code 1"))
        # the same run under another setup is not this setup's result
        writer.write({**record_for(RUNS[2]), "key": RUNS[2].key(sl.Setup(threshold=7))})
    with open(store.path, "a") as handle:
        handle.write('{"key": "level-serve-c32')  # a run killed while its line was written
    store = ResultStore(store.path, log=lambda line: None)  # the rerun
    todo = sl.remaining(RUNS, SETUP, store.read("key"))
    assert todo == RUNS[1:]
    # the retry succeeds: its record is the one reported
    with store.append() as writer:
        writer.write(record_for(RUNS[1]))
    final = sl.final_records(RUNS, SETUP, store.read("key"))
    assert [r["key"] for r in final] == [RUNS[0].key(SETUP), RUNS[1].key(SETUP)]
    assert not final[1]["error"]
    assert sl.remaining(RUNS, SETUP, store.read("key")) == RUNS[2:]


def test_a_run_whose_every_try_failed_is_reported_as_failed():
    failed = record_for(RUNS[0], completed=0, error="the load generator exited with code 1")
    final = sl.final_records(RUNS, SETUP, [failed])
    assert final == [failed]
    assert "(run failed)" in sl.table(final)


# -- the load generator -----------------------------------------------------------------------------

def test_the_load_generator_command_reads_a_local_data_set_and_names_serves_model():
    cmd = sl.bench_command(RUNS[0], "http://127.0.0.1:8000", SETUP, "/models/smol", Path("/w/p.json"),
                           Path("/w/out.jsonl"), model_name="specreason", python="python")
    text = " ".join(cmd)
    assert cmd[:3] == ["python", "-m", "sglang.benchmark.serving"]
    for flag in ("--backend sglang-oai-chat", "--dataset-name random", "--dataset-path /w/p.json",
                 "--random-input-len 128", "--random-output-len 64", "--random-range-ratio 0.5",
                 "--num-prompts 4", "--max-concurrency 1", "--tokenizer /models/smol", "--model /models/smol",
                 "--served-model-name specreason", "--seed 0", "--output-file /w/out.jsonl", "--warmup-requests 0"):
        assert flag in text
    direct = sl.bench_command(RUNS[1], "http://127.0.0.1:30000", SETUP, "/models/smol", Path("/w/p.json"),
                              Path("/w/out.jsonl"), python="python")
    assert "--served-model-name" not in direct  # the base runtime's model name is its path
    assert "--disable-ignore-eos" in cmd and "--disable-ignore-eos" not in direct  # serve refuses ignore_eos


def test_the_result_line_is_the_last_one_the_load_generator_appended(tmp_path):
    path = tmp_path / "out.jsonl"
    assert sl.read_bench(path) is None
    path.write_text(json.dumps(bench_result(1, 4)) + "\nnot json\n" + json.dumps(bench_result(4, 4)) + "\n")
    assert sl.read_bench(path)["completed"] == 4


def test_failed_requests_and_errors_inside_serves_streams_both_count_as_errors():
    run = RUNS[4]  # serve at 32
    before, after = stats(10, [9.0]), stats(42, [9.0, 1.0, 2.0, 3.0], stream_errors=2)
    result = bench_result(30, 32, errors=["Service Unavailable: {...}", "Service Unavailable: {...}"])
    record = sl.make_record(run, SETUP, result, before, after, [(0, 400.0, 10), (5, 420.0, 42)], 50.0, ["x"])
    assert record["bench"]["failed"] == 2 and record["stream_errors"] == 2 and record["errors"] == 4
    assert record["bench"]["error_messages"] == ["Service Unavailable: {...}"]
    assert record["overhead_ms"]["count"] == 3 and record["overhead_ms"]["max"] == 3.0  # this run's only
    assert record["rss"] == {"start_mb": 400.0, "end_mb": 420.0, "max_mb": 420.0}
    assert not record["error"] and "memory" not in record
    base = sl.make_record(RUNS[5], SETUP, bench_result(32, 32), None, None, [], 30.0, ["x"])
    assert base["errors"] == 0 and "overhead_ms" not in base and "rss" not in base


def test_a_run_without_a_result_line_is_an_error_a_rerun_retries():
    record = sl.make_record(RUNS[0], SETUP, None, None, None, [], 3.0, ["x"])
    assert record["error"] and record["errors"] == RUNS[0].num_prompts


# -- serve's figures ----------------------------------------------------------------------------------

def test_overheads_are_those_of_the_requests_between_two_stats_reads():
    assert sl.new_overheads(stats(0, [5.0]), stats(3, [5.0, 1.0, 2.0])) == [1.0, 2.0]
    assert sl.new_overheads(stats(0, [5.0]), stats(0, [5.0])) == []
    # more new requests than serve keeps: all it keeps
    after = {"requests": {}, "overhead_ms": {"count": 5000, "recent": [1.0] * 1024}}
    assert len(sl.new_overheads(stats(0, []), after)) == 1024
    assert sl.new_overheads(None, None) == []
    assert sl.percentiles([])["p50"] is None


def test_memory_is_flat_within_ten_percent_from_the_first_to_the_last_request():
    flat = [(0, 500.0, 7), (1, 500.0, 8), (2, 530.0, 100), (3, 545.0, 207), (4, 700.0, 207)]
    check = sl.memory_check(flat, 7, 200)
    assert (check["first_mb"], check["last_mb"], check["flat"]) == (500.0, 545.0, True)
    growing = [(0, 500.0, 7), (1, 500.0, 8), (2, 600.0, 207)]
    assert sl.memory_check(growing, 7, 200)["flat"] is False  # +20 %
    # no counts (serve's /stats did not answer): the run's first and last samples
    blind = [(0, 500.0, None), (1, 520.0, None)]
    assert sl.memory_check(blind, 0, 200)["change"] == 0.04
    assert sl.memory_check([], 0, 200)["flat"] is None


def test_the_memory_run_records_its_check_and_keeps_its_samples_thinned():
    samples = [(float(i), 500.0 + i / 100, 10 + i // 2) for i in range(500)]
    record = record_for(RUNS[6], samples=samples)
    assert record["memory"]["flat"] is True and record["memory"]["first_mb"] == 500.02
    assert len(record["rss_samples"]) == 200
    assert record["rss_samples"][0] == [0.0, 500.0, 10] and record["rss_samples"][-1] == list(samples[-1])


# -- the report ------------------------------------------------------------------------------------

def test_the_report_tables_every_run_and_checks_the_targets(tmp_path):
    records = [record_for(run) for run in RUNS]
    records[4] = record_for(RUNS[4], completed=31)  # one failure at 32
    records[2] = record_for(RUNS[2], overheads=(7.0, 8.0, 9.0))
    text = sl.table(records)
    assert text.count("\n") == 1 + len(RUNS)
    assert "| level | serve | 32 | 32 | 1 |" in text and "| level | base | 1 | 4 | 0 |" in text
    assert "| 0.80 / 1.60 | 9.00 / 13.50 | 1.50 / 1.99 |" in text  # TTFT, e2e (s), overhead (ms)
    verdicts = sl.verdicts(records)
    assert verdicts[0].startswith("- NOT met: the load generator completes at 32")
    assert any(v.startswith("- met: serve's own time per request < 5 ms at concurrency 1") for v in verdicts)
    assert any(v.startswith("- NOT met: serve's own time per request < 5 ms at concurrency 8") for v in verdicts)
    assert verdicts[-1].startswith("- met: serve's memory flat (±10 %) from the first to the last of 200")
    # a memory run cut short is not a flat run, whatever its samples say
    records[6] = {**records[6], "error": "the load generator did not end within 600 s (--run-timeout)",
                  "overhead_ms": {"count": 174}}
    assert sl.verdicts(records)[-1].startswith(
        "- NOT met: serve's memory over 200 requests: the run did not complete (the load generator did "
        "not end within 600 s (--run-timeout)); over the 174 requests answered before that")
    serve_cmd, benches = sl.shown_commands(RUNS, SETUP)
    path = sl.write_report(records, SETUP, tmp_path, "python -m eval.serve_load", serve_cmd, benches[:2])
    readme = path.read_text()
    assert "python -m eval.serve_load" in readme and "sgl-specreason serve --port 8000" in readme
    assert "--backend sglang-oai-chat" in readme and "![throughput" in readme
    assert (tmp_path / "serve_load.png").stat().st_size > 10_000


def test_nothing_measured_is_said_so():
    assert sl.verdicts([]) == [
        "- load generator through serve: not measured",
        "- serve's own time per request under 5 ms: not measured",
        "- serve's memory flat (±10 %) over a long run: not measured"]


def test_report_only_and_dry_run_start_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(command, "measure", lambda *a, **k: pytest.fail("started a measurement"))
    out = tmp_path / "out"
    store = ResultStore(out / "report.jsonl", log=lambda line: None)
    with store.append() as writer:
        for run in RUNS[:2]:
            writer.write(record_for(run))
    assert sl.main(["--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "# 5 of 7 runs to do" in printed and "--max-concurrency 8" in printed
    assert "--max-concurrency 1 " not in printed  # done already
    assert sl.main(["--out", str(out), "--report-only"]) == 1  # two runs of seven: not complete
    assert "| level | base | 1 | 4 | 0 |" in (out / "README.md").read_text()


# -- the processes it starts ------------------------------------------------------------------------

SPAWNS_A_RUNTIME = """
import subprocess, sys, time
# a child in a session of its own, as serve's runtimes are; it ignores its parent's end
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
time.sleep(120)
"""


def test_stopping_serve_kills_what_is_left_of_its_process_tree(tmp_path):
    serve = sl.Serve([sys.executable, "-c", SPAWNS_A_RUNTIME], tmp_path / "serve.log", "http://127.0.0.1:9")
    serve.start()
    try:
        deadline = time.monotonic() + 20
        while not psutil.Process(serve.process.pid).children(recursive=True):
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        serve.remember_tree()
        tree = list(serve.tree)
    finally:
        serve.stop(grace=5)
    assert tree and serve.process.poll() is not None
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_load_generator_past_its_time_is_killed(tmp_path):
    started = time.monotonic()
    code, timed_out = sl.run_bench([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "b.log", 1.0)
    assert timed_out and time.monotonic() - started < 20
    assert "import time" in (tmp_path / "b.log").read_text()  # the command is logged


# -- the whole measurement, on serve over fake runtimes and a stand-in load generator -----------------

FAKE_SERVE = """
import sys
sys.path[:0] = [{tests!r}]
import uvicorn
from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve import create_app

draft = FakeRuntime("draft", lambda steps, fork: f"d{{len(steps)}}: a step.")
base = FakeRuntime("base", lambda steps, fork: f"b{{len(steps)}}: a step!")
app = create_app(fake_roles(draft, base), SpecReasonConfig(token_budget=30, step_max_tokens=12, answer_max_tokens=4))
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""

FAKE_BENCH = """
import json, sys, urllib.request
url, n, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if url.endswith(":{serve_port}"):  # through serve: real requests, so that its /stats move
    for _ in range(n):
        body = json.dumps({{"model": "specreason", "messages": [{{"role": "user", "content": "2 + 3?"}}]}}).encode()
        request = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                         headers={{"Content-Type": "application/json"}})
        urllib.request.urlopen(request, timeout=30).read()
with open(output, "a") as handle:
    handle.write(json.dumps({{"completed": n, "duration": 1.0, "request_throughput": n, "output_throughput": 10.0,
                              "median_ttft_ms": 5.0, "p99_ttft_ms": 6.0, "median_e2e_latency_ms": 20.0,
                              "p99_e2e_latency_ms": 30.0, "errors": [""] * n}}) + "\\n")
"""


def test_the_measurement_starts_serve_records_each_run_and_stops_serve(tmp_path, monkeypatch):
    from sgl_specreason import models

    tests = str(Path(__file__).parent)
    holder = {}

    def serve_command(setup, ports, log_dir, max_queue, python=sys.executable, data_dir=None):
        holder["ports"] = ports
        return [python, "-c", FAKE_SERVE.format(tests=tests, port=ports.serve)]

    def bench_command(run, url, setup, tokenizer, dataset, output, model_name=None, python=sys.executable):
        script = FAKE_BENCH.format(serve_port=holder["ports"].serve)
        return [python, "-c", script, url, str(run.num_prompts), str(output)]

    monkeypatch.setattr(measurement, "serve_command", serve_command)
    monkeypatch.setattr(measurement, "bench_command", bench_command)
    monkeypatch.setattr(measurement, "write_prompts", lambda path: path)
    monkeypatch.setattr(models, "resolve", lambda name, log=None: "/models/smol")
    runs = sl.plan([1, 2], [2, 2], 16, 8, (6, 3, 8, 4))
    args = argparse.Namespace(work_dir=tmp_path / "work", start_timeout=120, run_timeout=60, sample_seconds=0.2)
    store = ResultStore(tmp_path / "out" / "report.jsonl", log=lambda line: None)
    lines = []
    sl.measure(runs, SETUP, args, store, log=lines.append)
    records = store.read("key")
    assert [r["key"] for r in records] == [run.key(SETUP) for run in runs]
    assert not any(r["error"] or r["errors"] for r in records), lines
    through_serve = [r for r in records if r["target"] == "serve"]
    assert [r["overhead_ms"]["count"] for r in through_serve] == [2, 2, 6]
    assert all(r["rss"]["max_mb"] > 10 for r in through_serve)
    memory = records[-1]["memory"]
    assert memory["first_mb"] and memory["flat"] in (True, False)
    assert any("warm-up request to the serve: HTTP 200" in line for line in lines)
    assert sl.remaining(runs, SETUP, records) == []
    # serve is stopped, and nothing listens on its port any more
    assert sl.get_json(f"http://127.0.0.1:{holder['ports'].serve}/health", timeout=2) is None
