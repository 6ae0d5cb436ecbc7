"""``serve``'s OpenAI batches (``/v1/batches``): a batch's state in its ``--data-dir``, and the task
that answers its lines on the server's run slots beside the live requests.

Live requests keep their latency two ways: a batch line takes a slot only when no live request
waits for one (``Service.start_behind``), and batches hold at most ``batch_slots`` of the
``max_in_flight`` slots at once (half by default), so a live request that arrives finds the
other slots free or soon free.

A batch lives in ``batches/ID/``: ``batch.json`` (OpenAI's batch object, replaced whole at each
change) and ``output.jsonl`` / ``errors.jsonl``, one line appended and flushed per request as it
is answered. Each output line's ``id`` is the batch's and the line's number, so a restarted
serve knows which lines are done from the files alone: it answers the rest, those in flight at
a kill included, and writes no line twice (a torn last line is repaired first, ``store``).
Statuses as OpenAI's: validating, in_progress, finalizing, completed; failed (no line could be
read), expired (past ``completion_window``: the unanswered lines get ``batch_expired`` errors),
cancelling, cancelled. Batches run one after another, in the order they were created.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

from sgl_specreason.errors import InputError
from sgl_specreason.openai_batch import (
    RequestLine,
    answer_lines,
    answered,
    bad_line_error,
    error_line,
    read_requests,
)
from sgl_specreason.serve.answering import SCHEMAS, Answerer, check_body
from sgl_specreason.serve.errors import ApiError
from sgl_specreason.serve.files import FileStore, not_found, write_json
from sgl_specreason.store import ResultStore

WINDOWS = {"24h": 24 * 3600}  # OpenAI's one completion window
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
log = logging.getLogger("sgl_specreason.serve")


def public(batch: dict) -> dict:
    """The batch object as OpenAI's API gives it (without serve's own bookkeeping)."""
    return {k: v for k, v in batch.items() if not k.startswith("_")}


class Batches:
    """The batches under ``root``, their lines answered by ``answerer`` on at most ``slots`` run
    slots; input, output and error files in ``files``. ``max_lines``: requests a batch may hold."""

    def __init__(self, root: Path, files: FileStore, answerer: Answerer, slots: int, max_lines: int):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files, self.answerer, self.slots, self.max_lines = files, answerer, slots, max_lines
        self.wake = asyncio.Event()
        self.task: Optional[asyncio.Task] = None
        self.running: Dict[str, asyncio.Task] = {}  # the batch being answered, by id
        self.stopping = False
        #: each batch object once read: one dict per batch, so that a cancel and the task that
        #: answers the batch change the same object and neither saves over the other
        self.objects: Dict[str, dict] = {}
        self.changed = threading.Condition()  # notified at each save: ``wait`` watches it

    # -- state ------------------------------------------------------------------------------------

    def _dir(self, batch_id: str) -> Path:
        return self.root / batch_id

    def get(self, batch_id: str) -> dict:
        """The batch object of ``batch_id``; a 404 in OpenAI's shape if there is none."""
        if batch_id not in self.objects:
            path = self._dir(batch_id) / "batch.json"
            if "/" in batch_id or not batch_id.startswith("batch_") or not path.exists():
                raise not_found("batch", batch_id, "batch_id")
            self.objects[batch_id] = json.loads(path.read_text())
        return self.objects[batch_id]

    def _save(self, batch: dict, **changes) -> dict:
        """Change the batch object, write it, and wake the watchers."""
        batch.update(changes)
        write_json(self._dir(batch["id"]) / "batch.json", batch)
        return self._changed(batch)

    def _changed(self, batch: dict, **changes) -> dict:
        """Change the batch object and wake the watchers, without writing it: for the counts,
        which a restart counts again from the output files (``_answer``), so that answering a
        line costs the event loop no file write."""
        batch.update(changes)
        with self.changed:
            self.changed.notify_all()
        return batch

    def wait(self, batch_id: str, until: Callable[[dict], bool], timeout: float) -> bool:
        """Block the calling thread (not the event loop's) until ``until(batch)`` holds, or
        ``timeout`` seconds; whether it holds."""
        with self.changed:
            return self.changed.wait_for(lambda: until(self.get(batch_id)), timeout)

    def list(self) -> List[dict]:
        """Every batch, the newest first."""
        batches = [self.get(p.parent.name) for p in self.root.glob("batch_*/batch.json")]
        return sorted(batches, key=lambda b: (b["created_at"], b["id"]), reverse=True)

    def create(self, input_file_id: str, endpoint: str, completion_window: str,
               metadata: Optional[dict] = None, output_keep_s: Optional[int] = None) -> dict:
        """A new batch of the requests in ``input_file_id`` to ``endpoint``, in ``validating``."""
        if endpoint not in SCHEMAS:
            raise ApiError(400, f"endpoint: {endpoint!r} is not one serve answers; use one of "
                                f"{', '.join(SCHEMAS)}", "endpoint")
        if completion_window not in WINDOWS:
            raise ApiError(400, f"completion_window: {completion_window!r}; the one window is "
                                f"{', '.join(WINDOWS)}", "completion_window")
        meta = self.files.get(input_file_id)
        if meta["purpose"] != "batch":
            raise ApiError(400, f"input_file_id: file {input_file_id} has purpose {meta['purpose']!r}; "
                                "upload the input with purpose 'batch'", "input_file_id")
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex}", "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": input_file_id, "completion_window": completion_window,
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + WINDOWS[completion_window], "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                 "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": metadata, "_output_keep_s": output_keep_s, "_ends_as": None}
        self._dir(batch["id"]).mkdir()
        self.objects[batch["id"]] = batch
        self._save(batch)
        self.wake.set()
        return batch

    def cancel(self, batch_id: str) -> dict:
        """Stop answering ``batch_id``: ``cancelling`` at once, ``cancelled`` once the lines in
        flight are aborted; what was answered stays in its output file."""
        batch = self.get(batch_id)
        if batch["status"] not in ("validating", "in_progress"):
            raise ApiError(409, f"batch {batch_id} is {batch['status']}; only a validating or in_progress "
                                "batch can be cancelled", "batch_id", "batch_not_cancellable")
        self._save(batch, status="cancelling", cancelling_at=int(time.time()))
        task = self.running.get(batch_id)
        if task is not None:
            task.cancel()
        self.wake.set()
        return batch

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Abort the lines in flight (a restart answers them again) and end the task."""
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            self.wake.clear()
            todo = sorted((b for b in self.list() if b["status"] in UNFINISHED), key=lambda b: b["created_at"])
            if not todo:
                await self.wake.wait()
                continue
            try:
                await self.run(todo[0]["id"])
            except Exception as e:  # a bug must not stop the batches after it: this one fails
                log.error("batch %s failed", todo[0]["id"], exc_info=e)
                errors = {"object": "list", "data": [{"code": "internal_error", "message": f"{type(e).__name__}: {e}",
                                                     "param": None, "line": None}]}
                self._save(todo[0], status="failed", failed_at=int(time.time()), errors=errors)

    async def run(self, batch_id: str) -> dict:
        """Take ``batch_id`` from where it is to its end (or to a stop)."""
        batch = self.get(batch_id)
        if batch["status"] == "validating":
            batch = self._validate(batch)
        if batch["status"] == "in_progress":
            task = asyncio.ensure_future(self._answer(batch))
            self.running[batch_id] = task
            try:
                await task
            except asyncio.CancelledError:
                if self.stopping or self.get(batch_id)["status"] != "cancelling":
                    raise  # the server stops: the batch is resumed at its next start
            finally:
                self.running.pop(batch_id, None)
            batch = self.get(batch_id)
        if batch["status"] in ("in_progress", "finalizing", "cancelling"):
            batch = self._finalize(batch)
        return batch

    def _requests(self, batch: dict):
        raw = self.files.content(batch["input_file_id"])
        cfg, judged = self.answerer.cfg, self.answerer.judged
        return read_requests(raw, batch["input_file_id"], lambda url, body: check_body(url, body, cfg, judged),
                             endpoint=batch["endpoint"])

    def _validate(self, batch: dict) -> dict:
        now = int(time.time())
        try:
            good, bad = self._requests(batch)
            total = len(good) + len(bad)
            if not good and not bad:
                raise InputError("the input file has no request lines")
            if total > self.max_lines:
                raise InputError(f"the input file has {total} requests; a batch takes at most {self.max_lines} "
                                 "(--max-batch-lines)")
        except (InputError, ApiError) as e:
            errors = {"object": "list", "data": [{"code": "invalid_file", "message": str(e), "param": None,
                                                 "line": None}]}
            return self._save(batch, status="failed", failed_at=now, errors=errors)
        counts = {"total": total, "completed": 0, "failed": 0}
        return self._save(batch, status="in_progress", in_progress_at=now, request_counts=counts)

    def _answer_paths(self, batch: dict):
        where = self._dir(batch["id"])
        return ResultStore(where / "output.jsonl", log=lambda text: None), \
            ResultStore(where / "errors.jsonl", log=lambda text: None)

    async def _answer(self, batch: dict) -> None:
        good, bad = self._requests(batch)
        output, errors = self._answer_paths(batch)
        key = f"batch_req_{batch['id'][len('batch_'):]}_"
        done = {r["id"] for r in output.read("id") + errors.read("id")}
        counts = {"total": len(good) + len(bad),
                  "completed": sum(answered(r) for r in output.read("id")), "failed": len(errors.read("id"))}
        self._save(batch, request_counts=counts)
        with output.append() as out, errors.append() as err:
            def write(record: dict) -> None:
                if self.stopping:
                    return  # a line aborted by the stop: answered again at the next start
                ok = answered(record)
                (out if ok else err).write(record)
                done.add(record["id"])
                counts["completed" if ok else "failed"] += 1
                self._changed(batch, request_counts=counts)

            for line in bad:
                if f"{key}{line.number}" not in done:
                    write(error_line(line.custom_id, bad_line_error(line), f"{key}{line.number}"))
            todo = [r for r in good if f"{key}{r.number}" not in done]
            if time.time() >= batch["expires_at"]:
                return self._expire(batch, todo, write, key)
            timeout = batch["expires_at"] - time.time()
            try:
                await asyncio.wait_for(answer_lines(todo, self.answerer, write, self.slots,
                                                    key=lambda r: f"{key}{r.number}"), timeout)
            except asyncio.TimeoutError:
                left = [r for r in todo if f"{key}{r.number}" not in done]
                self._expire(batch, left, write, key)
        batch["_ends_as"] = batch["_ends_as"] or "completed"

    @staticmethod
    def _expire(batch: dict, left: List[RequestLine], write, key: str) -> None:
        """Past the completion window: each line not answered gets ``batch_expired``, and the
        batch ends ``expired`` (with the output of what was answered)."""
        for request in left:
            write(error_line(request.custom_id, ApiError(400, "the batch expired before this request was "
                                                              "answered", code="batch_expired"),
                             f"{key}{request.number}"))
        batch["_ends_as"] = "expired"

    def _finalize(self, batch: dict) -> dict:
        """Make the output and error files OpenAI's file objects, and end the batch."""
        status = "cancelled" if batch["status"] == "cancelling" else batch["_ends_as"] or "completed"
        batch = self._save(batch, status="finalizing", finalizing_at=batch["finalizing_at"] or int(time.time()),
                           _ends_as=status)
        where, keep = self._dir(batch["id"]), batch["_output_keep_s"]
        for name, field in (("output.jsonl", "output_file_id"), ("errors.jsonl", "error_file_id")):
            path = where / name
            if batch[field] is None and path.exists() and path.stat().st_size:
                meta = self.files.adopt(path, f"{batch['id']}_{name.split('.')[0]}.jsonl", keep_s=keep)
                self._save(batch, **{field: meta["id"]})
        return self._save(batch, status=status, **{f"{status}_at": int(time.time())})
