"""The small problem the runtime tests solve, and solving it with SpecReason on the test servers."""

from sgl_specreason.programs import specreason
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.problems import make_problem
from sgl_specreason.trace import BASE, DRAFT

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have now?"
SMALL = dict(token_budget=40, step_max_tokens=16, answer_max_tokens=8, seed=0)


def solve(roles, **changes):
    """SpecReason on QUESTION with SMALL settings (and ``changes``); the result, checked sound."""
    cfg = SpecReasonConfig(**{**SMALL, **changes})
    state = specreason.run(problem=make_problem(QUESTION, id="apples", answer="5"), cfg=cfg,
                           draft=roles[DRAFT], base=roles[BASE], backend=roles[BASE].backend)
    assert state.error() is None
    result = state.ret_value
    assert result.error is None, result.error
    # a run ends at an answer, a repeated step, the budget, or a kept step that ended the text
    assert result.steps and result.stop_reason in ("finished", "repeated", "budget", "ended")
    return result
