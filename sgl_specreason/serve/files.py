"""The files of ``serve``'s ``/v1/files`` in its ``--data-dir``: a batch's input, uploaded, and its
output and error files, written by the batch. Each file is its content (``ID.jsonl``) and
OpenAI's file object (``ID.json``), the object written last and atomically, so that a file whose
upload a kill cut short is not listed.

A file is kept for ``keep_s`` seconds from its creation (``--files-keep-days``, 30 by default,
as OpenAI keeps batch files), or until it is deleted; expired files are removed when files are
next created or listed, and at start.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from sgl_specreason.serve.errors import ApiError

#: the purposes a file may be uploaded with (batch input), and those serve writes itself
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"


def write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` whole or not at all (a kill leaves the old one or the new)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def not_found(kind: str, given: str, param: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{given}'", param, f"{kind}_not_found")


class FileStore:
    """The files under ``root``, each kept ``keep_s`` seconds."""

    def __init__(self, root: Path, keep_s: float):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self.lock = threading.Lock()
        self.sweep()

    def content_path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.jsonl"

    def _meta_path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.json"

    def create(self, content: bytes, filename: str, purpose: str) -> dict:
        """A new file holding ``content``; its file object."""
        file_id = f"file-{uuid.uuid4().hex}"
        self.content_path(file_id).write_bytes(content)
        return self._register(file_id, filename, purpose)

    def adopt(self, path: Path, filename: str, purpose: str = OUTPUT_PURPOSE,
              keep_s: Optional[float] = None) -> dict:
        """``path`` (a batch's output, written in place) made a file; its file object."""
        file_id = f"file-{uuid.uuid4().hex}"
        os.replace(path, self.content_path(file_id))
        return self._register(file_id, filename, purpose, keep_s)

    def _register(self, file_id: str, filename: str, purpose: str, keep_s: Optional[float] = None) -> dict:
        now = int(time.time())
        keep = self.keep_s if keep_s is None else keep_s
        meta = {"id": file_id, "object": "file", "bytes": self.content_path(file_id).stat().st_size,
                "created_at": now, "expires_at": now + int(keep), "filename": filename, "purpose": purpose,
                "status": "processed", "status_details": None}
        write_json(self._meta_path(file_id), meta)
        self.sweep()
        return meta

    def get(self, file_id: str) -> dict:
        """The file object of ``file_id``; a 404 in OpenAI's shape if there is none."""
        path = self._meta_path(file_id)
        if "/" in file_id or not file_id.startswith("file-") or not path.exists():
            raise not_found("file", file_id, "file_id")
        return json.loads(path.read_text())

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        return self.content_path(file_id).read_bytes()

    def delete(self, file_id: str) -> dict:
        self.get(file_id)
        self._meta_path(file_id).unlink(missing_ok=True)  # first: a half-deleted file is not listed
        self.content_path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self) -> List[dict]:
        self.sweep()
        metas = [json.loads(p.read_text()) for p in self.root.glob("file-*.json")]
        return sorted(metas, key=lambda m: (m["created_at"], m["id"]), reverse=True)

    def sweep(self, now: Optional[float] = None) -> int:
        """Remove the files past their ``expires_at``; how many."""
        now = time.time() if now is None else now
        gone = 0
        with self.lock:
            for path in self.root.glob("file-*.json"):
                try:
                    meta: Dict = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if meta.get("expires_at", now + 1) <= now:
                    path.unlink(missing_ok=True)
                    self.content_path(meta["id"]).unlink(missing_ok=True)
                    gone += 1
        return gone
