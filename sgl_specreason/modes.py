"""The modes a problem can be solved in: SpecReason and its baselines, one registry entry each.

A mode names the runtimes it needs and builds the program call that solves one problem; every
command (``sgl-specreason``, ``python -m eval``, the load test) takes its modes from ``MODES``.
A new mode is one ``register_mode`` call and a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from sgl_specreason.calls import Role
from sgl_specreason.dropin import SpecReasonBackend
from sgl_specreason.programs import one_gen, reason, specreason
from sgl_specreason.registry import Registry
from sgl_specreason.trace import BASE, DRAFT

#: what ``program_call`` returns: the program, its arguments, the backend to run it on
ProgramCall = Tuple[Any, dict, Any]


@dataclass(frozen=True)
class Mode:
    name: str
    help: str
    #: the ``@sgl.function`` that solves a problem in this mode; it takes ``problem``, ``cfg``
    #: and ``monitor``, and what ``arguments`` gives
    program: Any
    roles: Tuple[str, ...]  # the runtimes it needs
    #: ``arguments(cfg, roles)``: the program's other arguments (a ``cfg`` among them replaces
    #: the config) and the backend its state runs on, from the roles it needs
    arguments: Callable[[Any, Dict[str, Role]], Tuple[dict, Any]]
    #: a drafted step is judged (runs of it name a judge and a threshold)
    judged: bool = False


#: every mode by name, in the order help lists them
MODES: Registry[Mode] = Registry("mode")
#: add a mode (a second one of the same name is refused)
register_mode = MODES.add
#: the mode of a name, or an error listing the known ones
get_mode = MODES.find


@dataclass(frozen=True)
class Variant:
    """A mode run under one config: what a load test's column and an evaluation's mode are.
    ``label`` names it ("base", "specreason-likelihood-numbers-9+base1", "specreason/auto")."""

    label: str
    mode: str  # a name in MODES
    cfg: Any  # SpecReasonConfig

    def to_dict(self) -> dict:
        c = self.cfg
        return {"label": self.label, "program": self.mode, "threshold": c.threshold,
                "score_method": c.score_method, "num_drafts": c.num_drafts, "pipeline": c.pipeline,
                "race_base_step": c.race_base_step, "first_n_base_steps": c.first_n_base_steps,
                "keep_draft_prefix": c.keep_draft_prefix}


def roles_for(mode: str) -> Tuple[str, ...]:
    """The runtimes a mode needs."""
    return get_mode(mode).roles


def program_call(mode: str, problem, cfg, roles: dict, monitor=None) -> ProgramCall:
    """The program that solves ``problem`` in ``mode``, its arguments, and the backend to run it
    on."""
    entry = get_mode(mode)
    arguments, backend = entry.arguments(cfg, {r: roles[r] for r in entry.roles})
    return entry.program, {"problem": problem, "cfg": cfg, "monitor": monitor, **arguments}, backend


# -- the built-in modes ----------------------------------------------------------------------------

def _both(cfg, roles):
    return {"draft": roles[DRAFT], "base": roles[BASE]}, roles[BASE].backend


def _alone(role_name):
    def arguments(cfg, roles):
        return {"role": roles[role_name]}, roles[role_name].backend
    return arguments


def _base_gen(cfg, roles):
    return {"role": roles[BASE], "label": "base-gen"}, roles[BASE].backend


def _dropin(cfg, roles):
    base = roles[BASE]
    # min_tokens = the budget: the program's one gen (max_tokens = budget) is always served.
    backend = SpecReasonBackend(base.backend, roles[DRAFT].backend, cfg, min_tokens=cfg.token_budget)
    return {"role": Role(BASE, backend, base.template), "label": "dropin"}, backend


register_mode(Mode("specreason", "the SpecReason program", specreason, (DRAFT, BASE), _both, judged=True))
register_mode(Mode("base", "the base model alone, step by step, same stop rules", reason, (BASE,),
                   _alone(BASE)))
register_mode(Mode("draft", "the draft model alone, step by step", reason, (DRAFT,), _alone(DRAFT)))
register_mode(Mode("base-gen", "an ordinary program (prompt + one long gen) on the base runtime",
                   one_gen, (BASE,), _base_gen))
register_mode(Mode("dropin", "that one gen on the drop-in SpecReasonBackend (SpecReason serves it)",
                   one_gen, (DRAFT, BASE), _dropin, judged=True))
