"""The drop-in backend: ordinary SGLang programs run on it unchanged, against two real SGLang CPU
servers (SmolLM2-135M each)."""

import pytest
import sglang as sgl

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.dropin import SPECREASON, SpecReasonBackend
from sgl_specreason.trace import BASE, DRAFT
from apples import QUESTION

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]


@sgl.function
def ask(s, question, max_tokens, stops=()):
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=max_tokens, temperature=0.6, top_p=0.95, stop=stops))


@pytest.fixture
def backend(roles):
    cfg = SpecReasonConfig(score_method="likelihood-numbers", threshold=6, step_max_tokens=16, seed=0)
    return SpecReasonBackend(roles[BASE].backend, roles[DRAFT].backend, cfg, min_tokens=32)


def trace_of(state, name="answer"):
    meta = state.get_meta_info(name)
    assert state.error() is None, state.error()
    assert SPECREASON in meta, f"gen {name!r} was not served by SpecReason: {meta}"
    return meta, meta[SPECREASON]


def test_a_long_gen_is_served_by_specreason(backend):
    state = ask.run(question=QUESTION, max_tokens=48, backend=backend)
    meta, result = trace_of(state)
    assert state["answer"] == "\n\n".join(step.text for step in result.steps)
    assert 0 < meta["completion_tokens"] <= 48
    assert meta["completion_tokens"] == sum(step.kept_tokens for step in result.steps)
    assert all(step.score is not None for step in result.steps)
    roles = {call.role for step in result.steps for call in step.calls}
    assert roles == {DRAFT, BASE}
    assert backend.calls[SPECREASON] == 1 and backend.totals.steps == len(result.steps)
    # The draft continues the program's own text: its first prompt is the whole state so far.
    first_draft = result.steps[0].calls[0]
    assert first_draft.role == DRAFT and first_draft.prompt_tokens > 10


def test_the_budget_and_stop_strings_end_the_gen_as_they_would_on_the_base(backend):
    backend.cfg = backend.cfg.replace(threshold=10)  # the base model writes every step
    state = ask.run(question=QUESTION, max_tokens=40, backend=backend)
    meta, result = trace_of(state)
    assert meta["completion_tokens"] <= 40
    assert all(step.source == BASE for step in result.steps)
    # A stop string the model is sure to write soon (a space): the gen ends there, trimmed of it.
    stopped = ask.run(question=QUESTION, max_tokens=64, stops=" ", backend=backend)
    meta, result = trace_of(stopped)
    assert meta["finish_reason"]["type"] == "stop" and result.steps[-1].ended
    assert " " not in stopped["answer"] and meta["completion_tokens"] < 64


def test_short_and_constrained_calls_go_to_the_base_runtime(backend):
    @sgl.function
    def mixed(s):
        s += sgl.user(QUESTION)
        s += sgl.assistant(sgl.gen("short", max_tokens=8))
        s += sgl.user("Is that right?")
        s += sgl.assistant(sgl.select("verdict", choices=["yes", "no"]))

    state = mixed.run(backend=backend)
    assert state.error() is None, state.error()
    assert SPECREASON not in state.get_meta_info("short")
    assert state["verdict"] in ("yes", "no")
    assert backend.calls == {SPECREASON: 0, BASE: 2}


def test_fork_run_batch_and_streaming_still_behave(backend):
    @sgl.function
    def two_ways(s):
        s += sgl.user(QUESTION)
        forks = s.fork(2)
        forks += sgl.assistant(sgl.gen("answer", max_tokens=40))
        return [f["answer"] for f in forks], [f.get_meta_info("answer") for f in forks]

    state = two_ways.run(backend=backend)
    texts, metas = state.ret_value
    assert all(SPECREASON in meta for meta in metas) and all(texts)

    states = ask.run_batch([dict(question=q, max_tokens=40) for q in
                            (QUESTION, "What is 4 times 6?", "Name a prime number.")],
                           backend=backend, num_threads=3)
    for state in states:
        trace_of(state)

    stream = ask.run(question=QUESTION, max_tokens=40, backend=backend, stream=True)
    chunks = list(stream.text_iter("answer"))
    meta, result = trace_of(stream)
    assert len(chunks) >= len(result.steps) and "".join(chunks) == stream["answer"]


def test_batch_runs_an_ordinary_program_on_the_drop_in_backend_and_resumes(roles, tmp_path, capsys):
    import json

    from sgl_specreason.cli import main

    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate([(QUESTION, "5"), ("What is 4 times 6?", "24")])))
    argv = ["batch", "--mode", "dropin", "--input", str(data), "--output", str(out), "--quiet",
            "--draft-url", roles[DRAFT].backend.base_url, "--base-url", roles[BASE].backend.base_url,
            "--token-budget", "32", "--step-max-tokens", "12", "--score-method", "likelihood-numbers",
            "--threshold", "6", "--pipeline"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    solved = [r for r in records if r.get("mode") == "dropin"]
    assert sorted(r["id"] for r in solved) == ["p0", "p1"]
    for r in solved:  # the one gen was served step by step: drafted, judged, kept or rewritten
        assert r["steps"] and all(step["score"] is not None for step in r["steps"])
        assert r["totals"]["judge_calls"] == len(r["steps"]) and r["totals"]["draft_tokens"] > 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 problems to solve, 2 done before" in capsys.readouterr().out
