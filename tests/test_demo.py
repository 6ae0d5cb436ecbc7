"""What a newcomer's first ``sgl-specreason demo`` shows: drafted steps judged, with the rule
named; and one line when nothing was drafted because the base model's first step solved it."""

import io

from sgl_specreason.cli import main
from sgl_specreason.problems import make_problem
from sgl_specreason.runner import Monitor
from sgl_specreason.trace import BASE, DRAFT, ProblemResult, Step


def test_the_demo_drafts_the_first_step_too_and_says_why(capsys):
    assert main(["demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "demo: every step is drafted and judged (--first-n-base-steps 0)" in out
    assert "The local default lets the base model write the first step (--first-n-base-steps 1)" in out
    assert main(["demo", "--dry-run", "--first-n-base-steps", "1"]) == 0  # asked for: left alone
    assert "demo: every step" not in capsys.readouterr().out


def test_a_problem_the_base_models_first_step_solved_says_nothing_was_drafted():
    out = io.StringIO()
    monitor = Monitor(stream=out)
    problem = make_problem("2 + 3?", id="p")
    first = Step(0, BASE, "2 + 3 = 5, so \\boxed{5}", 12, choice="first", wall_s=1.0)
    monitor.on_step(problem, first)
    monitor.take(ProblemResult("p", "2 + 3?", "specreason", steps=[first]))
    drafted = Step(1, DRAFT, "so \\boxed{5}", 5, score=9.5, choice="speculate")
    monitor.take(ProblemResult("q", "2 + 3?", "specreason", steps=[first, drafted]))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[p step 0] base writes (first)")
    assert lines[2] == ("[p] nothing was drafted: the base model's first step was the whole solution "
                        "(--first-n-base-steps)")
    assert len(lines) == 4  # the second problem had a drafted step: no such line
