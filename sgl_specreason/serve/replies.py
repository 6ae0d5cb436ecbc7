"""One request's runs answered: whole, or streamed as server-sent events, each chunk carrying the
index of its choice; the runs of a client that goes away are aborted."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import List, Optional, Sequence, Tuple

from fastapi import Request
from fastapi.responses import StreamingResponse

from sgl_specreason.serve.answering import start_all
from sgl_specreason.serve.errors import ApiError, api_error
from sgl_specreason.serve.jobs import Job
from sgl_specreason.serve.responses import ChatShape, CompletionShape, sse
from sgl_specreason.serve.runs import Finished, Piece, Run, Service, outputs
from sgl_specreason.serve.stats import TIMING_KEY

#: seconds between two looks at whether a waiting client is still there
DISCONNECT_POLL_S = 0.25


@asynccontextmanager
async def watching(request: Request, runs: Sequence[Run]):
    """Cancel ``runs`` if the client goes away while the block waits for them."""
    async def watch():
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await request.is_disconnected():
                for run in runs:
                    run.cancel()
                return

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


class Merged:
    """The pieces of several runs as they come, each with its job; a run's error is raised when
    it is reached."""

    def __init__(self, runs: Sequence[Run]):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._pump(run)) for run in runs]

    async def _pump(self, run: Run) -> None:
        try:
            async for item in outputs(run):
                await self.queue.put((run.job, item))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # handed to whoever reads the queue
            await self.queue.put((run.job, e))

    async def next(self) -> Tuple[Job, object]:
        job, item = await self.queue.get()
        if isinstance(item, BaseException):
            raise api_error(item, "messages" if job.is_chat else "prompt")
        return job, item

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


async def respond(service: Service, jobs: Sequence[Job], stream: bool, request: Request, chat: bool,
                  model: str, include_usage: bool = False, scored_by: Optional[str] = None):
    """Run ``jobs`` (the choices of one request) and answer: one object, or a stream."""
    runs = await start_all(service.start, jobs)
    timing = request.scope.get(TIMING_KEY)
    if timing is not None and len(runs) == 1:
        timing.run = runs[0]
    shape = (ChatShape if chat else CompletionShape)(jobs, model, int(time.time()), scored_by)
    merged = Merged(runs)

    def cancel() -> None:
        merged.close()
        for run in runs:
            run.cancel()

    try:
        async with watching(request, runs):
            if not stream:
                return shape.whole(await _collect(merged, jobs))
            # awaited here, so that a run that fails before its first piece gets its status code
            first = await merged.next()
    except asyncio.CancelledError:  # shutting down, and the grace period is over
        cancel()
        return ApiError(503, "the server is shutting down: the run was aborted", code="shutting_down").response()
    except BaseException:
        cancel()
        raise

    async def events():
        done = []
        # a choice's text not sent yet: its last piece, sent with its end (``outputs`` gives the
        # end right after it: the run asks the runtimes nothing more), so that the last tokens
        # carry finish_reason, as SGLang's server sends them; and, when logprobs are asked, text
        # without tokens (the blank line before an empty step), sent with the next tokens, since
        # clients read a token in every chunk. Every other piece goes out as soon as it is kept.
        held = {}
        try:
            job, item = first
            while True:
                if isinstance(item, Finished):
                    done.append((job, "", [], item))
                    yield sse(shape.last(job, item, alone=len(jobs) == 1 and not include_usage,
                                         piece=held.pop(job.index, None)))
                    if len(done) == len(jobs):
                        break
                else:
                    piece = joined(held.pop(job.index, None), item)
                    if piece.final or (job.logprobs is not None and not piece.logprobs):
                        held[job.index] = piece
                    else:
                        yield sse(shape.chunk(job, piece.text, piece.logprobs, reasoning=piece.reasoning))
                job, item = await merged.next()
            if include_usage or len(jobs) > 1:
                yield sse(shape.usage_chunk(sorted(done, key=lambda d: d[0].index)))
            yield sse("[DONE]")
        except ApiError as e:  # after the status line: the error goes in the stream
            if timing is not None:
                timing.stream_error = True
            yield sse(e.body())
            yield sse("[DONE]")
        finally:
            cancel()  # the client went away, or the stream ended early: nothing more is wanted

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def joined(earlier: Optional[Piece], piece: Piece) -> Piece:
    """Two pieces of one choice as one, ``earlier`` first (its thinking, if any, comes before
    any content of ``piece``: a reply does not think again once it answers).

    >>> joined(Piece("a", [["a", -1.0, []]]), Piece("b", [], final=True))
    Piece(text='ab', logprobs=[['a', -1.0, []]], reasoning='', final=True)
    """
    if earlier is None:
        return piece
    return Piece(earlier.text + piece.text, earlier.logprobs + piece.logprobs,
                 earlier.reasoning + piece.reasoning, piece.final)


async def _collect(merged: Merged, jobs: Sequence[Job]):
    """Every choice whole: (job, text, log-probabilities, end), in the order of the choices."""
    texts = {job.index: ["", []] for job in jobs}
    done = {}
    while len(done) < len(jobs):
        job, item = await merged.next()
        if isinstance(item, Finished):
            done[job.index] = (job, texts[job.index][0], texts[job.index][1], item)
        else:
            texts[job.index][0] += item.text
            texts[job.index][1] += item.logprobs
    return [done[job.index] for job in jobs]
