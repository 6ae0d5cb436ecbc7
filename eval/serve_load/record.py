"""The JSON line of one load generator run, and serve's own figures in it: its time per request
(overhead percentiles over the requests answered during the run, from ``GET /stats``), the
errors it sent inside streams that had begun, and its resident memory (samples, and the check
that it stays flat over the long run)."""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

from sgl_specreason.eval.serve_load.bench import bench_figures
from sgl_specreason.eval.serve_load.runs import MEMORY, SERVE, Run, Setup
from sgl_specreason.serve.stats import PARTS

#: the target the issue sets: serve's memory within this share of its first request's
MEMORY_TOLERANCE = 0.10


def percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50, p99, mean and max (linear interpolation, as numpy's default).

    >>> percentiles([1.0, 2.0, 3.0, 4.0])
    {'count': 4, 'p50': 2.5, 'p99': 3.97, 'mean': 2.5, 'max': 4.0}
    """
    xs = sorted(values)
    if not xs:
        return {"count": 0, "p50": None, "p99": None, "mean": None, "max": None}

    def at(q):
        pos = q * (len(xs) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(xs) - 1)
        return round(xs[low] + (xs[high] - xs[low]) * (pos - low), 6)

    return {"count": len(xs), "p50": at(0.5), "p99": at(0.99), "mean": round(sum(xs) / len(xs), 6),
            "max": xs[-1]}


def new_overheads(before: Optional[dict], after: Optional[dict], section: str = "overhead_ms") -> list:
    """The overheads (ms) of the requests answered between two ``GET /stats?recent=N`` bodies: the
    last (count after - count before) of the recent ones (all that are kept, if more came);
    ``section="overhead_parts_ms"``: their parts instead (a list per request, None where unknown).

    >>> new_overheads({"overhead_ms": {"count": 2}}, {"overhead_ms": {"count": 4, "recent": [1, 2, 3, 4]}})
    [3, 4]
    """
    if not after:
        return []
    seen = ((before or {}).get("overhead_ms") or {}).get("count", 0)
    fresh = after["overhead_ms"]["count"] - seen
    recent = (after.get(section) or {}).get("recent") or []
    return list(recent[-fresh:]) if fresh > 0 else []


def overhead_parts(before: Optional[dict], after: Optional[dict]) -> dict:
    """Percentiles of each part of serve's own time (``serve.stats.PARTS``) over the requests
    answered between two ``GET /stats`` bodies (empty: a serve that does not tell them)."""
    parts = [p for p in new_overheads(before, after, "overhead_parts_ms") if p]
    return {name: percentiles([p[i] for p in parts]) for i, name in enumerate(PARTS)} if parts else {}


def stream_errors(before: Optional[dict], after: Optional[dict]) -> int:
    """Errors serve sent inside streams that had begun with 200 (the load generator counts those
    requests as completed)."""
    if not after:
        return 0
    return after["requests"]["stream_errors"] - ((before or {}).get("requests") or {}).get("stream_errors", 0)


def memory_check(samples: Sequence[Sequence[float]], answered_before: int, requests: int,
                 tolerance: float = MEMORY_TOLERANCE) -> dict:
    """Serve's memory at its first and its last request of a run, from samples (seconds,
    resident MB, requests answered so far): the first sample once one request of the run is
    answered, and the first once all are (the run's last sample if some never were).

    >>> memory_check([(0, 500, 10), (1, 510, 11), (2, 530, 60), (3, 540, 210), (4, 541, 210)], 10, 200)
    {'first_mb': 510, 'last_mb': 540, 'change': 0.0588, 'flat': True, 'tolerance': 0.1}
    """
    if not samples:
        return {"first_mb": None, "last_mb": None, "change": None, "flat": None, "tolerance": tolerance}
    first = next((s for s in samples if s[2] is not None and s[2] >= answered_before + 1), samples[0])
    last = next((s for s in samples if s[2] is not None and s[2] >= answered_before + requests), samples[-1])
    change = (last[1] - first[1]) / first[1] if first[1] else None
    return {"first_mb": first[1], "last_mb": last[1], "change": None if change is None else round(change, 4),
            "flat": None if change is None else abs(change) <= tolerance, "tolerance": tolerance}


def thin(samples: Sequence, most: int = 200) -> List:
    """At most ``most`` of ``samples``, evenly spread, the first and the last kept.

    >>> thin(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    if len(samples) <= most:
        return list(samples)
    step = (len(samples) - 1) / (most - 1)
    return [samples[round(i * step)] for i in range(most)]


def rss_summary(samples: Sequence[Sequence[float]]) -> dict:
    rss = [s[1] for s in samples]
    if not rss:
        return {"start_mb": None, "end_mb": None, "max_mb": None}
    return {"start_mb": rss[0], "end_mb": rss[-1], "max_mb": max(rss)}


def make_record(run: Run, setup: Setup, result: Optional[dict], stats_before: Optional[dict],
                stats_after: Optional[dict], samples: Sequence[Sequence[float]], wall_s: float,
                command: Sequence[str], error: Optional[str] = None) -> dict:
    """The JSON line of one run. Errors are the load generator's failed requests plus, through
    serve, errors sent inside streams that had begun. ``error`` (the run itself failed: no
    result, the load generator crashed or timed out) makes a rerun try the run again."""
    record = {"key": run.key(setup), **asdict(run), "setup": asdict(setup),
              "wall_s": round(wall_s, 2), "command": shlex.join(command), "error": error}
    if result is None and error is None:
        record["error"] = "the load generator wrote no result"
    figures = bench_figures(result, run.num_prompts) if result is not None else {"failed": run.num_prompts}
    record["bench"] = figures
    through_serve = run.target == SERVE
    streamed = stream_errors(stats_before, stats_after) if through_serve else 0
    record["stream_errors"] = streamed
    record["errors"] = figures["failed"] + streamed
    if through_serve:
        record["overhead_ms"] = percentiles(new_overheads(stats_before, stats_after))
        record["overhead_parts_ms"] = overhead_parts(stats_before, stats_after)
        record["rss"] = rss_summary(samples)
        record["rss_samples"] = [list(s) for s in thin(samples)]
        if run.kind == MEMORY:
            answered = ((stats_before or {}).get("requests") or {}).get("answered", 0)
            record["memory"] = memory_check(samples, answered, run.num_prompts)
    return record
