"""The shapes of responses: OpenAI's chat and text completion objects and chunks, ``usage``,
and the ``specreason`` field."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional, Sequence, Tuple

from sgl_specreason.serve.jobs import Job
from sgl_specreason.serve.runs import Finished, Piece
from sgl_specreason.trace import BASE, DRAFT, ProblemResult


def usage(result: ProblemResult) -> dict:
    """OpenAI's usage of a run: the prompt as the run's first call read it, what the radix cache
    served of it, the kept tokens, and of those the thinking (``reasoning_tokens``: the kept
    steps of a run that thought; the closing answer is not thinking).

    >>> usage(ProblemResult("1", "q", "specreason"))["total_tokens"]
    0
    """
    first = next((step.calls[0] for step in result.steps if step.calls), None)
    prompt = first.prompt_tokens if first else 0
    steps = sum(step.kept_tokens for step in result.steps)
    completion = steps
    if result.answer_call is not None:
        completion += result.answer_call.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": first.cached_tokens if first else 0},
            "completion_tokens_details": {"reasoning_tokens": steps if result.reasoning else 0}}


def total_usage(done: Sequence[Tuple[Job, str, list, Finished]]) -> dict:
    """The usage of a response of several choices: their completion tokens summed, each prompt
    of the request counted once (the ``n`` runs of one prompt read it once, as OpenAI counts it)."""
    out = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "prompt_tokens_details": {"cached_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 0}}
    seen = set()
    for job, _, _, end in done:
        one = usage(end.result)
        out["completion_tokens"] += one["completion_tokens"]
        out["completion_tokens_details"]["reasoning_tokens"] += one["completion_tokens_details"]["reasoning_tokens"]
        if job.source not in seen:
            seen.add(job.source)
            out["prompt_tokens"] += one["prompt_tokens"]
            out["prompt_tokens_details"]["cached_tokens"] += one["prompt_tokens_details"]["cached_tokens"]
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


def extension(result: ProblemResult, job: Job, scored_by: Optional[str] = None) -> dict:
    """The ``specreason`` field of a choice: what its run did."""
    cfg = job.cfg
    if job.constraint is not None:
        out = {"routed": "base", "why": f"constrained decoding ({job.constraint.why}) is served by the "
                                        "base runtime alone, in one request; nothing is drafted",
               "stop_reason": result.stop_reason, "wall_s": round(result.wall_s, 4)}
        if job.logprobs is not None:
            out["logprobs_model"] = scored_by
        return out
    totals = result.totals()
    kept = {DRAFT: totals.kept_draft_tokens, BASE: totals.kept_base_tokens}
    generated = {DRAFT: totals.draft_tokens, BASE: totals.base_tokens}
    out = {
        "mode": result.mode,
        "judge": cfg.score_method,
        "threshold": cfg.threshold,
        "speculate": cfg.speculate,
        "steps": {"total": totals.steps, "drafted": totals.judged_steps, "kept": totals.accepted_steps,
                  "rewritten": totals.judged_steps - totals.accepted_steps},
        "acceptance": totals.acceptance_rate,
        "speculated_share": totals.speculated_share,
        "judge_calls": totals.judge_calls,
        "tokens": {role: {"generated": generated[role], "kept": kept[role],
                          "prompt": totals.prompt_tokens.get(role, 0),
                          "cached": totals.cached_tokens.get(role, 0)} for role in (DRAFT, BASE)},
        "wasted_tokens": totals.wasted_tokens,
        "stop_reason": result.stop_reason,
        "wall_s": round(result.wall_s, 4),
    }
    if job.logprobs is not None:
        out["logprobs_model"] = scored_by
    if job.trace:
        out["trace"] = {"steps": [asdict(step) for step in result.steps],
                        "answer_call": asdict(result.answer_call) if result.answer_call else None}
    return out


def chat_logprobs(entries: list) -> dict:
    """OpenAI's chat ``logprobs`` of tokens given as [text, log-prob, [[alternative, log-prob]]].

    >>> chat_logprobs([["Hi", -0.5, [["Hi", -0.5], ["Yo", -1.5]]]])["content"][0]["top_logprobs"][1]
    {'token': 'Yo', 'logprob': -1.5, 'bytes': [89, 111]}
    """
    def token(text, logprob):
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**token(text, lp), "top_logprobs": [token(t, l) for t, l in top]}
                        for text, lp, top in entries]}


def completion_logprobs(entries: list, offset: int, top: bool) -> dict:
    """The legacy completions ``logprobs`` of the same tokens, their text offsets counted from
    ``offset``."""
    offsets, at = [], offset
    for text, _, _ in entries:
        offsets.append(at)
        at += len(text)
    return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
            "top_logprobs": [{t: l for t, l in e[2]} for e in entries] if top else None,
            "text_offset": offsets}


def message(text: str, reasoning: Optional[str]) -> dict:
    """A chat reply's message: ``content``, and where the thinking is kept apart (``reasoning``
    not None), ``reasoning_content`` (null when the reply did not think), as SGLang's server
    with a reasoning parser writes it. Both are what a stream of the same reply sends, joined.

    >>> message("It is 4.", "I add."), message("Hi", None)
    ({'role': 'assistant', 'content': 'It is 4.', 'reasoning_content': 'I add.'}, {'role': 'assistant', 'content': 'Hi'})
    """
    if reasoning is None:
        return {"role": "assistant", "content": text}
    return {"role": "assistant", "content": text, "reasoning_content": reasoning if reasoning.strip() else None}


class ChatShape:
    """Chat completion objects and chunks, for the choices of one request."""

    def __init__(self, jobs: Sequence[Job], model: str, created: int, scored_by: Optional[str] = None):
        self.jobs, self.head = jobs, {"id": jobs[0].id, "created": created, "model": model}
        self.scored_by = scored_by
        self.started = set()

    def _logprobs(self, job: Job, entries: list) -> Optional[dict]:
        return None if job.logprobs is None else chat_logprobs(entries)

    def whole(self, done: Sequence[Tuple[Job, str, list, Finished]]) -> dict:
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": job.index, "message": message(text, end.reasoning),
                             "logprobs": self._logprobs(job, entries), "finish_reason": end.finish_reason}
                            for job, text, entries, end in done],
                "usage": total_usage(done),
                **self._extension(done)}

    def _extension(self, done) -> dict:
        parts = [extension(end.result, job, self.scored_by) for job, _, _, end in done]
        return {"specreason": parts[0] if len(parts) == 1 else parts}

    def chunk(self, job: Job, text: Optional[str], entries: list, finish: Optional[str] = None,
              reasoning: str = "") -> dict:
        delta = {} if text is None else {"content": text}
        if reasoning:  # thinking: its own field, and content only where the piece has some
            delta = {"reasoning_content": reasoning, **({"content": text} if text else {})}
        if job.index not in self.started:
            delta = {"role": "assistant", **delta}
            self.started.add(job.index)
        return {**self.head, "object": "chat.completion.chunk",
                "choices": [{"index": job.index, "delta": delta, "finish_reason": finish,
                             "logprobs": self._logprobs(job, entries) if text is not None else None}]}

    def last(self, job: Job, end: Finished, alone: bool, piece: Optional[Piece] = None) -> dict:
        """The chunk that ends a choice, on its last ``piece`` of text where it has one; alone
        (the only choice, and no separate usage chunk asked for): with the usage and the field."""
        if piece is not None:
            out = self.chunk(job, piece.text, piece.logprobs, end.finish_reason, reasoning=piece.reasoning)
        else:
            out = self.chunk(job, None, [], end.finish_reason)
            # no text, as SGLang's /v1 writes it: the fields of a delta, null (programs written
            # for SGLang read delta.reasoning_content of every chunk)
            out["choices"][0]["delta"].update(content=None, reasoning_content=None)
        if alone:
            out.update(usage=usage(end.result), specreason=extension(end.result, job, self.scored_by))
        return out

    def usage_chunk(self, done) -> dict:
        return {**self.head, "object": "chat.completion.chunk", "choices": [],
                "usage": total_usage(done), **self._extension(done)}


class CompletionShape(ChatShape):
    """Text completion objects and chunks, for the choices of one request."""

    def __init__(self, jobs: Sequence[Job], model: str, created: int, scored_by: Optional[str] = None):
        super().__init__(jobs, model, created, scored_by)
        self.head = {**self.head, "object": "text_completion"}
        self.sent = {}  # characters of each choice sent so far (its text offsets)

    def _choice(self, job: Job, text: str, entries: list, finish: Optional[str], offset: int) -> dict:
        logprobs = None if job.logprobs is None else completion_logprobs(entries, offset, job.logprobs > 0)
        return {"index": job.index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    def whole(self, done) -> dict:
        return {**self.head, "choices": [self._choice(job, (job.prompt if job.echo else "") + text,
                                                      (job.prompt_logprobs or []) + entries, end.finish_reason, 0)
                                         for job, text, entries, end in done],
                "usage": total_usage(done), **self._extension(done)}

    def chunk(self, job: Job, text: Optional[str], entries: list, finish: Optional[str] = None,
              reasoning: str = "") -> dict:
        text = text or ""
        if job.index not in self.started:
            self.started.add(job.index)
            if job.echo:
                text, entries = job.prompt + text, (job.prompt_logprobs or []) + entries
        offset = self.sent.get(job.index, 0)
        self.sent[job.index] = offset + len(text)
        return {**self.head, "choices": [self._choice(job, text, entries, finish, offset)]}

    def last(self, job: Job, end: Finished, alone: bool, piece: Optional[Piece] = None) -> dict:
        out = self.chunk(job, piece.text if piece else "", piece.logprobs if piece else [], end.finish_reason)
        if alone:
            out.update(usage=usage(end.result), specreason=extension(end.result, job, self.scored_by))
        return out

    def usage_chunk(self, done) -> dict:
        return {**self.head, "choices": [], "usage": total_usage(done),
                **self._extension(done)}


def sse(payload) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
