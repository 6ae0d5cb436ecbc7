"""The grader on a fixture set of tricky pairs with the verdicts they must get."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sgl_specreason.grading import grade

PAIRS = [json.loads(line) for line in
         (Path(__file__).parent / "fixtures" / "grading_pairs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("pair", PAIRS, ids=[p["why"] for p in PAIRS])
def test_fixture_pair(pair):
    assert grade(pair["solution"], pair["reference"], pair["kind"]).correct is pair["expected"]


def test_grading_in_worker_threads_gives_the_same_verdicts():
    """math-verify's signal-based timeouts would fail outside the main thread; they are off."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda p: grade(p["solution"], p["reference"], p["kind"]).correct, PAIRS * 3))
    assert got == [p["expected"] for p in PAIRS] * 3


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="number, choice, math"):
        grade("\\boxed{1}", "1", "fuzzy")


def test_a_recorded_problem_is_graded_by_the_grader_with_its_kind():
    from sgl_specreason.calls import recording
    from sgl_specreason.problems import Problem, make_problem
    from sgl_specreason.trace import ProblemResult

    def recorded(problem, text):
        with recording(ProblemResult(problem.id, problem.question, "base"), problem) as result:
            result.text = text
        return result.correct

    assert recorded(make_problem("q", answer="0.5"), "so \\boxed{\\frac{1}{2}}")  # math by default
    assert not recorded(Problem("p", "q", "0.5", kind="number"), "so \\boxed{\\frac{1}{2}}")
    assert recorded(make_problem("q", answer="B", choices=["x", "y"]), "Answer: (B)")
    assert recorded(make_problem("q"), "\\boxed{1}") is None  # no reference, no verdict
