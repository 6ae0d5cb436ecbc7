"""The mode registry: every command takes its modes from one place, and a new mode is one entry."""

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.programs import reason
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.modes import MODES, Mode, get_mode, register_mode, roles_for
from sgl_specreason.problems import make_problem
from sgl_specreason.runner import Monitor, run_problems
from sgl_specreason.trace import BASE, DRAFT


def test_the_built_in_modes_and_the_runtimes_each_needs():
    assert {name: mode.roles for name, mode in MODES.items()} == {
        "specreason": (DRAFT, BASE), "base": (BASE,), "draft": (DRAFT,), "base-gen": (BASE,),
        "dropin": (DRAFT, BASE)}
    assert [name for name, mode in MODES.items() if mode.judged] == ["specreason", "dropin"]
    assert {name: mode.program.func.__name__ for name, mode in MODES.items()} == {
        "specreason": "specreason", "base": "reason", "draft": "reason", "base-gen": "one_gen",
        "dropin": "one_gen"}
    with pytest.raises(ValueError, match="unknown mode 'fast'; known: specreason, base"):
        roles_for("fast")


@pytest.fixture
def twice():
    """A new mode: the base model alone, with twice the step length."""
    def arguments(cfg, roles):
        role = roles[BASE]
        return {"role": role, "cfg": cfg.replace(step_max_tokens=2 * cfg.step_max_tokens)}, role.backend
    mode = register_mode(Mode("base-long-steps", "the base model, twice the step length", reason, (BASE,),
                              arguments))
    yield mode
    del MODES[mode.name]


def test_a_new_mode_is_one_entry(twice):
    draft = FakeRuntime(DRAFT, lambda steps, fork: "d")
    base = FakeRuntime(BASE, lambda steps, fork: "so \\boxed{5}")
    [result] = run_problems([make_problem("2 + 3?", answer="5")], SpecReasonConfig(step_max_tokens=20),
                            fake_roles(draft, base), "base-long-steps", Monitor(stream=None))
    assert result.correct and base.requests[0].params["max_new_tokens"] == 40
    assert get_mode("base-long-steps").roles == (BASE,) and not draft.requests
