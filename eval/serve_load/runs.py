"""What the serve load measurement measures: the setup every figure depends on, the runs of the
plan (each level through serve and on the base runtime, then the long memory run), and
resumption: the runs a rerun still has to do, and the final record of each run (the result
store's ``final_records``: the last that succeeded, or the last failure)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

from sgl_specreason.store import done_keys
from sgl_specreason.store import final_records as final_by_key

SERVE, BASE = "serve", "base"
#: BESIDE: a level through serve while an OpenAI batch of ``batch_lines`` runs on serve's run slots
LEVEL, MEMORY, BESIDE = "level", "memory", "beside-batch"


@dataclass(frozen=True)
class Setup:
    """Everything a run's figures depend on besides its own level: a record made under another
    setup is neither reused nor reported."""

    model: str = "smollm2-135m"  # the draft and the base model
    device: str = "cpu"
    threads: int = 1  # OMP threads per runtime
    max_total_tokens: int = 16384  # KV pool of each runtime
    judge: str = "likelihood-numbers"
    threshold: float = 6.0
    answer_max_tokens: int = 8  # the closing answer when the budget ends the reasoning
    max_in_flight: int = 32  # serve's runs at once
    seed: int = 0  # the runtimes' sampling seed and the load generator's prompt seed
    range_ratio: float = 0.5  # lengths are drawn from [len * ratio, len]
    serve_flags: str = ""  # more ``sgl-specreason serve`` flags

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Run:
    """One load generator run: ``num_prompts`` requests, at most ``concurrency`` at once."""

    kind: str  # LEVEL, or MEMORY (the long run that shows serve's memory)
    target: str  # SERVE or BASE
    concurrency: int
    num_prompts: int
    input_len: int
    output_len: int
    batch_lines: int = 0  # BESIDE: the lines of the batch submitted before the run

    @property
    def name(self) -> str:
        batch = f"-batch{self.batch_lines}" if self.kind == BESIDE else ""
        return (f"{self.kind}-{self.target}-c{self.concurrency}-n{self.num_prompts}-in{self.input_len}"
                f"-out{self.output_len}{batch}")

    def key(self, setup: Setup) -> str:
        """What a record is the result of (``record_key`` reads it back)."""
        return f"{self.name}@{setup.digest()}"


def record_key(record: dict) -> Optional[str]:
    return record.get("key")


def plan(concurrency: Sequence[int], num_prompts: Sequence[int], input_len: int, output_len: int,
         memory: Optional[Tuple[int, int, int, int]], batch_lines: int = 0) -> List[Run]:
    """Each level against serve, then against the base runtime, then (``batch_lines`` > 0)
    through serve again while a batch of that many lines runs beside it; then the memory run
    (requests, concurrency, input and output length), if any.

    >>> [r.name for r in plan([1, 8], [4, 16], 128, 64, (200, 32, 32, 8))]  # doctest: +NORMALIZE_WHITESPACE
    ['level-serve-c1-n4-in128-out64', 'level-base-c1-n4-in128-out64', 'level-serve-c8-n16-in128-out64',
     'level-base-c8-n16-in128-out64', 'memory-serve-c32-n200-in32-out8']
    """
    if len(num_prompts) != len(concurrency):
        raise ValueError(f"one --num-prompts per --concurrency level, got {list(num_prompts)} for "
                         f"{list(concurrency)}")
    runs = []
    for c, n in zip(concurrency, num_prompts):
        if n < c:
            raise ValueError(f"--num-prompts {n} is fewer than concurrency {c}: the level would never "
                             f"have {c} requests at once")
        runs += [Run(LEVEL, target, c, n, input_len, output_len) for target in (SERVE, BASE)]
        if batch_lines > 0:
            runs.append(Run(BESIDE, SERVE, c, n, input_len, output_len, batch_lines))
    if memory is not None:
        requests, c, memory_in, memory_out = memory
        runs.append(Run(MEMORY, SERVE, c, requests, memory_in, memory_out))
    return runs


def remaining(runs: Sequence[Run], setup: Setup, records: Sequence[dict]) -> List[Run]:
    """The runs without a record that ended without error (a rerun's work)."""
    done = done_keys(records, record_key)
    return [run for run in runs if run.key(setup) not in done]


def final_records(runs: Sequence[Run], setup: Setup, records: Sequence[dict]) -> List[dict]:
    """Per run of the plan, in plan order: its last record without error, or its last failure."""
    final = final_by_key(records, record_key)
    return [final[run.key(setup)] for run in runs if run.key(setup) in final]
