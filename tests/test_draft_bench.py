"""The real-draft benchmark's labels and report, on records written by hand."""

from sgl_specreason.eval.draft_bench import RULES, build_report, labelled_steps, reference_numbers, supported


def step(supported_, score, tokens=10):
    return {"supported": supported_, "tokens": tokens, "scores": {rule: score for rule in RULES},
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
