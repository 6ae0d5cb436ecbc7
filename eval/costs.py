"""What a runtime call costs, per role: a fixed cost per request, one per new prompt token
(prefill after the radix cache) and one per generated token (decode).

The report prices every call of every record with such costs: the run's own measured ones give
its analytic latency; a costs file's (another machine's, published or measured) give a projection of
the same calls on that machine -- a simulation, not a measurement. A costs file is JSON::

    {"name": "H100 pair ...",
     "draft": {"decode_ms_per_token": 4.0, "prefill_ms_per_token": 0.01, "request_ms": 5.0, "basis": "..."},
     "base": {...},
     "judge": {...},          # optional: a judge call; without it, priced as any base request
     "sources": ["...", ...]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from sgl_specreason.errors import ConfigError
from sgl_specreason.trace import DRAFT

ROLES = ("draft", "base", "judge")
#: keys of a costs file that carry no numbers: its own description and where the figures are from
NOTES = ("name", "note", "sources")


@dataclass(frozen=True)
class RoleCost:
    """Milliseconds a call to one runtime costs."""

    decode_ms_per_token: float = 0.0  # per generated token
    prefill_ms_per_token: float = 0.0  # per new prompt token (prompt minus what the cache held)
    request_ms: float = 0.0  # per request, whatever its size

    def seconds(self, call: dict) -> float:
        """The cost of one recorded call (``trace.Call`` as a dict).

        >>> RoleCost(30.0, 0.5, 5.0).seconds({"prompt_tokens": 160, "cached_tokens": 100, "completion_tokens": 2})
        0.095
        """
        new_tokens = max(0, call["prompt_tokens"] - call["cached_tokens"])
        ms = (self.request_ms + self.prefill_ms_per_token * new_tokens
              + self.decode_ms_per_token * call["completion_tokens"])
        return ms / 1000

    def describe(self) -> str:
        return (f"decode {self.decode_ms_per_token:g} ms/token, prefill {self.prefill_ms_per_token:g} ms "
                f"per new prompt token, {self.request_ms:g} ms per request")


@dataclass(frozen=True)
class Costs:
    """Each role's ``RoleCost``; None where a run measured nothing for the role (its calls that
    did work cannot be priced: the latency of their record is None)."""

    draft: Optional[RoleCost]
    base: Optional[RoleCost]
    judge: Optional[RoleCost] = None  # a judge call (on the base runtime); None: as ``base``
    name: str = "measured"
    path: Optional[Path] = None  # the costs file they came from; None: measured by the run

    def call_s(self, call: dict) -> Optional[float]:
        """Seconds one recorded call costs; None when its role has no cost and the call did work."""
        judge = call["kind"] == "judge"
        cost = self.judge if judge and self.judge is not None else self.draft if call["role"] == DRAFT else self.base
        if cost is None:
            return None if judge or call["completion_tokens"] else 0.0
        return cost.seconds(call)

    @classmethod
    def measured(cls, per_token: dict) -> "Costs":
        """A run's measured costs (``report.per_token_costs``) in this form: each model's server
        seconds per generated token (the prefill of each step's new tokens included, as the run
        paid it) as its decode cost, and the mean judge call as the fixed cost of a judge call."""
        def per_token_cost(seconds):
            return None if seconds is None else RoleCost(decode_ms_per_token=1000 * seconds)

        judge = per_token["judge_s"]
        return cls(draft=per_token_cost(per_token["draft_s_per_token"]),
                   base=per_token_cost(per_token["base_s_per_token"]),
                   judge=None if judge is None else RoleCost(request_ms=1000 * judge))

    def describe(self) -> str:
        parts = [f"{role} {cost.describe()}" for role in ROLES if (cost := getattr(self, role)) is not None]
        if self.judge is None:
            parts.append("judge calls as base requests")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        out = {"name": self.name, "path": None if self.path is None else str(self.path)}
        for role in ROLES:
            cost = getattr(self, role)
            out[role] = None if cost is None else {f.name: getattr(cost, f.name) for f in fields(RoleCost)}
        return out

    @classmethod
    def load(cls, path: Path) -> "Costs":
        """A costs file; every mistake in it is named with the file and the key."""
        where = f"--costs {path}"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{where}: cannot read it ({e.strerror or e})") from None
        except ValueError as e:
            raise ConfigError(f"{where}: not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object with draft and base costs")
        unknown = sorted(set(data) - set(ROLES) - set(NOTES))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected "
                              f"{', '.join(ROLES + NOTES)}")
        if "draft" not in data and "base" not in data:
            raise ConfigError(f"{where}: no 'draft' or 'base' costs (a call of a role without "
                              f"costs cannot be priced)")
        roles = {role: _role_cost(data[role], f"{where}: {role}") if role in data else None for role in ROLES}
        return cls(name=str(data.get("name") or Path(path).stem), path=Path(path), **roles)


def _role_cost(entry, where: str) -> RoleCost:
    names = [f.name for f in fields(RoleCost)]
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with {', '.join(names)}")
    unknown = sorted(set(entry) - set(names) - {"basis"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(names)} "
                          f"(and a 'basis' note)")
    values = {}
    for name in names:
        value = entry.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}.{name}: expected milliseconds >= 0, got {value!r}")
        values[name] = float(value)
    if not any(values.values()):
        raise ConfigError(f"{where}: every cost is 0; give at least {names[0]}")
    return RoleCost(**values)
