"""The modes a problem can be solved in: SpecReason and its baselines, one registry entry each.

A mode names the runtimes it needs and builds the program call that solves one problem; every
command (``sgl-specreason``, ``python -m eval``, the load test) takes its modes from ``MODES``.
A new mode is one ``register_mode`` call and a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Tuple

from sgl_specreason.calls import Role
from sgl_specreason.registry import Registry
from sgl_specreason.trace import BASE, DRAFT

#: what ``Mode.build`` returns: the program, its arguments, the backend to run it on
ProgramCall = Tuple[Any, dict, Any]


@dataclass(frozen=True)
class Mode:
    name: str
    help: str
    roles: Tuple[str, ...]  # the runtimes it needs
    #: ``build(problem, cfg, roles, monitor)``: the program call that solves ``problem``, with
    #: ``roles`` the replica of each needed role that this problem keeps to
    build: Callable[..., ProgramCall]
    #: a drafted step is judged (runs of it name a judge and a threshold)
    judged: bool = False


#: every mode by name, in the order help lists them
MODES: Registry[Mode] = Registry("mode")
#: add a mode (a second one of the same name is refused)
register_mode = MODES.add
#: the mode of a name, or an error listing the known ones
get_mode = MODES.find


def roles_for(mode: str) -> Tuple[str, ...]:
    """The runtimes a mode needs."""
    return get_mode(mode).roles


def program_call(mode: str, problem, index: int, cfg, roles: dict, monitor=None) -> ProgramCall:
    """The program that solves ``problem`` in ``mode``, its arguments, and the backend to run it
    on, with the replica of each role that the ``index``-th problem keeps to."""
    entry = get_mode(mode)
    return entry.build(problem, cfg, {r: roles[r].pick(index) for r in entry.roles}, monitor)


# -- the built-in modes (programs are imported when a call is built: they import this package) ---

def _specreason(problem, cfg, roles, monitor):
    from programs import specreason

    base = roles[BASE]
    return specreason, dict(problem=problem, cfg=cfg, monitor=monitor, draft=roles[DRAFT], base=base), base.backend


def _alone(role_name):
    def build(problem, cfg, roles, monitor):
        from programs import reason

        role = roles[role_name]
        return reason, dict(problem=problem, cfg=cfg, monitor=monitor, role=role), role.backend
    return build


def _one_gen(label, role_of):
    def build(problem, cfg, roles, monitor):
        from programs import one_gen

        role = role_of(cfg, roles)
        return one_gen, dict(problem=problem, cfg=cfg, monitor=monitor, role=role, label=label), role.backend
    return build


def _dropin_role(cfg, roles):
    from sgl_specreason.dropin import SpecReasonBackend

    base = roles[BASE]
    # min_tokens = the budget: the program's one gen (max_tokens = budget) is always served.
    backend = SpecReasonBackend(base.backend, roles[DRAFT].backend, cfg, min_tokens=cfg.token_budget)
    return Role(BASE, backend, base.template)


register_mode(Mode("specreason", "the SpecReason program", (DRAFT, BASE), _specreason, judged=True))
register_mode(Mode("base", "the base model alone, step by step, same stop rules", (BASE,), _alone(BASE)))
register_mode(Mode("draft", "the draft model alone, step by step", (DRAFT,), _alone(DRAFT)))
register_mode(Mode("base-gen", "an ordinary program (prompt + one long gen) on the base runtime",
                   (BASE,), _one_gen("base-gen", lambda cfg, roles: roles[BASE])))
register_mode(Mode("dropin", "that one gen on the drop-in SpecReasonBackend (SpecReason serves it)",
                   (DRAFT, BASE), _one_gen("dropin", _dropin_role), judged=True))
