"""The real-draft benchmark's labels and report, on records written by hand, and its steps on
scripted fake runtimes: every registered judge scores each step, a new one with no edit here."""

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.eval.datasets import EvalProblem
from sgl_specreason.eval.draft_bench import (
    bench_judges,
    bench_problem,
    build_report,
    labelled_steps,
    reference_numbers,
    supported,
)
from sgl_specreason.judges import JUDGES, NOTHING, STEP, Judge, JudgeScore, register
from sgl_specreason.problems import make_problem

RULES = [j.name for j in bench_judges(3)]


def step(supported_, score, tokens=10, rules=RULES):
    return {"supported": supported_, "tokens": tokens, "scores": {rule: score for rule in rules},
            "cost": {kind: {"new_tokens": 1, "completion_tokens": 1, "server_s": 0.1, "wall_s": 0.2}
                     for kind in ("draft", "likelihood", "paper")}}


def record(correct, steps):
    return {"problem_id": "p", "correct": correct, "num_drafts": 3, "steps": steps}


def test_a_step_is_supported_when_its_result_is_a_reference_number():
    reference = reference_numbers("She has 16 eggs and eats 3.", "16-3=<<16-3=13>>13\n#### 13")
    assert supported("So she has 16 - 3 = 13 left.", reference) is True
    assert supported("So she has 16 + 3 = 19 left.", reference) is False
    assert supported("Let's think.", reference) is None


def test_step_label_stops_at_the_first_unsupported_step_and_skips_steps_without_numbers():
    steps = [step(True, 9), step(None, 9), step(False, 2), step(True, 9)]
    labels = [ok for _, ok in labelled_steps([record(False, steps)])]
    assert labels == [True, False]


def test_report_separates_a_rule_that_scores_wrong_trajectories_low():
    records = [record(True, [step(True, 9), step(True, 8)]),
               record(False, [step(True, 9), step(False, 3)]),
               record(False, [step(False, 2)])]
    report = build_report(records, rules=("likelihood-numbers",))
    row = report["rows"][0]
    assert row["auroc_trajectory"] == 1.0  # the right trajectory's lowest step (8) beats 3 and 2
    assert row["auroc_step"] == 1.0
    assert row["kept"]["5"] == 0.6  # 3 of the 5 steps score >= 5
    assert row["passed_right_wrong"]["5"] == [1.0, 0.0]
    assert report["summary"]["false_alarm_estimate"] == 0.0
    assert "likelihood-numbers" in report["markdown"]


def test_report_shows_the_rules_every_step_holds_and_reads_old_keys():
    old = ["greedy", "agreement-last", "agreement-set"]  # before the benchmark asked the registry
    old_records = [record(True, [step(True, 9, rules=old)]), record(False, [step(False, 2, rules=old)])]
    rows = build_report(old_records)["rows"]
    assert [r["rule"] for r in rows] == old  # the label the report printed then
    assert rows[1]["auroc_step"] == 1.0
    new_records = [record(True, [step(True, 9)]), record(False, [step(False, 2)])]
    assert [r["rule"] for r in build_report(new_records)["rows"]] == RULES
    # both together: "agreement-last" is read as "agreement"; "random" only the new ones hold
    rows = build_report(old_records + new_records)["rows"]
    assert [r["rule"] for r in rows] == old and rows[1]["auroc_step"] == 1.0


@pytest.fixture
def new_judges():
    """Judges registered the way a module in sgl_specreason/judges/ registers them."""
    made = [register(Judge("longest", "10 for the longest draft", NOTHING,
                           lambda c: [JudgeScore(10.0 * (len(t) == max(map(len, c.texts))), "")
                                      for t in c.texts], min_drafts=2)),
            register(Judge("prefill-length", "the step's length", STEP,
                           lambda c: [JudgeScore(float(n), "") for n in c.lengths])),
            register(Judge("pairs", "asks the base and compares drafts", STEP,
                           lambda c: [JudgeScore(0.0, "") for _ in c.texts], min_drafts=2))]
    yield
    for judge in made:
        del JUDGES[judge.name]


def test_judges_that_cannot_run_here_are_left_out_by_their_properties(new_judges):
    names = [j.name for j in bench_judges(3)]
    # the base runtime reads the kept draft alone: a judge that asks it and compares drafts can't run
    assert names == [n for n in JUDGES if n != "pairs"]
    assert "llr" in names  # the drafts come with their log-probs
    assert [j.name for j in bench_judges(1)] == [n for n in names if JUDGES[n].min_drafts == 1]


def test_every_registered_judge_scores_each_step_with_one_base_call_per_question(new_judges):
    draft = FakeRuntime("draft", lambda steps, fork: "so \\boxed{5}" if len(steps) >= 2
                        else f"{len(steps) + 2} + 1 = {len(steps) + 3}.")
    base = FakeRuntime("base", lambda steps, fork: "b", score=lambda text: 8)
    roles = fake_roles(draft, base)
    item = EvalProblem(make_problem("2 + 3?", id="gsm8k-train-0", answer="5"), "number", "gsm8k-train")
    rec = bench_problem(roles["draft"], roles["base"], item, "2+3=5\n#### 5",
                        SpecReasonConfig(seed=0, num_drafts=3), 3, 8)
    names = [j.name for j in bench_judges(3)]
    assert "longest" in names and "prefill-length" in names and "random" in names
    assert rec["correct"] and len(rec["steps"]) == 3
    for s in rec["steps"]:
        assert list(s["scores"]) == names
        assert s["scores"]["greedy"] == 8 and s["scores"]["likelihood"] == pytest.approx(8)
        assert s["scores"]["agreement"] == s["scores"]["longest"] == 10.0  # the three drafts agree
        assert s["scores"]["prefill-length"] == s["base_tokens"] > 0
        assert set(s["cost"]) == {"draft", "likelihood", "paper"}
    asked = [r for r in base.requests if r.kind == "judge"]
    assert len(asked) == 2 * len(rec["steps"])  # the paper's question and one prefill, per step
    assert [r["rule"] for r in build_report([rec])["rows"]] == names
