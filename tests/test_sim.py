"""The simulator of two runtimes: continuous batching, replaying records, the fitted costs."""

import json
import shutil
from pathlib import Path

import pytest

from sgl_specreason.eval.sim.costs import (alone_calls, cpu_costs, h100_costs, moments_fit, prefill_slowdown,
                                           single_request_fit)
from sgl_specreason.eval.sim.engine import RuntimeCosts, Sim
from sgl_specreason.eval.sim.project import crossover, replay_level
from sgl_specreason.eval.sim.replay import Replay, oracle_agreement, problem_spec

pytestmark = pytest.mark.timeout(120)

SIMPLE = RuntimeCosts(decode_fixed=1.0, decode_per_seq=0.5, decode_per_ctx=0.0, prefill_fixed=2.0,
                      prefill_per_token=0.1)
REPO = Path(__file__).resolve().parents[1]


def ended(sim, runtime, new, context, out, at=None):
    got = []
    sim.call(runtime, new, context, out, lambda seconds, busy: got.append((sim.now, seconds, busy)))
    return got


def test_a_lone_request_is_one_prefill_then_a_decode_step_per_further_token():
    sim = Sim({"base": SIMPLE})
    got = ended(sim, "base", 10, 100, 4)
    sim.run()
    assert got == [(pytest.approx(3.0 + 3 * 1.5), pytest.approx(7.5), pytest.approx(7.5))]


def test_requests_batched_together_share_the_steps_and_their_shares_add_up_to_the_busy_time():
    sim = Sim({"base": SIMPLE})
    a, b = ended(sim, "base", 10, 100, 3), ended(sim, "base", 10, 100, 3)
    sim.run()
    # a is prefilled alone (3 s); b is prefilled next (3 s) while a waits; then both decode
    # their two further tokens together at 1 + 0.5·2 = 2 s a step
    assert a[0][0] == pytest.approx(3 + 3 + 2 + 2) and b[0][0] == pytest.approx(3 + 3 + 2 + 2)
    assert a[0][2] + b[0][2] == pytest.approx(sim.runtimes["base"].busy_s)


def test_an_iteration_is_slowed_by_contention_unless_it_runs_alone_on_the_machine():
    crowded = RuntimeCosts(1.0, 0.5, 0.0, 2.0, 0.1, contention=1.0)
    alone = Sim({"base": crowded, "draft": crowded})
    got = ended(alone, "base", 10, 100, 2)
    alone.run()
    assert got[0][1] == pytest.approx(3.0 + 1.5)  # one request, the other runtime idle: unslowed
    two = Sim({"base": crowded, "draft": crowded})
    a, b = ended(two, "base", 10, 100, 2), ended(two, "base", 10, 100, 2)
    two.run()
    # a is prefilled alone (3 s, unslowed), b next beside a (3 s, doubled), then both decode one
    # step together (1 + 0.5·2 = 2 s, doubled)
    assert a[0][1] == b[0][1] == pytest.approx(3.0 + 2 * 3.0 + 2 * 2.0)
    beside = Sim({"base": crowded, "draft": crowded})
    d, e = ended(beside, "draft", 10, 100, 1), ended(beside, "base", 10, 100, 1)
    beside.run()
    # the draft's prefill starts with the machine to itself; the base's starts beside it
    assert (d[0][1], e[0][1]) == (pytest.approx(3.0), pytest.approx(2 * 3.0))


def test_a_full_kv_cache_makes_requests_wait_and_the_runtime_says_it_is_saturated():
    costs = RuntimeCosts(1.0, 0.0, 0.0, 1.0, 0.0, kv_capacity=150)
    sim = Sim({"base": costs})
    first, second = ended(sim, "base", 100, 100, 10), ended(sim, "base", 100, 100, 10)
    seen = []
    sim.at(2.5, lambda: seen.append(sim.runtimes["base"].saturated()))
    sim.run()
    assert seen == [True]  # the second waits for room
    assert second[0][0] >= first[0][0] + 10  # it starts only after the first ended


def record(steps, correct=True):
    return {"id": "p-0", "correct": correct, "answer_call": None, "steps": steps}


def step(source, calls, kept_tokens=20):
    return {"source": source, "kept_tokens": kept_tokens, "calls": calls}


def call(role, kind, prompt, cached, out):
    return {"role": role, "kind": kind, "prompt_tokens": prompt, "cached_tokens": cached,
            "completion_tokens": out, "latency_s": 1.0}


def test_a_record_replays_its_calls_in_order_and_auto_can_give_a_step_to_the_base_model():
    rec = record([step("base", [call("base", "step", 50, 0, 20)]),
                  step("draft", [call("draft", "draft", 80, 60, 20), call("base", "judge", 90, 70, 1)]),
                  step("base", [call("draft", "draft", 100, 80, 20), call("base", "judge", 110, 90, 1),
                                call("base", "step", 90, 90, 20)])])
    spec = problem_spec(rec)
    assert [s.speculated for s in spec.steps] == [False, True, True]
    assert [s.kept for s in spec.steps] == [False, True, False]
    costs = {"draft": SIMPLE, "base": SIMPLE}
    replay = Replay(costs, [spec], 1)
    (outcome,) = replay.run()
    # prefill + decode per call: base 2+5+19·1.5; draft 2+2+19·1.5; judge 2+2; draft 2+2+19·1.5;
    # judge 4; base rewrite 2 + 0 + 19·1.5
    assert outcome.ended == pytest.approx(35.5 + 32.5 + 4.0 + 32.5 + 4.0 + 30.5)
    assert (outcome.speculated, outcome.base_written) == (2, 1)
    # a base model far cheaper than drafting: auto gives the drafted steps to it once it knows
    cheap_base = RuntimeCosts(0.01, 0.0, 0.0, 0.01, 0.0)
    auto = Replay({"draft": SIMPLE, "base": cheap_base}, [spec] * 6, 1, "auto")
    auto.run()
    assert "base" in auto.choices[2:]
    # by the costs the whole run measured the base model is the cheaper choice; auto's first
    # choice (speculate, to learn) is the only one that differs from it
    decided = [d for d in auto.decisions if d[3] in ("speculate", "base")]
    assert oracle_agreement(auto) == pytest.approx((len(decided) - 1) / len(decided))


def lone(prompt, cached, out, p0=0.5, p1=0.01, pp=0.002, d1=0.2, dc=1e-4, role="base"):
    """A call that ran alone, timed by the model ``single_request_fit`` fits."""
    latency = p0 + p1 * (prompt - cached) + pp * prompt + d1 * (out - 1) + dc * (out - 1) * (prompt + out / 2)
    return {"role": role, "kind": "step", "prompt_tokens": prompt, "cached_tokens": cached,
            "completion_tokens": out, "latency_s": latency}


def moments_of(steps):
    return {"steps": len(steps), "sum_b": sum(b for b, _ in steps), "sum_t_us": sum(t * 1e6 for _, t in steps),
            "sum_bb": sum(b * b for b, _ in steps), "sum_bt_us": sum(b * t * 1e6 for b, t in steps)}


def test_fits_recover_the_costs_they_were_made_from():
    shapes = ((6, 5, 10), (45, 5, 1), (85, 5, 30), (25, 5, 5), (3000, 2950, 1), (8000, 7990, 40), (500, 0, 20))
    calls = [lone(*shape) for shape in shapes]
    assert single_request_fit(calls) == pytest.approx([0.5, 0.01, 0.002, 0.2, 1e-4], rel=1e-6, abs=1e-9)
    moments = moments_of([(1, 0.3), (4, 0.6), (8, 1.0)])  # t = 0.2 + 0.1 b
    assert moments_fit(moments) == pytest.approx((0.2, 0.1))
    # no loaded records: the context they read is 0, so against 0.2 alone the loaded 0.3 at a
    # batch of one is a contention of 0.5, and a prefill, with no prefill counters, slows as much
    alone = calls + [dict(c, role="draft") for c in calls]
    costs = cpu_costs(alone, {"draft": moments, "base": moments})
    assert costs["base"].contention == pytest.approx(0.5) == costs["base"].slowdown(prefill=True) - 1
    assert costs["base"].decode_s(1, 0) == pytest.approx(0.2)
    assert costs["base"].prefill_s(40, 1000) == pytest.approx(0.5 + 0.01 * 40 + 0.002 * 1000)


def timed(begin, walls, calls):
    """A loaded run's problem: its start, its end and its steps' wall times."""
    return {"started_s": begin, "ended_s": begin + sum(walls),
            "steps": [{"wall_s": w, "calls": [c]} for w, c in zip(walls, calls)]}


def test_the_calls_that_ran_alone_are_those_of_steps_no_other_problem_overlapped():
    a = [lone(100, 90, 10) for _ in range(2)]
    b = [lone(200, 190, 10) for _ in range(3)]
    records = [timed(0.0, [5.0, 5.0], a), timed(1.0, [5.0, 5.0, 20.0], b)]  # b's third step begins at 11
    assert [id(c) for c in alone_calls(records, 2)] == [id(b[2])]
    assert len(alone_calls(records, 1)) == 5  # one problem at a time: every call


def test_a_prefill_under_load_is_slowed_by_what_sglangs_own_prefill_counters_say():
    """The loaded run's prefill busy time is the alone cost of its lone prefill plus twice that of
    the ones that overlapped: a prefill slowdown of 2."""
    fit = [0.5, 0.01, 0.002, 0.2, 1e-4]
    calls = [lone(300, 250, 1) for _ in range(3)]
    records = [timed(0.0, [1.0, 1.0], calls[:2]), timed(0.2, [0.5], calls[2:])]  # the second step ran alone
    cost = 0.5 + 0.01 * 50 + 0.002 * 300
    counters = {"base": {"prefill_busy_s": cost + 2 * (2 * cost)}}
    alone = {id(c) for c in alone_calls(records, 2)}
    assert alone == {id(calls[1])}
    assert prefill_slowdown(fit, [(counters, records)], "base", alone) == pytest.approx(2.0)
    assert prefill_slowdown(fit, [({}, records)], "base", alone) is None  # no counters: nothing to read


def test_a_prefill_reads_each_admitted_prompt_and_is_slowed_by_its_own_contention():
    costs = RuntimeCosts(1.0, 0.0, 0.0, 2.0, 0.1, prefill_per_ctx=0.01, contention=0.5, prefill_contention=1.0)
    sim = Sim({"base": costs})
    a, b = ended(sim, "base", 10, 100, 3), ended(sim, "base", 10, 300, 1)
    sim.run()
    # a's prefill runs alone: 2 + 0.1·10 + 0.01·100 s; b's runs beside a (running), so it is
    # crowded: (2 + 1 + 0.01·300)·2; then a decodes its two further tokens alone, 1 s each
    assert b[0][0] == pytest.approx(4.0 + 12.0)
    assert a[0][0] == pytest.approx(4.0 + 12.0 + 2 * 1.0)


def test_the_h100_roofline_is_pinned_to_the_measured_single_request_figures():
    layers = json.loads((REPO / "eval/hardware/measured-h100-layers.json").read_text())["models"]
    costs = h100_costs(base_tp=1)
    assert costs["base"].decode_s(1, 1024) == pytest.approx(layers["qwq-32b"]["decode_ms_per_token"] / 1e3, rel=1e-6)
    assert costs["draft"].decode_s(1, 1024) == pytest.approx(layers["r1-distill-qwen-1.5b"]["decode_ms_per_token"] / 1e3, rel=1e-6)
    # QwQ-32B's 65.5 GB of weights leave one H100 far less KV cache than two
    assert h100_costs(base_tp=2)["base"].kv_capacity > 10 * costs["base"].kv_capacity
    assert costs["base"].decode_s(256, 0) > costs["base"].decode_s(1, 0)


def test_crossover_is_the_first_level_at_which_never_reaches_always():
    projected = {"always": {1: {"x": 2.0}, 8: {"x": 3.0}, 64: {"x": 4.0}},
                 "never": {1: {"x": 1.0}, 8: {"x": 2.0}, 64: {"x": 5.0}}}
    assert crossover(projected, "x") == 64
    assert crossover(projected, "x", scale={"never": 1.6}) == 8


def test_shipped_load_records_replay_near_their_measured_throughput(tmp_path):
    """The c = 1 records of the shipped load test, replayed on costs fitted from themselves and
    the shipped loaded counters, come back within the calibration target."""
    folder = REPO / "eval/reports/speculate-under-load"
    recs = [json.loads(line) for line in (folder / "problems.jsonl").read_text().splitlines()]
    lines = [json.loads(line) for line in (folder / "load_test.jsonl").read_text().splitlines()]
    line = next(x for x in lines if x["other"]["concurrency"] == 1 and x["backend"] == "specreason/never")
    mine = [r for r in recs if r["run_id"] == line["other"]["run_id"]]
    # the loaded fit matters little here: a lone problem has no batch, and base-only no contention
    moments = {"steps": 3, "sum_b": 5, "sum_t_us": 1.7e6, "sum_bb": 9, "sum_bt_us": 2.9e6}  # t = 0.4 + 0.1 b
    single = [r for r in recs if r["level"] == "concurrency 1"]
    costs = cpu_costs(alone_calls(single, 1), {"draft": moments, "base": moments})
    sim = replay_level(costs, mine, 1)
    assert sim["problems_per_s"] == pytest.approx(line["other"]["problems_per_s"], rel=0.15)


def test_the_crossover_report_is_built_from_load_test_folders(tmp_path):
    from sgl_specreason.eval.speculation_crossover import main

    folder = REPO / "eval/reports/speculate-under-load"
    counters = tmp_path / "counters.json"
    loaded = {"steps": 3, "sum_b": 12, "sum_t_us": 3.0e6, "sum_bb": 56, "sum_bt_us": 13.6e6}  # t = 0.4 + 0.15 b
    counters.write_text(json.dumps({"draft": loaded, "base": loaded}))
    assert main([str(tmp_path / "out"), "--measured", str(folder), "--counters", str(counters)]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| 4 | never |" in text and "auto / always" in text and "never overtakes always" in text
    assert (tmp_path / "out" / "crossover.png").stat().st_size > 0
    sims = json.loads((tmp_path / "out" / "simulated.json").read_text())
    assert set(sims["projections"]) == {"1", "2"} and "4/never" in sims["cpu_levels"]
    assert main([str(tmp_path / "out"), "--measured", str(tmp_path / "nothing")]) == 2
    # a folder given as a repeat is reported beside the first run, never in its place
    assert main([str(tmp_path / "again"), "--measured", str(folder), "--counters", str(counters),
                 "--repeats", str(folder)]) == 0
    again = (tmp_path / "again" / "report.md").read_text()
    assert again.split("## Repeated runs")[0].rstrip() == text.split("## Projected")[0].rstrip()
    assert "| 4 | never | 0.0171 | 0.0171 | 1.00 |" in again
    assert "- c=4, the repeat (always, never, auto): auto / always" in again


def test_a_levels_throughput_interval_holds_its_measured_figure_and_widens_with_the_latency_spread():
    from sgl_specreason.eval.speculation_crossover import throughput_interval

    line = {"other": {"concurrency": 4, "problems_per_s": 0.019}}  # below c / mean latency: ramp and drain
    even = throughput_interval(line, [{"wall_s": w} for w in (190.0, 200.0, 210.0, 200.0)])
    spread = throughput_interval(line, [{"wall_s": w} for w in (60.0, 340.0, 100.0, 300.0)])
    assert even[0] < 0.019 < even[1] and spread[0] < even[0] and spread[1] > even[1]
