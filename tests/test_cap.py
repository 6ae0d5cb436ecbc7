"""A hard cap on the completion (``max_completion_tokens``): the kept steps and the closing
answer together, as OpenAI's ``max_tokens`` reads."""

import pytest

from test_loop import runtimes, solve


# -- a hard cap on the completion ---------------------------------------------------------------

@pytest.mark.parametrize("cap", [1, 3, 5, 20, 37])
def test_max_completion_tokens_caps_the_kept_steps_and_the_answer_together(cap):
    draft, base = runtimes(draft=lambda steps, fork: f"d{len(steps)}: a long step that goes on.",
                           base=lambda steps, fork: f"b{len(steps)}: the base model's step!")
    result = solve(draft, base, max_completion_tokens=cap, threshold=7)
    written = sum(s.kept_tokens for s in result.steps) + (
        result.answer_call.completion_tokens if result.answer_call else 0)
    assert written <= cap
    assert result.stop_reason == "budget"
    if cap >= 4:  # a quarter of the cap is kept for the answer
        assert result.answer_call is not None and result.answer_call.completion_tokens > 0
    room = [r.params["max_new_tokens"] for r in draft.requests + base.requests]
    assert max(room) <= cap


@pytest.mark.parametrize("cap", [5, 20, 37])
def test_a_plain_reply_that_is_its_own_steps_has_the_whole_cap(cap):
    """Put as written to a model that does not think, the steps are the reply: no answer follows
    them, so no room is kept for one and the steps may fill the cap."""
    draft, base = runtimes(draft=lambda steps, fork: f"d{len(steps)}: a long step that goes on.",
                           base=lambda steps, fork: f"b{len(steps)}: the base model's step!")
    result = solve(draft, base, max_completion_tokens=cap, threshold=7, framing="plain")
    assert result.stop_reason == "budget" and result.answer_call is None
    assert sum(s.kept_tokens for s in result.steps) == cap
