"""The batch of a ``beside-batch`` run: an OpenAI Batch file submitted to serve's ``/v1/files`` and
``/v1/batches`` through the unchanged openai client before the load generator starts, so that
its lines hold run slots while the live requests come; read again when the run ends (how many
lines it answered meanwhile), then cancelled. Its lines are the chat messages of
``eval/general_requests.jsonl``, cycled, with the run's output length as ``max_tokens``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from sgl_specreason.eval.openai_batches import write_input

#: statuses after which a batch runs no more lines
ENDED = ("completed", "failed", "cancelled", "expired")


class BatchBeside:
    """One batch on serve at ``url``: ``start`` submits it and returns once its first line is
    answered (so it is running when the live requests begin); ``finish`` reads what it did
    during the run and cancels the rest."""

    def __init__(self, url: str, lines: int, max_tokens: int, work: Path, timeout: float = 600):
        import openai

        self.client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=2)
        self.lines, self.max_tokens, self.work, self.timeout = lines, max_tokens, work, timeout
        self.id: Optional[str] = None
        self.done_at_start = 0

    def _done(self) -> tuple:
        state = self.client.batches.retrieve(self.id)
        counts = state.request_counts
        return state.status, (counts.completed + counts.failed) if counts else 0

    def start(self) -> None:
        path = self.work / "beside-batch.jsonl"
        write_input(path, self.lines, self.max_tokens)
        with path.open("rb") as handle:
            upload = self.client.files.create(file=handle, purpose="batch")
        self.id = self.client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                             completion_window="24h").id
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status, done = self._done()
            if done or status in ENDED:
                self.done_at_start = done
                if status in ENDED:
                    raise RuntimeError(f"the batch beside the run ended ({status}) before the run began")
                return
            time.sleep(0.5)
        raise RuntimeError(f"the batch beside the run answered no line within {self.timeout:g} s")

    def finish(self) -> dict:
        """What the batch did while the run went on; the batch is then cancelled and waited for."""
        status, done = self._done()
        figures = {"lines": self.lines, "batch_id": self.id, "done_at_start": self.done_at_start,
                   "done_at_end": done, "done_during_run": done - self.done_at_start, "status_at_end": status}
        if status not in ENDED:
            self.client.batches.cancel(self.id)
            deadline = time.monotonic() + self.timeout
            while status not in ENDED and time.monotonic() < deadline:
                time.sleep(0.5)
                status, _ = self._done()
        figures["status_after_cancel"] = status
        return figures
