"""Which records of a result file count, and what is read off them: the key a record is the
result of and the final record per key (a retry's success replaces the failures before it), each
record's runtime calls and kept tokens, and over a group of records their merged token totals,
pass@1 and acceptance per step index."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Dict, List, Sequence

from sgl_specreason.store import final_records as final_by_key
from sgl_specreason.trace import DRAFT, Totals


def record_key(record: dict) -> tuple:
    """What a record is the result of: (data set, problem, sample, mode)."""
    return (record["dataset"], record["problem_id"], record["sample"], record["mode"])


def final_records(records: Sequence[dict]) -> List[dict]:
    """One record per key: the last that succeeded, or the last failure where every try failed
    (the result store's ``final_records``), in the order each key first appears. A resumed run
    retries what failed and appends the retry, so earlier failures stay in the file; they must
    count neither as a wrong answer nor as a second sample."""
    return list(final_by_key(records, record_key).values())


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def merged_totals(records: Sequence[dict]) -> Totals:
    totals = Totals()
    for record in records:
        totals.merge(Totals.from_dict(record["totals"]))
    return totals


def record_calls(record: dict) -> List[dict]:
    """Every runtime call of a record: its steps' and the answer's."""
    calls = [c for step in record["steps"] for c in step["calls"]]
    return calls + [record["answer_call"]] if record.get("answer_call") else calls


def kept_tokens(record: dict) -> int:
    t = record["totals"]
    return t["kept_draft_tokens"] + t["kept_base_tokens"]


def pass_at_1(records: Sequence[dict]) -> tuple:
    """(problems, pass@1, its standard error) over ``records``: each problem's share of right
    samples, averaged over the problems."""
    by_problem = defaultdict(list)
    for r in records:
        by_problem[r["problem_id"]].append(1.0 if r.get("correct") else 0.0)
    means = [sum(v) / len(v) for v in by_problem.values()]
    n = len(means)
    return (n, sum(means) / n if n else None,
            statistics.stdev(means) / math.sqrt(n) if n > 1 else None)


def acceptance_by_step(records: Sequence[dict]) -> Dict[int, float]:
    counts, kept = defaultdict(int), defaultdict(int)
    for r in records:
        for step in r["steps"]:
            if step["score"] is not None:
                counts[step["index"]] += 1
                kept[step["index"]] += step["source"] == DRAFT
    return {i: kept[i] / counts[i] for i in sorted(counts)}
