"""The routes of OpenAI's Files and Batch APIs on ``serve``: ``/v1/files`` (upload, retrieve,
content, delete, list) and ``/v1/batches`` (create, retrieve, list, cancel), in OpenAI's shapes,
so that the unchanged ``openai`` client's ``files.create``, ``batches.create``,
``batches.retrieve``, ``batches.cancel`` and ``files.content`` work. The API key applies as on
every route; without ``--data-dir`` they answer a 404 that names it."""

from __future__ import annotations

import asyncio
from typing import Callable, Dict, Optional

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from sgl_specreason.serve.batches import Batches, public
from sgl_specreason.serve.errors import ApiError
from sgl_specreason.serve.files import UPLOAD_PURPOSES, FileStore
from sgl_specreason.serve.runs import ServeSettings


class BatchCreate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: Optional[Dict[str, str]] = None
    #: how long the output and error files are kept: {"anchor": "created_at", "seconds": N}
    output_expires_after: Optional[Dict[str, object]] = None


def _keep_s(expires: Optional[dict]) -> Optional[int]:
    if expires is None:
        return None
    seconds = expires.get("seconds")
    if expires.get("anchor") != "created_at" or not isinstance(seconds, int) or not 3600 <= seconds <= 30 * 86400:
        raise ApiError(400, "output_expires_after: {\"anchor\": \"created_at\", \"seconds\": 3600 to 2592000}",
                       "output_expires_after")
    return seconds


def batch_router(settings: ServeSettings, check_key: Callable[[Request], None],
                 state: Callable[[], Optional[Batches]]) -> APIRouter:
    """The routes; ``state()``: the server's batches (None without ``--data-dir``), whose
    ``files`` hold the files."""
    router = APIRouter()

    def batches(request: Request) -> Batches:
        check_key(request)
        found = state()
        if found is None:
            raise ApiError(404, "this server keeps no files or batches: start serve with --data-dir DIR",
                           code="batches_not_enabled")
        return found

    def files(request: Request) -> FileStore:
        return batches(request).files

    @router.post("/v1/files")
    async def create_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)):
        store = files(request)
        if purpose not in UPLOAD_PURPOSES:
            raise ApiError(400, f"purpose: {purpose!r}; serve takes files of purpose "
                                f"{', '.join(UPLOAD_PURPOSES)} (OpenAI Batch input)", "purpose")
        content = await file.read(settings.max_file_bytes + 1)
        if len(content) > settings.max_file_bytes:
            raise ApiError(413, f"file: larger than {settings.max_file_bytes} bytes (--max-file-bytes)", "file")
        return await asyncio.to_thread(store.create, content, file.filename or "upload.jsonl", purpose)

    @router.get("/v1/files")
    async def list_files(request: Request, purpose: Optional[str] = None):
        metas = [m for m in files(request).list() if purpose is None or m["purpose"] == purpose]
        return {"object": "list", "data": metas, "has_more": False}

    @router.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str, request: Request):
        return files(request).get(file_id)

    @router.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request):
        content = await asyncio.to_thread(files(request).content, file_id)
        return Response(content, media_type="application/jsonl")

    @router.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request):
        return files(request).delete(file_id)

    @router.post("/v1/batches")
    async def create_batch(body: BatchCreate, request: Request):
        return public(batches(request).create(body.input_file_id, body.endpoint, body.completion_window,
                                              body.metadata, _keep_s(body.output_expires_after)))

    @router.get("/v1/batches")
    async def list_batches(request: Request, after: Optional[str] = None, limit: int = Query(20, ge=1, le=100)):
        every = [public(b) for b in batches(request).list()]
        start = next((i + 1 for i, b in enumerate(every) if b["id"] == after), 0) if after else 0
        page = every[start:start + limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(every)}

    @router.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str, request: Request):
        return public(batches(request).get(batch_id))

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request):
        return public(batches(request).cancel(batch_id))

    return router
