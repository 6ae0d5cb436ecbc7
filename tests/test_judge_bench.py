"""The judge benchmark's measures and report, on records whose answer is known, and its calls on
a scripted fake runtime: every registered judge that can score one step alone, a new one with no
edit here."""

import json

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.eval.corrupt import Pair
from sgl_specreason.eval.judge_bench import (
    THRESHOLDS,
    auroc,
    bench_judges,
    best_threshold,
    build_report,
    judge_pair_step,
    write_report,
)
from sgl_specreason.judges import JUDGES, NOTHING, Judge, JudgeScore, register

METHODS = [j.name for j in bench_judges()]


def test_auroc_extremes_ties_and_order():
    assert auroc([5, 6, 7], [1, 2, 3]) == 1.0
    assert auroc([1, 2, 3], [5, 6, 7]) == 0.0
    assert auroc([4, 4], [4, 4]) == 0.5
    assert auroc([2, 5], [1, 3]) == pytest.approx(0.75)
    assert auroc([], [1]) is None


def test_best_threshold_maximises_accepted_originals_minus_accepted_corrupted():
    best = best_threshold([6, 7, 8, 9], [2, 3, 7])
    assert best["threshold"] == 6.0
    assert best["accept_original"] == 1.0 and best["accept_corrupted"] == pytest.approx(1 / 3)


def record(pair, variant, kind, score, **cost):
    c = {"prompt_tokens": 100, "cached_tokens": 80, "new_tokens": 20, "server_s": 0.5, **cost}
    return {"pair": pair, "problem_id": pair.split("-s")[0], "kind": kind, "variant": variant,
            "step": "x", "step_tokens": 12, "scores": {m: score(m) for m in METHODS},
            "digits": {}, "cost": {"paper": c, "likelihood": {**c, "new_tokens": 13}}}


def synthetic():
    """likelihood-numbers separates perfectly, greedy not at all, average reversed."""
    out = []
    for i in range(6):
        kind = ("result", "operation", "quantity")[i % 3]
        for variant, good in (("original", True), ("corrupted", False)):
            out.append(record(f"p{i}-s0-{kind}", variant, kind, lambda m: {
                "greedy": 9, "average": 5.0 if good else 6.0,
                "likelihood-numbers": 8.0 + i / 10 if good else 3.0 + i / 10,
            }.get(m, 7.0)))
    out.append(record("p9-s0-result", "original", "result", lambda m: 9.0))  # twin not judged yet
    return out


def test_report_measures_each_method_on_complete_pairs(tmp_path):
    records = synthetic()
    report = build_report(records)
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["likelihood-numbers"]["pairs"] == 6
    assert rows["likelihood-numbers"]["auroc"] == 1.0
    assert rows["greedy"]["auroc"] == 0.5 and rows["average"]["auroc"] == 0.0
    assert rows["likelihood-numbers"]["by_kind"]["result"] == 1.0
    assert rows["likelihood-numbers"]["by_kind"]["conclusion"] is None
    best = rows["likelihood-numbers"]["best"]
    assert best["accept_original"] == 1.0 and best["accept_corrupted"] == 0.0
    assert rows["likelihood-numbers"]["keep90"] == {"threshold": 8.0, "accept_original": 1.0,
                                                     "accept_corrupted": 0.0}
    assert rows["greedy"]["accept"]["9"] == [1.0, 1.0]
    assert rows["likelihood-numbers"]["accept"]["8"] == [1.0, 0.0]
    assert set(rows["greedy"]["accept"]) == {f"{t:g}" for t in THRESHOLDS}
    assert report["cost"]["likelihood"]["new_tokens"] == 13 and report["cost"]["paper"]["new_tokens"] == 20
    assert "| likelihood-numbers | 6 | 1.000 |" in report["markdown"]
    paths = write_report(report, records, tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    lines = [json.loads(x) for x in paths[0].read_text().splitlines()]
    assert [line["method"] for line in lines[:-1]] == list(METHODS) and "cost" in lines[-1]


@pytest.fixture
def new_judge():
    """A judge registered the way a module in sgl_specreason/judges/ registers one."""
    judge = register(Judge("length", "the step's length in characters", NOTHING,
                           lambda c: [JudgeScore(float(len(t)), "") for t in c.texts]))
    yield judge
    del JUDGES[judge.name]


PAIR = Pair("gsm8k-0-s0-result", "gsm8k-0", "2 + 3?", [], "2 + 3 = 5.", "2 + 3 = 6.", "result")


def test_every_judge_that_reads_one_step_alone_is_asked(new_judge):
    assert METHODS == [n for n in JUDGES if n not in ("llr", "agreement", "agreement-set", "length")]
    names = [j.name for j in bench_judges()]
    assert names == METHODS + ["length"]  # no draft log-probs, one step: llr and agreement left out
    base = FakeRuntime("base", lambda steps, fork: "b", score=lambda text: 8 if text.endswith("5.") else 3)
    roles = fake_roles(base, base)
    records = [judge_pair_step(roles["base"], PAIR, v, SpecReasonConfig(seed=0)) for v in ("original", "corrupted")]
    assert [list(r["scores"]) for r in records] == [names, names]
    assert records[0]["scores"]["greedy"] == 8 and records[1]["scores"]["likelihood-numbers"] == pytest.approx(3)
    assert records[0]["scores"]["length"] == len(PAIR.original)
    assert records[0]["digits"] == {"8": 1.0} and set(records[0]["cost"]) == {"paper", "likelihood"}
    assert len([r for r in base.requests if r.kind == "judge"]) == 4  # the question and one prefill each
    rows = build_report(records)["rows"]
    assert [r["method"] for r in rows] == names and rows[names.index("greedy")]["auroc"] == 1.0


def test_judges_that_ask_nothing_cost_no_base_call(new_judge):
    base = FakeRuntime("base", lambda steps, fork: "b")
    roles = fake_roles(base, base)
    records = [judge_pair_step(roles["base"], PAIR, v, SpecReasonConfig(seed=0), [new_judge])
               for v in ("original", "corrupted")]
    assert not base.requests
    assert records[0]["scores"] == {"length": float(len(PAIR.original))} and records[0]["cost"] == {}
    report = build_report(records)
    assert [r["method"] for r in report["rows"]] == ["length"] and report["cost"]["paper"]["new_tokens"] is None


def test_a_report_without_records_lists_the_judges_a_run_would_ask(tmp_path):
    report = build_report([])
    assert [r["method"] for r in report["rows"]] == METHODS and report["rows"][0]["auroc"] is None
    assert all(p.exists() for p in write_report(report, [], tmp_path))
