"""Resuming a batch: finished ids, and no record of problems failing during a stop (no runtime
needed); the store underneath is tested in test_store.py."""

import json

from sgl_specreason.batch import finished_ids
from sgl_specreason.store import ResultStore


def test_finished_ids_count_only_this_modes_results_without_error(tmp_path):
    path = tmp_path / "out.jsonl"
    lines = [
        {"id": "1", "mode": "specreason", "error": None},
        {"id": "2", "mode": "specreason", "error": "RuntimeServerError: HTTP 503"},
        {"id": "3", "mode": "base", "error": None},
        {"summary": {"task": "x"}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert finished_ids(ResultStore(path), "specreason") == {"1"}
    assert finished_ids(ResultStore(path), "base") == {"3"}
    assert finished_ids(ResultStore(tmp_path / "missing.jsonl"), "base") == set()


SIGTERM_MID_STOP = """
import os, signal, sys, threading, jsonlines
from sgl_specreason import flags
from sgl_specreason.runner import Monitor
from sgl_specreason.trace import ProblemResult

writer = jsonlines.open(sys.argv[1], mode="a", flush=True)
monitor = Monitor(writer, stream=None)

def stop_all():  # as a worker sees its server go away while the local servers are stopped
    monitor.on_result(ProblemResult("p1", "q", "base", error="RuntimeUnavailableError: refused"))

flags.stop_all = stop_all

def job():
    monitor.on_result(ProblemResult("p0", "q", "base", answer="4"))  # finished before the signal
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(30)
    return 0

sys.exit(flags.guarded(job, "interrupted"))
"""


def test_problems_failing_while_sigterm_stops_the_servers_are_not_recorded(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-c", SIGTERM_MID_STOP, str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["p0"]


def test_the_summary_tells_problems_run_from_bad_input_lines_skipped():
    import io

    from sgl_specreason.problems import BadInput
    from sgl_specreason.runner import print_summary, summary
    from sgl_specreason.trace import ProblemResult

    results = [ProblemResult("a", "q", "base", answer="1"), ProblemResult("b", "q", "base", answer="2"),
               ProblemResult("c", "q", "base", error="RuntimeTimeoutError: no reply")]
    bad = [BadInput(str(i), f"line {i}: not JSON") for i in range(6)]
    out = io.StringIO()
    print_summary(summary(results, "base", "batch", 1.0, bad), out)
    assert "problems     3 run (2 answered, 1 failed); 6 bad input lines skipped\n" in out.getvalue()
