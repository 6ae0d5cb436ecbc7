from sgl_specreason.stopping import clean_step, has_answer, stop_reason


def test_answer_markers_finish():
    for step in ["thus \\boxed{4}", "Answer: 4", "ANSWER: B"]:
        assert has_answer(step)
        assert stop_reason(["a", step], 5, 100) == "finished"
    assert not has_answer("the answer is four")


def test_identical_last_two_steps_stop_as_repeated():
    assert stop_reason(["x", "y", "y"], 5, 100) == "repeated"
    assert stop_reason(["y", "x", "y"], 5, 100) is None
    assert stop_reason(["y"], 5, 100) is None


def test_budget_counts_kept_tokens_and_yields_to_an_answer():
    assert stop_reason(["a", "b"], 100, 100) == "budget"
    assert stop_reason(["a", "b"], 150, 100) == "budget"
    assert stop_reason(["a", "\\boxed{1}"], 150, 100) == "finished"
    assert stop_reason(["a", "b"], 99, 100) is None


def test_stray_think_close_removed_only_without_an_answer():
    assert clean_step("so far so good</think>") == "so far so good"
    assert clean_step("</think> \\boxed{3}") == "</think> \\boxed{3}"
    assert clean_step("plain") == "plain"
