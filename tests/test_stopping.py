import json
from pathlib import Path

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


def test_a_loop_of_several_steps_stops_as_repeated_where_it_first_comes_round_again():
    """The shipped c = 16 record that went round a 5-step loop to the budget (201 steps): the rule
    stops it once the loop has come round twice."""
    path = Path(__file__).resolve().parents[1] / "eval/reports/speculation-crossover/measured/problems.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    looped = max(records, key=lambda r: len(r["steps"]))
    texts = [s["text"] for s in looped["steps"]]
    assert looped["stop_reason"] == "budget" and len(texts) == 201
    first = next(n for n in range(1, len(texts) + 1) if stop_reason(texts[:n], 0, 10 ** 6) == "repeated")
    assert first == 16 and texts[6:11] == texts[11:16]
    # the other solutions of that file never repeated a block of steps before they ended
    assert not any(stop_reason([s["text"] for s in r["steps"]][:n], 0, 10 ** 6) == "repeated"
                   for r in records if r is not looped for n in range(1, len(r["steps"]) + 1))


def test_budget_counts_kept_tokens_and_yields_to_an_answer():
    assert stop_reason(["a", "b"], 100, 100) == "budget"
    assert stop_reason(["a", "b"], 150, 100) == "budget"
    assert stop_reason(["a", "\\boxed{1}"], 150, 100) == "finished"
    assert stop_reason(["a", "b"], 99, 100) is None


def test_stray_think_close_removed_only_without_an_answer():
    assert clean_step("so far so good</think>") == "so far so good"
    assert clean_step("</think> \\boxed{3}") == "</think> \\boxed{3}"
    assert clean_step("plain") == "plain"
