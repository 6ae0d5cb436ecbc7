"""The speculation policy: always, never, and auto deciding per step from live costs."""

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.programs import specreason
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.problems import make_problem
from sgl_specreason.speculation import (
    BASE,
    PROBE_BASE,
    PROBE_EVERY,
    PROBE_SPECULATE,
    SPECULATE,
    Estimate,
    Rate,
    LiveCosts,
    live_costs,
    speculates,
)
from sgl_specreason.trace import DRAFT
from sgl_specreason.trace import BASE as BASE_ROLE

pytestmark = pytest.mark.timeout(60)

RULE = ("greedy", 7.0, 1)


def test_auto_learns_each_side_then_takes_the_cheaper_one():
    costs = LiveCosts()
    assert costs.choose("auto", RULE, 0, 0) == SPECULATE  # nothing known: learn speculating
    costs.drafted(0, 1.0, 10)  # 0.1 s/token, steps of 10 tokens
    costs.judged(0, 0.5, RULE, kept=True)
    assert costs.choose("auto", RULE, 0, 0) == BASE  # the base model's cost is not known yet
    costs.base_wrote(0, 4.0, 10)  # 0.4 s/token
    one = Rate()
    one.add(True)  # one step judged and kept: acceptance read as about 0.94, not 1
    assert costs.estimate(RULE, 0, 0) == Estimate(1.0 + 0.5 + (1 - one.optimistic()) * 4.0, 4.0)
    assert costs.choose("auto", RULE, 0, 0) == SPECULATE
    for _ in range(10):  # drafts rejected from now on: 1.5 + (1 - a) * 4 passes 4 below a = 0.375
        costs.judged(0, 0.5, RULE, kept=False)
    assert costs.estimate(RULE, 0, 0).speculate_s > 4.0
    assert costs.choose("auto", RULE, 0, 0) == BASE


def test_acceptance_is_kept_per_rule():
    costs = LiveCosts()
    costs.drafted(0, 1.0, 10)
    costs.base_wrote(0, 4.0, 10)
    costs.judged(0, 0.5, RULE, kept=True)
    assert costs.choose("auto", ("greedy", 9.0, 1), 0, 0) == SPECULATE  # unknown rule: learn it
    assert costs.estimate(("greedy", 9.0, 1), 0, 0).speculate_s is None


def test_auto_reads_the_costs_at_the_load_the_runtimes_have_now():
    costs = LiveCosts()
    costs.drafted(0, 1.0, 10)
    costs.judged(0, 0.5, RULE, kept=True)
    costs.judged(0, 0.5, RULE, kept=False)
    costs.base_wrote(0, 1.0, 10)  # idle base: 1.0 s a step, cheaper than 1.5 + (1 - a) * 1.0
    costs.base_wrote(4, 8.0, 10)  # four requests in flight: 8.0 s a step
    assert costs.choose("auto", RULE, 0, 0) == BASE
    assert costs.choose("auto", RULE, 0, 4) == SPECULATE
    assert costs.choose("auto", RULE, 0, 6) == SPECULATE  # the nearest load measured


def steps(costs, n, draft_s_per_token, base_s_per_token):
    """``n`` steps of 10 tokens as a program runs them: the policy chooses, the chosen side is
    measured (every draft kept, judgements 0.5 s)."""
    choices = []
    for _ in range(n):
        choice = costs.choose("auto", RULE, 0, 0)
        if speculates(choice):
            costs.drafted(0, 10 * draft_s_per_token, 10)
            costs.judged(0, 0.5, RULE, kept=True)
        else:
            costs.base_wrote(0, 10 * base_s_per_token, 10)
        choices.append(choice)
    return choices


def test_a_side_not_measured_for_a_while_is_probed_and_auto_follows_when_costs_cross():
    costs = LiveCosts()
    early = steps(costs, 4 * PROBE_EVERY, draft_s_per_token=0.1, base_s_per_token=0.4)
    assert early[:3] == [SPECULATE, BASE, SPECULATE]  # learn both sides, then the cheaper
    assert early[3:].count(PROBE_BASE) == 3 and set(early[3:]) == {SPECULATE, PROBE_BASE}
    # the base model becomes cheaper than drafting (1 s against 1.5 s a step): the next probe of
    # it sees that, and a few probes later auto gives it the steps
    late = steps(costs, 6 * PROBE_EVERY, draft_s_per_token=0.1, base_s_per_token=0.01)
    assert late[-2 * PROBE_EVERY:].count(BASE) == 2 * PROBE_EVERY - 2
    assert late[-2 * PROBE_EVERY:].count(PROBE_SPECULATE) == 2


def test_always_and_never_do_not_look_at_costs():
    costs = LiveCosts()
    assert costs.choose("always", RULE, 0, 0) == SPECULATE
    assert costs.choose("never", RULE, 0, 0) == BASE


def test_a_bad_policy_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match="speculate must be one of always, never, auto, got 'sometimes'"):
        SpecReasonConfig(speculate="sometimes")


# -- on fake runtimes -----------------------------------------------------------------------------

STEPS = 40


def writes(prefix):
    def write(steps, fork):
        k = len(steps)
        return "so \\boxed{5}" if k >= STEPS else f"{prefix}{k}: {k} + 1 = {k + 1}."
    return write


def solve(draft, base, **changes):
    cfg = SpecReasonConfig(**{"token_budget": 4000, "step_max_tokens": 40, "answer_max_tokens": 30,
                              "seed": 0, **changes})
    roles = fake_roles(draft, base)
    state = specreason.run(problem=make_problem("2 + 3?", id="p", answer="5"), cfg=cfg,
                           draft=roles[DRAFT], base=roles[BASE_ROLE], backend=base)
    assert state.error() is None and state.ret_value.error is None
    return state.ret_value


def test_never_writes_every_step_with_the_base_model_through_the_same_program():
    draft, base = FakeRuntime(DRAFT, writes("d")), FakeRuntime(BASE_ROLE, writes("b"))
    result = solve(draft, base, speculate="never")
    assert draft.requests == [] and all(r.kind != "judge" for r in base.requests)
    assert {s.choice for s in result.steps} == {BASE} and result.answer == "5"
    totals = result.totals()
    assert totals.policy_steps == len(result.steps) and totals.speculated_share == 0.0


def test_auto_switches_when_the_costs_cross():
    """The base model is slow for the first 15 steps and fast after; the draft the other way
    round. Auto speculates while drafting is cheaper, then gives the steps to the base model
    once its probes show the costs have crossed."""
    slow, fast = 0.05, 0.0

    def draft_delay(kind, steps):
        return fast if len(steps) < 15 else slow

    def base_delay(kind, steps):
        if kind == "judge":
            return fast
        return slow if len(steps) < 15 else fast

    draft = FakeRuntime(DRAFT, writes("d"), delay=draft_delay)
    base = FakeRuntime(BASE_ROLE, writes("b"), delay=base_delay)
    result = solve(draft, base, speculate="auto", first_n_base_steps=1)
    choices = [s.choice for s in result.steps]
    assert choices[0] == "first" and choices[1] == SPECULATE
    assert choices[2:15].count(SPECULATE) >= 10  # drafting is cheaper early on
    assert choices[-10:].count(BASE) >= 8  # the base model, once the probes saw it fast
    totals = result.totals()
    assert totals.policy_steps == len(result.steps) - 1
    assert 0 < totals.speculated_share < 1
    assert live_costs(draft, base) is live_costs(draft, base)  # shared by every problem on the pair


def test_one_early_rejection_does_not_turn_speculation_off():
    """Measured on the CPU pair: a first judged step rejected made a plain running mean read the
    acceptance as 0, and auto gave 88 % of the steps to the base model although drafts were kept
    at 87 % there. Read with its uncertainty, one rejection says little."""
    costs = LiveCosts()
    costs.drafted(0, 7.0, 50)  # 0.14 s a draft token
    costs.judged(0, 3.0, RULE, kept=False)
    costs.base_wrote(0, 25.0, 50)  # 0.5 s a base token
    assert costs.choose("auto", RULE, 0, 0) == SPECULATE
    for _ in range(12):  # but a rule that keeps almost nothing is given up
        costs.judged(0, 3.0, RULE, kept=False)
    assert costs.choose("auto", RULE, 0, 0) == BASE
