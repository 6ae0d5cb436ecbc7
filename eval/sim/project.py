"""The simulator put to work: each measured level replayed on the CPU costs (calibration), and
the policies carried to large concurrency on the H100 costs (projection)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

from sgl_specreason.loadtest import steady_window

from .engine import RuntimeCosts
from .replay import Outcome, ProblemSpec, Replay, oracle_agreement, problem_spec


def problem_order(records: Sequence[dict]) -> List[dict]:
    """A closed loop's problems in the order its clients took them: by start where the records
    say it, else by the problem's index in its dataset (the loop takes them in that order)."""
    def index(record):
        digits = re.findall(r"\d+", record["id"])
        return int(digits[-1]) if digits else 0

    if all("started_s" in r for r in records):
        return sorted(records, key=lambda r: r["started_s"])
    return sorted(records, key=index)


def throughput(outcomes: Sequence[Outcome], clients: int) -> Dict[str, Optional[float]]:
    """Problems/s over the whole run and over its steady window (``steady_window``)."""
    if not outcomes:
        return {"problems_per_s": None, "steady_problems_per_s": None}
    end = max(o.ended for o in outcomes)
    steady = steady_window([(o.started, o.ended) for o in outcomes], clients)
    return {"problems_per_s": len(outcomes) / end if end > 0 else None,
            "steady_problems_per_s": steady["problems_per_s"] if steady else None}


def replay_level(costs: Dict[str, RuntimeCosts], records: Sequence[dict], clients: int,
                 policy: str = "recorded") -> Dict[str, Optional[float]]:
    """One measured level and policy replayed from its own records."""
    specs = [problem_spec(r) for r in problem_order(records)]
    replay = Replay(costs, specs, clients, policy)
    out = throughput(replay.run(), clients)
    out["speculated_share"] = share_speculated(replay)
    out["oracle_agreement"] = oracle_agreement(replay) if policy == "auto" else None
    return out


def share_speculated(replay: Replay) -> Optional[float]:
    steps = sum(o.speculated + o.base_written for o in replay.outcomes)
    return sum(o.speculated for o in replay.outcomes) / steps if steps else None


def project(costs: Dict[str, RuntimeCosts], pools: Dict[str, Sequence[dict]], levels: Sequence[int],
            problems_per_client: int = 4, at_least: int = 32) -> Dict[str, Dict[int, dict]]:
    """Each policy at each concurrency, closed loop, on ``costs``: ``always`` and ``never``
    replay their own records (``pools``), ``auto`` replays the ``always`` records deciding per
    step. Each level runs ``problems_per_client`` problems a client (at least ``at_least``),
    cycling through the pool; throughput is read over the steady window."""
    out: Dict[str, Dict[int, dict]] = {}
    for policy, pool_name, mode in (("always", "always", "recorded"), ("never", "never", "recorded"),
                                    ("auto", "always", "auto")):
        specs: List[ProblemSpec] = [problem_spec(r) for r in pools[pool_name]]
        out[policy] = {}
        for c in levels:
            n = max(at_least, problems_per_client * c)
            chosen = [specs[i % len(specs)] for i in range(n)]
            replay = Replay(costs, chosen, c, mode)
            figures = throughput(replay.run(), c)
            figures["speculated_share"] = share_speculated(replay)
            figures["oracle_agreement"] = oracle_agreement(replay) if mode == "auto" else None
            out[policy][c] = figures
    return out


def crossover(projected: Dict[str, Dict[int, dict]], key: str = "steady_problems_per_s",
              scale: Optional[Dict[str, float]] = None) -> Optional[int]:
    """The smallest concurrency at which ``never`` reaches ``always`` (``scale``: a factor per
    policy, pass@1 for correct answers/s); None if it never does."""
    scale = scale or {}
    for c in sorted(projected["always"]):
        a = (projected["always"][c][key] or 0) * scale.get("always", 1.0)
        n = (projected["never"][c][key] or 0) * scale.get("never", 1.0)
        if n >= a:
            return c
    return None
