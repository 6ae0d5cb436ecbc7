"""The judge benchmark's measures and report, on records whose answer is known."""

import json

import pytest

from sgl_specreason.eval.judge_bench import METHODS, THRESHOLDS, auroc, best_threshold, build_report, write_report


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
