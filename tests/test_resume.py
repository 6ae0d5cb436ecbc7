"""A killed evaluation or judge benchmark resumes with nothing lost and nothing twice: each run is
cut short in the middle of writing a record, as SIGKILL would leave it, then run again. The
runtimes are stand-ins; the results file goes through the commands' own code."""

import json
from contextlib import contextmanager
from types import SimpleNamespace as NS

import pytest

from sgl_specreason.eval import judge_bench, run_eval
from sgl_specreason.calls import recording
from sgl_specreason.judges import SCORE_METHODS
from sgl_specreason.store import read_records
from sgl_specreason.trace import BASE, DRAFT, ProblemResult


class Killed(BaseException):
    """The process dying mid-write: nothing after it runs, no handler sees it."""


def stand_in_runtimes(monkeypatch, module):
    roles = {role: NS(name=role, backend=NS(model_path=f"/m/{role}-model", base_url="http://stand-in"),
                      template=NS(name="chatml")) for role in (DRAFT, BASE)}

    @contextmanager
    def open_runtimes(options, cfg, needed):
        yield {role: roles[role] for role in needed}

    monkeypatch.setattr(module, "open_runtimes", open_runtimes)


def tear(path, record):
    """What a kill while writing ``record`` leaves: its first bytes, no newline."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record)[:30])


def test_killed_eval_resumes_with_nothing_lost_and_nothing_twice(monkeypatch, tmp_path, capsys):
    data, out = tmp_path / "problems.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)})
                            + "\n" for i in range(4)))
    stand_in_runtimes(monkeypatch, run_eval)
    monkeypatch.setattr(run_eval, "flush_caches", lambda roles: None)
    solved, kill_at = [], [2]

    def run_problems(todo, cfg, roles, program, monitor, parallel):
        for problem in todo:
            if len(solved) == kill_at[0]:
                tear(out, {"dataset": "problems", "problem_id": problem.id.split("#")[0], "sample": 0})
                raise Killed
            solved.append(problem.id)
            with recording(ProblemResult(problem.id, problem.question, program), problem, monitor) as result:
                result.text = f"so \\boxed{{{problem.answer}}}"  # as the programs record a solution

    monkeypatch.setattr(run_eval, "run_problems", run_problems)
    args = run_eval.build_parser().parse_args([
        "--dataset", str(data), "--num-questions", "4", "--modes", "base", "--result-file", str(out),
        "--report-dir", str(tmp_path / "report"), "--base-url", "http://stand-in"])
    with pytest.raises(Killed):
        run_eval.run(args)
    assert solved == ["p0#0", "p1#0"]
    kill_at[0] = None
    assert run_eval.run(args) == 0
    assert "removed a torn last line" in capsys.readouterr().out
    assert solved == ["p0#0", "p1#0", "p2#0", "p3#0"]  # the torn one again, the rest once
    records = read_records(out)
    assert sorted(r["problem_id"] for r in records) == ["p0", "p1", "p2", "p3"]
    assert all(r["correct"] for r in records)
    assert len(out.read_text().splitlines()) == 4  # every line a whole record


def test_killed_judge_bench_resumes_with_nothing_lost_and_nothing_twice(monkeypatch, tmp_path, capsys):
    stand_in_runtimes(monkeypatch, judge_bench)
    judged, kill_at = [], [3]

    def judge_pair_step(base, pair, variant, cfg):
        record = {"pair": pair.id, "problem_id": pair.problem_id, "kind": pair.kind, "variant": variant,
                  "step": "x", "step_tokens": 3, "scores": {m: 5.0 for m in SCORE_METHODS},
                  "digits": {}, "cost": {c: {"prompt_tokens": 9, "cached_tokens": 5, "new_tokens": 4,
                                             "server_s": 0.1} for c in ("paper", "likelihood")}}
        if len(judged) == kill_at[0]:
            tear(tmp_path / "judge_records.jsonl", record)
            raise Killed
        judged.append((pair.id, variant))
        return record

    monkeypatch.setattr(judge_bench, "judge_pair_step", judge_pair_step)
    args = judge_bench.build_parser().parse_args([
        "--num-problems", "2", "--kinds", "result", "--out-dir", str(tmp_path), "--base-url", "http://stand-in"])
    with pytest.raises(Killed):
        judge_bench.run(args)
    assert len(judged) == 3
    kill_at[0] = None
    assert judge_bench.run(args) == 0
    assert "removed a torn last line" in capsys.readouterr().out
    assert len(judged) == len(set(judged))  # nothing judged twice
    records = read_records(tmp_path / "judge_records.jsonl", "pair")
    assert sorted((r["pair"], r["variant"]) for r in records) == sorted(judged)
    assert len(records) == len(judged) == len((tmp_path / "judge_records.jsonl").read_text().splitlines())
