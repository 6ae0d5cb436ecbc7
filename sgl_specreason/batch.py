"""What an offline batch needs beyond solving: resuming where a killed run stopped, never writing
a record twice, reporting bad input by line, and a progress bar.

Each finished problem is one JSON line, appended and flushed at once. A run killed mid-write
(SIGKILL included) leaves at most one torn last line; ``repair_tail`` cuts it off before the next
run appends, and ``finished_ids`` tells which problems are done, so a rerun of the same command
solves only the rest: nothing lost, nothing twice. Problems that ended with an error are not
done: a rerun tries them again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Sequence, Set

from sgl_specreason.problems import BadInput, Problem, ProblemSet
from sgl_specreason.runner import Monitor
from sgl_specreason.trace import ProblemResult


def repair_tail(path: Path) -> int:
    """Cut a torn last line (no newline at the end) off ``path``; the bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        keep = size
        block = 1 << 16
        while keep > 0:  # find the last newline, reading backwards
            start = max(0, keep - block)
            handle.seek(start)
            chunk = handle.read(keep - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        handle.truncate(keep)
        return size - keep


def finished_ids(path: Path, mode: str) -> Set[str]:
    """Ids of the problems ``path`` already holds a result for in ``mode``, without error."""
    done: Set[str] = set()
    if not path.exists():
        return done
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("mode") == mode and "id" in record \
                    and not record.get("error"):
                done.add(str(record["id"]))
    return done


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


def plan(problems: ProblemSet, result_file: Path, mode: str,
         log=print) -> tuple[List[Problem], Sequence[BadInput], int]:
    """The problems still to solve, the bad inputs, and how many were done before."""
    torn = repair_tail(result_file)
    if torn:
        log(f"{result_file}: removed a torn last line ({torn} bytes) left by an interrupted run")
    done = finished_ids(result_file, mode)
    todo = [p for p in problems.problems if p.id not in done]
    return todo, problems.bad, len(problems.problems) - len(todo)
