"""The shapes of responses: OpenAI's chat and text completion objects and chunks, ``usage``,
and the ``specreason`` field."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.serve.jobs import Job
from sgl_specreason.serve.runs import Finished
from sgl_specreason.trace import BASE, DRAFT, ProblemResult


def usage(result: ProblemResult) -> dict:
    """OpenAI's usage of a run: the prompt as the run's first call read it, what the radix cache
    served of it, and the kept tokens.

    >>> usage(ProblemResult("1", "q", "specreason"))["total_tokens"]
    0
    """
    first = next((step.calls[0] for step in result.steps if step.calls), None)
    prompt = first.prompt_tokens if first else 0
    completion = sum(step.kept_tokens for step in result.steps)
    if result.answer_call is not None:
        completion += result.answer_call.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": first.cached_tokens if first else 0}}


def extension(result: ProblemResult, cfg: SpecReasonConfig, trace: bool = False) -> dict:
    """The ``specreason`` field of a response: what the run did."""
    totals = result.totals()
    kept = {DRAFT: totals.kept_draft_tokens, BASE: totals.kept_base_tokens}
    generated = {DRAFT: totals.draft_tokens, BASE: totals.base_tokens}
    out = {
        "judge": cfg.score_method,
        "threshold": cfg.threshold,
        "steps": {"total": totals.steps, "drafted": totals.judged_steps, "kept": totals.accepted_steps,
                  "rewritten": totals.judged_steps - totals.accepted_steps},
        "acceptance": totals.acceptance_rate,
        "judge_calls": totals.judge_calls,
        "tokens": {role: {"generated": generated[role], "kept": kept[role],
                          "prompt": totals.prompt_tokens.get(role, 0),
                          "cached": totals.cached_tokens.get(role, 0)} for role in (DRAFT, BASE)},
        "wasted_tokens": totals.wasted_tokens,
        "stop_reason": result.stop_reason,
        "wall_s": round(result.wall_s, 4),
    }
    if trace:
        out["trace"] = {"steps": [asdict(step) for step in result.steps],
                        "answer_call": asdict(result.answer_call) if result.answer_call else None}
    return out


class ChatShape:
    """Chat completion objects and chunks."""

    def __init__(self, job: Job, model: str, created: int):
        self.job, self.head = job, {"id": job.id, "created": created, "model": model}
        self.first = True

    def whole(self, text: str, end: Finished) -> dict:
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": end.finish_reason}],
                "usage": usage(end.result), "specreason": extension(end.result, self.job.cfg, self.job.trace)}

    def _chunk(self, delta: dict, finish: Optional[str]) -> dict:
        if self.first:
            delta, self.first = {"role": "assistant", **delta}, False
        return {**self.head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def piece(self, text: str) -> dict:
        return self._chunk({"content": text}, None)

    def last(self, end: Finished) -> dict:
        return {**self._chunk({}, end.finish_reason), "usage": usage(end.result),
                "specreason": extension(end.result, self.job.cfg, self.job.trace)}


class CompletionShape:
    """Text completion objects and chunks."""

    def __init__(self, job: Job, model: str, created: int):
        self.job, self.head = job, {"id": job.id, "object": "text_completion", "created": created, "model": model}

    def _choice(self, text: str, finish: Optional[str]) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def whole(self, text: str, end: Finished) -> dict:
        return {**self.head, "choices": [self._choice(text, end.finish_reason)], "usage": usage(end.result),
                "specreason": extension(end.result, self.job.cfg, self.job.trace)}

    def piece(self, text: str) -> dict:
        return {**self.head, "choices": [self._choice(text, None)]}

    def last(self, end: Finished) -> dict:
        return self.whole("", end)


def sse(payload) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
