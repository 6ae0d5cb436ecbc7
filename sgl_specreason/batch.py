"""What an offline batch needs beyond solving: resuming where a killed run stopped (through its
``ResultStore``), reporting bad input by line, and a progress bar.
"""

from __future__ import annotations

import sys
from typing import List, Sequence

from sgl_specreason.problems import BadInput, Problem, ProblemSet
from sgl_specreason.runner import Monitor
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import ProblemResult


def finished_ids(store: ResultStore, mode: str) -> set:
    """Ids of the problems ``store`` already holds a result for in ``mode``, without error."""
    return store.done(lambda r: str(r["id"]) if r.get("mode") == mode and "id" in r else None,
                      require="mode")


class ProgressMonitor(Monitor):
    """Monitor with a progress bar (ETA, running acceptance rate, errors) on stderr."""

    def __init__(self, writer, total: int, show_steps: bool = False, stream=sys.stdout):
        from tqdm import tqdm

        super().__init__(writer, stream=stream, show_steps=show_steps)
        self.bar = tqdm(total=total, unit="problem", file=sys.stderr, dynamic_ncols=True,
                        disable=total == 0)
        self.judged = 0
        self.accepted = 0
        self.errors = 0

    def _print(self, text: str) -> None:
        if self.stream is not None:
            self.bar.write(text, file=self.stream)

    def take(self, result: ProblemResult) -> None:
        super().take(result)
        with self.lock:
            totals = result.totals()
            self.judged += totals.judged_steps
            self.accepted += totals.accepted_steps
            self.errors += bool(result.error)
            postfix = {"errors": self.errors}
            if self.judged:
                postfix["acceptance"] = f"{100 * self.accepted / self.judged:.0f}%"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def plan(problems: ProblemSet, store: ResultStore, mode: str) -> tuple[List[Problem], Sequence[BadInput], int]:
    """The problems still to solve, the bad inputs, and how many were done before."""
    done = finished_ids(store, mode)
    todo = [p for p in problems.problems if p.id not in done]
    return todo, problems.bad, len(problems.problems) - len(todo)
