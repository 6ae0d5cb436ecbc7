"""SpecReason and its baselines against two real SGLang CPU servers (SmolLM2-135M each)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from sgl_specreason.programs import reason, specreason
from sgl_specreason.backend import Endpoint
from sgl_specreason.calls import Role, step_spans
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.problems import make_problem
from sgl_specreason.judges.likelihood import METHODS as LIKELIHOOD_METHODS
from sgl_specreason.runner import Monitor, run_problems
from sgl_specreason.trace import BASE, DRAFT
from apples import QUESTION, SMALL, solve

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

def test_threshold_zero_keeps_every_draft(roles):
    result = solve(roles, threshold=0)
    for step in result.steps:
        assert step.source == DRAFT
        assert step.score is not None and 0 <= step.score <= 9
        assert step.base_text is None and step.base_tokens is None
        assert step.text == step.draft_text.replace("</think>", "") or step.text == step.draft_text
        assert step.kept_tokens == step.draft_tokens
        assert [c.kind for c in step.calls] == ["draft", "judge"]
        assert [c.role for c in step.calls] == [DRAFT, BASE]
        judge = step.calls[1]
        assert judge.completion_tokens == 1
    totals = result.totals()
    assert totals.acceptance_rate == 1.0
    assert totals.kept_base_tokens == 0
    assert totals.judge_calls == len(result.steps)
    assert result.text.startswith(result.steps[0].text)


def test_threshold_ten_makes_the_base_write_every_step(roles):
    result = solve(roles, threshold=10)
    for step in result.steps:
        assert step.source == BASE
        assert step.score is not None and step.score < 10
        assert step.draft_text is not None and step.base_text is not None
        assert step.kept_tokens == step.base_tokens
        assert [c.kind for c in step.calls] == ["draft", "judge", "step"]
        assert [c.role for c in step.calls] == [DRAFT, BASE, BASE]
    totals = result.totals()
    assert totals.acceptance_rate == 0.0
    assert totals.kept_draft_tokens == 0 and totals.kept_base_tokens > 0


def test_judge_prefix_is_served_from_the_radix_cache(roles):
    for role in roles.values():  # earlier tests' prompts would otherwise be evicted meanwhile
        role.backend.flush_cache()
    result = solve(roles, threshold=0, token_budget=64, step_max_tokens=12)
    judged = [(step, next(c for c in step.calls if c.kind == "judge")) for step in result.steps]
    assert len(judged) >= 3, "need a few steps to see the cache grow"
    cached = [call.cached_tokens for _, call in judged]
    assert all(later > earlier for earlier, later in zip(cached, cached[1:])), cached
    # Only the new step and the judge's fixed question after it are prefilled; the problem and
    # every earlier step come from the cache (a token or two may differ at the step boundary).
    fresh = [call.prompt_tokens - call.cached_tokens - step.kept_tokens for step, call in judged[1:]]
    assert max(fresh) - min(fresh) <= 4, fresh
    assert max(fresh) < 100, fresh


def test_first_steps_from_the_base_are_not_judged(roles):
    result = solve(roles, threshold=0, first_n_base_steps=2, token_budget=60)
    first = result.steps[:2]
    assert [s.source for s in first] == [BASE, BASE]
    assert all(s.score is None and s.draft_text is None for s in first)
    if len(result.steps) > 2:
        assert result.steps[2].source == DRAFT and result.steps[2].score is not None


def test_step_spans_agree_with_the_runtimes_own_token_count(roles):
    base = roles[BASE]
    prefix = base.template.reasoning(QUESTION, ["Tom has 3 apples."])
    steps = ["He buys 2 more, so 3 + 2 = 5.", "So the answer is 5."]
    logprob_start, lengths = step_spans(base.backend, prefix, steps)
    start = logprob_start + 1  # the first token of the steps
    prefix_ids = base.backend.tokenize([prefix])[0]
    assert len(prefix_ids) - 1 <= start <= len(prefix_ids)
    for step, length in zip(steps, lengths):
        reply = base.backend.request("/generate", {"text": prefix + step, "sampling_params": {"max_new_tokens": 1}})
        assert reply["meta_info"]["prompt_tokens"] == start + length


@pytest.mark.parametrize("method", LIKELIHOOD_METHODS)
def test_likelihood_judge_reads_the_steps_log_probs_from_one_prefill(roles, method):
    result = solve(roles, threshold=0, score_method=method, token_budget=48, step_max_tokens=12)
    assert len(result.steps) >= 2
    for step in result.steps:
        assert set(step.score_signals) == set(LIKELIHOOD_METHODS), (step.text, step.draft_tokens)
        assert step.score == step.score_signals[method] and 0 <= step.score <= 10
        assert [c.kind for c in step.calls] == ["draft", "judge"]
    for step in result.steps[1:]:  # the first judge call also prefills the problem
        judge = step.calls[1]
        # only the drafted step is new to the base runtime, plus a few boundary tokens: the
        # separators, the one token before the step (its log-prob is read from there), and the
        # last prompt token, which the radix cache does not keep
        assert judge.prompt_tokens - judge.cached_tokens <= step.draft_tokens + 5, judge


def test_likelihood_threshold_ten_rejects_and_the_base_writes(roles):
    result = solve(roles, threshold=10, score_method="likelihood", token_budget=24)
    assert all(step.source == BASE and step.score < 10 for step in result.steps)


def test_judge_benchmark_scores_pairs_reports_and_resumes(roles, tmp_path, capsys):
    from sgl_specreason.eval.judge_bench import bench_judges, main as bench_main

    methods = [j.name for j in bench_judges()]

    argv = ["--num-problems", "1", "--kinds", "result", "operation", "--out-dir", str(tmp_path),
            "--base-url", roles[BASE].backend.base_url]
    assert bench_main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "judge_records.jsonl").read_text().splitlines()]
    assert sorted((r["kind"], r["variant"]) for r in records) == [
        ("operation", "corrupted"), ("operation", "original"), ("result", "corrupted"), ("result", "original")]
    for r in records:
        assert set(r["scores"]) == set(methods)
        assert r["cost"]["likelihood"]["new_tokens"] < r["cost"]["paper"]["new_tokens"]  # no question to prefill
    rows = [json.loads(line) for line in (tmp_path / "judge_report.jsonl").read_text().splitlines()]
    assert [row["method"] for row in rows[:-1]] == methods
    assert all(row["pairs"] == 2 and 0 <= row["auroc"] <= 1 for row in rows[:-1])
    assert (tmp_path / "judge_scores.png").stat().st_size > 0
    capsys.readouterr()
    assert bench_main(argv) == 0  # everything judged already: nothing is asked again
    assert "0 steps to judge, 4 done before" in capsys.readouterr().out
    assert len((tmp_path / "judge_records.jsonl").read_text().splitlines()) == 4


def test_several_drafts_are_forked_and_judged_together(roles):
    result = solve(roles, threshold=0, num_drafts=2, token_budget=24)
    step = result.steps[0]
    assert len(step.draft_scores) == 2
    assert [c.kind for c in step.calls] == ["draft", "draft", "judge", "judge"]
    assert step.score == max(step.draft_scores)


@pytest.mark.parametrize("role", [BASE, DRAFT])
def test_single_model_baselines(roles, role):
    cfg = SpecReasonConfig(**SMALL)
    state = reason.run(problem=make_problem(QUESTION, id="b"), cfg=cfg, role=roles[role],
                       backend=roles[role].backend)
    result = state.ret_value
    assert result.error is None and result.mode == role
    assert all(s.source == role and s.score is None for s in result.steps)
    assert {c.role for s in result.steps for c in s.calls} == {role}


def test_a_bad_problem_in_a_batch_does_not_stop_the_others(roles, tmp_path):
    cfg = SpecReasonConfig(**SMALL)
    too_long = make_problem("apple " * 9000, id="too-long")  # longer than the 8192-token context
    problems = [make_problem(QUESTION, id="ok-1"), too_long, make_problem("What is 2 + 2?", id="ok-2")]
    import jsonlines
    path = tmp_path / "out.jsonl"
    with jsonlines.open(path, "w") as writer:
        monitor = Monitor(writer, stream=None)
        results = run_problems(problems, cfg, roles, "specreason", monitor, parallel=2)
    by_id = {r.id: r for r in results}
    assert by_id["ok-1"].error is None and by_id["ok-2"].error is None
    assert "PromptTooLongError" in by_id["too-long"].error
    assert "context" in by_id["too-long"].error
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["ok-1", "ok-2", "too-long"]


def test_cli_solve_against_given_urls(roles, tmp_path):
    out = tmp_path / "solve.jsonl"
    cmd = [sys.executable, "-m", "sgl_specreason.cli", "solve", QUESTION,
           "--draft-url", roles[DRAFT].backend.base_url, "--base-url", roles[BASE].backend.base_url,
           "--token-budget", "24", "--step-max-tokens", "12", "--answer-max-tokens", "8",
           "--threshold", "5", "--result-file", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[question step 0]" in proc.stdout and "acceptance" in proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["id"] == "question" and lines[0]["steps"]
    assert lines[-1]["summary"]["backend"] == "specreason"
    assert lines[-1]["summary"]["num_requests"] == 1


def test_cli_rejects_bad_config_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sgl_specreason.cli", "solve", "q", "--threshold", "12",
                           "--draft-url", "http://127.0.0.1:9", "--base-url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: threshold must be in [0, 10], got 12.0"


def test_stalled_runtime_times_out_with_a_clear_error(roles, servers):
    """SIGSTOP freezes the base server: the judge call must fail by its timeout, not hang."""
    base = Endpoint(servers[BASE].url, role="base", timeout=3)
    roles_ = {DRAFT: roles[DRAFT], BASE: Role(BASE, base, roles[BASE].template)}
    group = os.getpgid(servers[BASE].process.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        state = specreason.run(problem=make_problem(QUESTION, id="stall"),
                               cfg=SpecReasonConfig(**SMALL), draft=roles_[DRAFT], base=roles_[BASE],
                               backend=base)
        result = state.ret_value
    finally:
        os.killpg(group, signal.SIGCONT)
    assert result.error is not None
    assert "RuntimeTimeoutError" in result.error and "did not answer /generate within 3 s" in result.error
    assert roles[BASE].backend.health(timeout=60)


def test_killed_runtime_gives_a_clear_error(smol_path, roles, tmp_path):
    from conftest import start_server

    server = start_server(smol_path, "base", tmp_path)
    try:
        server.wait_ready(timeout=600)
        base = Role(BASE, Endpoint(server.url, role="base", timeout=60), roles[BASE].template)
        os.killpg(os.getpgid(server.process.pid), signal.SIGKILL)
        server.process.wait(timeout=30)
        state = specreason.run(problem=make_problem(QUESTION, id="killed"),
                               cfg=SpecReasonConfig(**SMALL), draft=roles[DRAFT], base=base,
                               backend=base.backend)
        result = state.ret_value
    finally:
        server.stop()
    assert "RuntimeUnavailableError" in result.error
    assert f"base runtime at {server.url}" in result.error


def test_ctrl_c_stops_the_local_runtime_it_started(smol_path, tmp_path):
    """The CLI starts its own server (base-only mode: one more server, not two), Ctrl-C
    arrives mid-run, and no server process is left behind."""
    import re
    import time

    import psutil

    cmd = [sys.executable, "-u", "-m", "sgl_specreason.cli", "solve", QUESTION, "--mode", "base",
           "--base-model", smol_path, "--base-dtype", "float32", "--threads", "1",
           "--max-total-tokens", "4096", "--token-budget", "400", "--step-max-tokens", "64",
           "--log-dir", str(tmp_path / "logs"), "--result-file", str(tmp_path / "r.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        lines.append(line)
        if "[question step 0]" in line or time.monotonic() > deadline:
            break
    output = "".join(lines)
    match = re.search(r"on http://127\.0\.0\.1:(\d+)", output)
    assert match, output
    port = int(match.group(1))
    server_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert server_pids, "the CLI should have a server child running"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output + rest
    assert "interrupted; local runtimes stopped" in rest
    # the problem in flight failed as its server went away: no failure of its own, not recorded
    assert "error" not in rest and not (tmp_path / "r.jsonl").read_text().strip()
    time.sleep(1)
    alive = [pid for pid in server_pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    import socket
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_eval_runner_writes_a_report_and_resumes(roles, tmp_path, capsys):
    from sgl_specreason.eval.run_eval import main as eval_main

    data = tmp_path / "tiny.jsonl"
    data.write_text(json.dumps({"id": "apples", "question": QUESTION, "answer": "5"}) + "\n"
                    + json.dumps({"id": "pick", "question": "Which is a fruit?", "choices": ["apple", "stone"],
                                  "answer": "apple"}) + "\n")
    argv = ["--dataset", str(data), "--modes", "base", "specreason", "dropin+pipeline",
            "--thresholds", "5", "--chunk", "1",
            "--score-methods", "average", "--token-budget", "24", "--step-max-tokens", "12",
            "--answer-max-tokens", "8", "--result-file", str(tmp_path / "eval.jsonl"),
            "--report-dir", str(tmp_path / "report"),
            "--draft-url", roles[DRAFT].backend.base_url, "--base-url", roles[BASE].backend.base_url]
    assert eval_main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    modes = ["base", "specreason-average-5", "dropin-average-5+pipeline"]
    # --chunk 1: every mode on the first problem, then every mode on the next
    assert [(r["problem_id"], r["mode"]) for r in records] == [(p, m) for p in ("apples", "pick") for m in modes]
    assert {r["kind"] for r in records} == {"math", "choice"}
    dropin = [r for r in records if r["mode"] == modes[2]]
    assert all(r["mode_info"]["pipeline"] and r["totals"]["judge_calls"] > 0 for r in dropin)
    report = [json.loads(line) for line in (tmp_path / "report" / "report.jsonl").read_text().splitlines()]
    assert [row["mode"] for row in report[:3]] == modes
    assert report[1]["speedup"] is not None and report[1]["judge_calls"] > 0
    assert (tmp_path / "report" / "accuracy_vs_speedup.png").exists()
    # every record says what it was made with: the mode's config and the models served
    assert all(r["settings"]["config"]["token_budget"] == 24 for r in records)
    assert {tuple(sorted(r["settings"]["models"])) for r in records} == {("base",), ("base", "draft")}
    # a rerun finds everything done and runs nothing
    assert eval_main(argv) == 0
    assert len((tmp_path / "eval.jsonl").read_text().splitlines()) == 6
    # one with another budget would mix incomparable records: refused, the file left as it was
    assert eval_main([*argv, "--token-budget", "32"]) == 2
    assert "made with other settings (config.token_budget: 24 in the file, 32 now)" in capsys.readouterr().err
    assert len((tmp_path / "eval.jsonl").read_text().splitlines()) == 6
