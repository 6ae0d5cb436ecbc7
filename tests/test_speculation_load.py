"""The speculation-under-load report: auto against the better fixed policy per level, the cost
per kept token each way, and the projection onto a costs file."""

import json

import pytest

from sgl_specreason.eval import speculation_load as sl
from sgl_specreason.eval.costs import Costs, RoleCost


def call(role, kind, completion, prompt=100, cached=90):
    return {"role": role, "kind": kind, "prompt_tokens": prompt, "cached_tokens": cached,
            "completion_tokens": completion, "latency_s": 0.0, "finish_reason": "stop"}


def problem(run_id, choice):
    if choice == "speculate":
        calls = [call("draft", "draft", 40), call("base", "judge", 1)]
    else:
        calls = [call("base", "step", 40)]
    steps = [{"choice": choice, "wall_s": 4.0, "kept_tokens": 40, "calls": calls}]
    return {"run_id": run_id, "steps": steps, "answer_call": None}


def line(c, policy, per_s, run_id):
    return {"backend": f"specreason/{policy}", "num_requests": 2, "accuracy": 0.5,
            "other": {"loop": "closed", "concurrency": c, "problems_per_s": per_s, "errors": 0,
                      "kept_tokens_per_s": 100 * per_s, "problem_latency_s": {"p50": 1.0, "p99": 2.0},
                      "acceptance_rate": 0.5, "speculated_share": 1.0, "busy_share": {"draft": 0.5, "base": 0.5},
                      "run_id": run_id}}


@pytest.fixture
def folder(tmp_path):
    lines = [line(1, "always", 0.10, "a1"), line(1, "never", 0.08, "n1"), line(1, "auto", 0.099, "u1"),
             line(2, "always", 0.12, "a2"), line(2, "never", 0.15, "n2"), line(2, "auto", 0.16, "u2")]
    (tmp_path / "load_test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    records = [problem("a1", "speculate"), problem("n1", "base"), problem("stale-run", "base")]
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    return tmp_path


def test_auto_is_held_to_the_better_fixed_policy_at_each_level(folder):
    lines, problems = sl.read(folder)
    assert "stale-run" not in problems  # a run no summary names is not counted
    out = sl.verdicts(lines)
    assert out[0].startswith("- c=1, kept tok/s: auto 9.9000, 0.99x the better fixed policy (always, 10.0000): met")
    assert out[1].startswith("- c=1, problems/s: auto 0.0990, 0.99x the better fixed policy (always, 0.1000): met")
    assert out[3].endswith("met (>= 0.95); strictly better than both")


def test_steps_cost_per_kept_token_by_how_they_were_written(folder):
    _, problems = sl.read(folder)
    assert sl.step_costs(problems["a1"]) == {"speculated": 0.1, "base": None}
    assert sl.step_costs(problems["n1"]) == {"speculated": None, "base": 0.1}


def test_the_projection_prices_each_call_and_scales_decode_with_the_batch(folder):
    _, problems = sl.read(folder)
    costs = Costs(draft=RoleCost(decode_ms_per_token=10.0), base=RoleCost(decode_ms_per_token=100.0),
                  judge=RoleCost(request_ms=50.0))
    curve = {1: 1.0, 2: 1.5}
    # always: 40 draft tokens x 10 ms + a 50 ms judgement; never: 40 base tokens x 100 ms
    assert sl.problem_seconds(problems["a1"][0], costs, 1, curve) == pytest.approx(0.45)
    assert sl.problem_seconds(problems["n1"][0], costs, 2, curve) == pytest.approx(4.0 * 1.5)
    projected = sl.project({"always": problems["a1"], "never": problems["n1"]}, costs, [1, 2], curve)
    assert projected["always"][1] == pytest.approx(1 / 0.45)
    auto = (1 - 1 / sl.PROBE_EVERY) * 0.45 + 4.0 / sl.PROBE_EVERY  # probes not known: the most there can be
    assert projected["auto"][1] == pytest.approx(1 / auto)
    measured = sl.project({"always": problems["a1"], "never": problems["n1"]}, costs, [1], curve, probes=0.02)
    assert measured["auto"][1] == pytest.approx(1 / (0.98 * 0.45 + 0.02 * 4.0))
    assert sl.probe_share([{"steps": [{"choice": "speculate"}, {"choice": "probe-base"}, {"choice": "first"}]}]) == 0.5
