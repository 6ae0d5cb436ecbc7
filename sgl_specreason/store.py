"""The result store: a JSON-lines file that every command appends its results to, and that a
rerun of the command resumes from.

Each result is one line, appended and flushed at once, so a run killed at any moment (SIGKILL
included) loses nothing it finished. Such a kill can leave one torn last line; the store repairs
it before it is read or appended to (``repair_tail``), since a record appended right after a torn
line would merge into it and be lost when read back. ``done`` indexes what is finished, so a
rerun does only the rest: nothing lost, nothing twice. Results that ended with an error are not
done: a rerun tries them again, and appends the retry. So a key can have several records; the one
that counts is its final record (``final_records``): the last that ended without error, or, where
every try failed, the last failure. A key is done when its final record ended without error.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
    >>> _ = path.write_text('{"id": "1", "mode": "base"}\\n{"id": "2", "mo')  # killed mid-write
    >>> store = ResultStore(path, log=lambda line: None)
    >>> sorted(store.done(lambda r: r["id"], require="mode"))
    ['1']
    >>> with store.append() as writer:
    ...     _ = writer.write({"id": "2", "mode": "base"})
    >>> [r["id"] for r in store.read("mode")]
    ['1', '2']
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Set

import jsonlines


def repair_tail(path: Path) -> int:
    """Make ``path`` end with a whole line: a last line without its newline is completed when it
    holds a whole JSON record (the kill came between the record and its newline) and cut off
    otherwise. Returns the bytes removed."""
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
        handle.seek(keep)
        if parse(handle.read(size - keep).decode("utf-8", errors="replace")) is not None:
            handle.write(b"\n")
            return 0
        handle.truncate(keep)
        return size - keep


def parse(line: str) -> Optional[dict]:
    """The record a line holds, or None for a line that is not a JSON object (torn, or not ours)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_records(path: Path, require: str = "mode") -> List[dict]:
    """The records of ``path`` that have the field ``require`` (summary lines have not), in file
    order, without touching the file; a torn or foreign line is skipped."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        records = [parse(line) for line in handle]
    return [r for r in records if r is not None and require in r]


def final_records(records: Sequence[dict], key: Callable[[dict], Optional[Hashable]]) -> Dict[Hashable, dict]:
    """The final record of each ``key``, in the order the keys first appear: the last record that
    ended without error, or, where every record of the key failed, the last failure. A failure
    after a success does not replace it. Records whose key is None are left out.

    >>> records = [{"id": "a", "error": "boom"}, {"id": "b"}, {"id": "a", "wall_s": 2},
    ...            {"id": "b", "error": "late"}, {"id": "c", "error": "1"}, {"id": "c", "error": "2"}]
    >>> final_records(records, lambda r: r["id"])
    {'a': {'id': 'a', 'wall_s': 2}, 'b': {'id': 'b'}, 'c': {'id': 'c', 'error': '2'}}
    """
    final: Dict[Hashable, dict] = {}
    for record in records:
        k = key(record)
        if k is None:
            continue
        if k not in final or final[k].get("error") or not record.get("error"):
            final[k] = record
    return final


def done_keys(records: Sequence[dict], key: Callable[[dict], Optional[Hashable]]) -> Set[Hashable]:
    """``key`` of each record that ended without error (the keys whose final record did); records
    whose key is None are not counted. ``key`` is asked only of those records."""
    keys = {key(r) for r in records if not r.get("error")}
    keys.discard(None)
    return keys


class ResultStore:
    """The results file of one command (``path``): read, index and append to it, its torn tail
    repaired first. ``log`` hears about a repair."""

    def __init__(self, path: Path, log: Callable[[str], None] = print):
        self.path = Path(path)
        self.log = log
        self.repaired = False

    def repair(self) -> None:
        """Repair a torn last line once, before the file is first read or appended to."""
        if self.repaired:
            return
        torn = repair_tail(self.path)
        if torn:
            self.log(f"{self.path}: removed a torn last line ({torn} bytes) left by an interrupted run")
        self.repaired = True

    def read(self, require: str) -> List[dict]:
        """The records with the field ``require``."""
        self.repair()
        return read_records(self.path, require)

    def done(self, key: Callable[[dict], Optional[Hashable]], require: str) -> Set[Hashable]:
        """``key`` of each record with ``require`` that ended without error: what a rerun skips."""
        return done_keys(self.read(require), key)

    def final(self, key: Callable[[dict], Optional[Hashable]], require: str) -> Dict[Hashable, dict]:
        """The final record of each key among the records with ``require`` (``final_records``):
        what a report counts."""
        return final_records(self.read(require), key)

    @contextmanager
    def append(self, start_over: bool = False) -> Iterator[jsonlines.Writer]:
        """A writer that appends records (dicts) and flushes each at once; ``start_over`` empties
        the file first (a command whose results are not resumed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if start_over:
            self.path.write_bytes(b"")
        self.repair()
        with jsonlines.open(self.path, mode="a", flush=True) as writer:
            yield writer
