"""Work begun on a guess, against two real SGLang CPU servers (SmolLM2-135M each): aborting a
request in flight, pipelined drafting, the base step racing its judgement, n drafts per step."""

import time

import pytest

from sgl_specreason.programs import draft_steps
from sgl_specreason.calls import CancelScope, Cancelled, call, start
from sgl_specreason.trace import BASE, DRAFT
from apples import solve

pytestmark = [pytest.mark.runtime, pytest.mark.timeout(900)]

def counting(roles, cancel=None, max_tokens=200):
    """A request that runs for a while: counting on from ten, no stop string."""
    return call(draft_steps, roles[DRAFT].backend, prompt="1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
                num_drafts=1, max_step_tokens=max_tokens, temp=0.0, top_p_=1.0, stops=[], cancel=cancel)


def test_cancel_aborts_the_request_in_flight_and_refuses_later_ones(roles):
    pending = start(counting, roles)
    time.sleep(2.0)  # under way on the draft runtime
    began = time.perf_counter()
    [(text, meta)] = pending.cancel()
    assert time.perf_counter() - began < 3.0, "the runtime should answer an aborted request at once"
    assert meta["finish_reason"]["type"] == "abort"
    assert 0 < meta["completion_tokens"] < 200 and text
    scope = CancelScope()
    scope.cancel()
    with pytest.raises(Cancelled, match="no longer wanted"):
        counting(roles, cancel=scope)


def test_pipelined_drafts_are_kept_when_accepted(roles):
    result = solve(roles, threshold=0, pipeline=True)
    assert all(step.source == DRAFT for step in result.steps)
    *middle, last = result.steps
    for step in middle:
        assert [c.kind for c in step.calls] == ["draft", "judge"]
    # The step after the last one was drafted while the last was judged: aborted, not lost.
    assert [c.kind for c in last.calls] == ["draft", "judge", "wasted"]
    assert last.calls[-1].role == DRAFT
    assert result.totals().wasted_tokens == last.calls[-1].completion_tokens
    # Each draft was written after the step before it, the kept one.
    drafts = [next(c for c in step.calls if c.kind == "draft") for step in result.steps]
    for before, after, step in zip(drafts, drafts[1:], result.steps):
        assert after.prompt_tokens >= before.prompt_tokens + step.kept_tokens - 2


def test_pipelined_draft_is_aborted_when_the_step_is_rejected(roles):
    result = solve(roles, threshold=10, pipeline=True)
    for step in result.steps:
        assert step.source == BASE
        assert [c.kind for c in step.calls] == ["draft", "judge", "wasted", "step"]
        assert [c.role for c in step.calls] == [DRAFT, BASE, DRAFT, BASE]
    assert result.totals().acceptance_rate == 0.0


def test_the_base_step_races_its_judgement(roles):
    kept = solve(roles, threshold=0, race_base_step=True)
    for step in kept.steps:  # the draft won: the base model's step was aborted
        assert step.source == DRAFT
        assert [(c.role, c.kind) for c in step.calls] == [(DRAFT, "draft"), (BASE, "judge"), (BASE, "wasted")]
    rejected = solve(roles, threshold=10, race_base_step=True, pipeline=True)
    for step in rejected.steps:  # the base step already under way is the one kept
        assert step.source == BASE and step.base_tokens == step.kept_tokens
        assert [c.kind for c in step.calls] == ["draft", "judge", "wasted", "step"]


def test_n_drafts_are_judged_together_and_the_best_kept(roles):
    result = solve(roles, threshold=0, num_drafts=3, score_method="likelihood")
    for step in result.steps:
        assert len(step.draft_scores) == 3
        assert step.score == max(step.draft_scores)
        assert [c.kind for c in step.calls] == ["draft"] * 3 + ["judge"] * 3
