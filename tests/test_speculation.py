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


# -- auto under saturation: busy time added instead of latency -------------------------------------

def test_saturated_runtimes_are_priced_by_the_busy_time_a_step_adds_to_them():
    costs = LiveCosts()
    costs.drafted(0, 2.0, 10, busy=2.0)  # the draft runtime alone: busy time = wall time
    costs.judged(0, 1.0, RULE, kept=True, busy=0.125)  # the base runtime shared by 8 requests
    costs.judged(0, 1.0, RULE, kept=True, busy=0.125)
    costs.base_wrote(0, 2.5, 10, busy=0.5)
    a = costs.kept[RULE].optimistic()
    assert costs.estimate(RULE, 0, 0) == Estimate(2.0 + 1.0 + (1 - a) * 2.5, 2.5, "latency")
    # only the base runtime saturated: the draft runtime has room, its time costs no throughput
    assert costs.estimate(RULE, 0, 0, {"base"}) == Estimate(0.125 + (1 - a) * 0.5, 0.5, "busy")
    # both: the busy time added to each, summed
    assert costs.estimate(RULE, 0, 0, {"draft", "base"}) == Estimate(2.0 + 0.125 + (1 - a) * 0.5, 0.5, "busy")
    assert costs.choose("auto", RULE, 0, 0, saturated=()) == BASE
    assert costs.choose("auto", RULE, 0, 0, saturated={"base"}) == SPECULATE


class PairModel:
    """Two runtimes whose costs cross as the load grows, as on a compute-bound base: at n
    requests in flight a base token takes n times as long (the batch shares the compute) but
    adds the same busy time, and the base runtime saturates (requests wait) past ``slots``
    requests. The draft runtime is never loaded: its calls take the same time whatever n."""

    def __init__(self, slots=4):
        self.slots, self.d, self.j, self.b = slots, 0.3, 0.2, 0.2  # s/token, s, s/token alone

    def step(self, costs, n):
        """One step at base load ``n``, as a program runs it (every draft kept)."""
        saturated = {"base"} if n > self.slots else set()
        choice = costs.choose("auto", RULE, 0, n, saturated=saturated)
        if speculates(choice):
            costs.drafted(0, 10 * self.d, 10, busy=10 * self.d)
            costs.judged(n, n * self.j, RULE, kept=True, busy=self.j)
        else:
            costs.base_wrote(n, 10 * n * self.b, 10, busy=10 * self.b)
        return choice


def test_auto_switches_at_the_saturation_crossover_and_back():
    """Unsaturated at n = 1, latency decides: drafting and judging (3 + 0.2 s a step, plus
    (1 - a)·2 s of rewrites) against the base model (2 s): the base model writes. Saturated
    (n > 4), the base runtime's busy time decides: 0.2 + (1 - a)·2 against 2 s: speculate.
    Back at n = 1, the base model again."""
    model, costs = PairModel(), LiveCosts()
    for n in (1,) * 3:  # learn both sides
        model.step(costs, n)
    phases = [(n, [model.step(costs, n) for _ in range(12)]) for n in (1, 8, 16, 1)]
    for n, choices in phases:
        # n = 1: the base model (2 s against 3.2 + (1 - a)·2); saturated at n = 8 and 16:
        # speculate (busy 0.2 + (1 - a)·2 against 2 on the base runtime)
        expected = BASE if n == 1 else SPECULATE
        assert choices[-6:].count(expected) >= 5, (n, choices)


def test_under_latency_pricing_a_loaded_but_unsaturated_base_is_priced_by_its_wall_time():
    """The same pair with room at every load (slots never reached): the wall time of a base step
    grows with n, so past the latency crossover (2·n > 3.2 + (1 - a)·2·n) auto speculates too,
    for latency's sake."""
    model, costs = PairModel(slots=10 ** 6), LiveCosts()
    for _ in range(3):
        model.step(costs, 1)
    at_one = [model.step(costs, 1) for _ in range(12)]
    at_eight = [model.step(costs, 8) for _ in range(12)]
    assert at_one[-6:].count(BASE) >= 5
    assert at_eight[-6:].count(SPECULATE) >= 5
    assert costs.estimate(RULE, 0, 8, ()).pricing == "latency"


class SharedLoad:
    """A runtime's load as ``RuntimeLoad`` reports it, for a runtime shared by ``n`` requests."""

    def __init__(self, n):
        self.n, self.in_flight = n, 0

    def share_of(self, seconds):
        return seconds / self.n


@pytest.mark.parametrize("saturated", [False, True])
def test_a_program_prices_by_busy_time_when_its_base_runtime_says_it_is_saturated(saturated):
    """Drafting is slow (0.16 s a step) and the base model fast (0.08 s), so by latency the base
    model writes; but the base runtime is shared by 8 requests, and when it says requests wait
    there, a step it writes adds 0.01 s of its busy time against a judgement's near 0: speculate."""
    draft = FakeRuntime(DRAFT, writes("d"), delay=lambda kind, steps: 0.16)
    base = FakeRuntime(BASE_ROLE, writes("b"), delay=lambda kind, steps: 0.0 if kind == "judge" else 0.08)
    base.load, base.saturated = SharedLoad(8), lambda: saturated
    result = solve(draft, base, speculate="auto", first_n_base_steps=1)
    later = [s.choice for s in result.steps][-20:]
    expected = SPECULATE if saturated else BASE
    assert later.count(expected) >= 16, later
