"""Two SGLang runtimes as a discrete-event simulation of continuous batching.

Each runtime runs one iteration at a time, as SGLang's scheduler does:
- if requests wait and fit, a **prefill** iteration admits as many as fit (KV-cache capacity and
  ``max_running``), taking ``prefill_s(new tokens, their prompts' tokens)``; each admitted
  request comes out of it with its first token (a judge, one token, is then done);
- otherwise a **decode** iteration gives every running request one more token, taking
  ``decode_s(batch, context tokens of the batch)``;
- a request holds KV-cache room for its whole context (prompt and all its output) from its
  admission to its end; one that would not fit waits, in arrival order: the waiting queue.

A client submits a request and is told when it ends (``Sim.call``); requests of the same client
and runtime share a cached prefix, so only their new prompt tokens are prefilled (as the radix
cache serves the rest). What the runtimes cost is a ``RuntimeCosts``: fitted to this CPU's
logs and records, or a GPU roofline (``eval.sim.costs``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional


@dataclass(frozen=True)
class RuntimeCosts:
    """Seconds of one iteration of one runtime.

    decode: ``decode_fixed + decode_per_seq·min(B, per_seq_until) + decode_per_ctx·T`` for a
    batch of B requests holding T context tokens in all, at least the compute bound
    ``compute_per_seq·B``; prefill: ``prefill_fixed + prefill_per_token·N + prefill_per_ctx·A``
    for N new prompt tokens in all, of requests whose prompts hold A tokens in all (cached or new:
    each request's prefill reads its whole prompt, what makes a judge on a long solution slow).
    ``request_s``: what a request costs outside the runtime's iterations (HTTP, tokenizing).
    ``contention``: how much longer an iteration takes when it does not run alone on the machine:
    the other runtime is in an iteration, or this runtime holds more than one request (running or
    waiting). Both share the machine's cores and memory bandwidth with the
    processes serving them (the servers' HTTP, tokenizing and detokenizing, the client).
    ``prefill_contention``: the same for a prefill iteration, where it differs (else ``contention``).
    """

    decode_fixed: float
    decode_per_seq: float
    decode_per_ctx: float
    prefill_fixed: float
    prefill_per_token: float
    request_s: float = 0.0
    compute_per_seq: float = 0.0
    kv_capacity: int = 10 ** 9  # tokens
    max_running: int = 10 ** 9
    contention: float = 0.0
    per_seq_until: int = 10 ** 9
    prefill_per_ctx: float = 0.0
    prefill_contention: Optional[float] = None

    def decode_s(self, batch: int, context: int) -> float:
        memory = (self.decode_fixed + self.decode_per_seq * min(batch, self.per_seq_until)
                  + self.decode_per_ctx * context)
        return max(memory, self.compute_per_seq * batch)

    def slowdown(self, prefill: bool) -> float:
        """How much longer an iteration takes when it does not run alone."""
        extra = self.prefill_contention if prefill and self.prefill_contention is not None else self.contention
        return 1 + extra

    def prefill_s(self, tokens: int, prompts: int = 0) -> float:
        return self.prefill_fixed + self.prefill_per_token * tokens + self.prefill_per_ctx * prompts


@dataclass
class Request:
    new_tokens: int  # prompt tokens to prefill (the rest is cached)
    context: int  # prompt tokens in all
    out_tokens: int  # tokens to generate (at least 1)
    done: Callable[[float, float], None]  # called with the time it ends and its busy share
    produced: int = 0
    arrived: float = 0.0
    busy: float = 0.0  # its share of the iterations it was in: seconds / batch size each

    @property
    def room(self) -> int:
        """KV-cache tokens it holds until it ends."""
        return self.context + self.out_tokens


class Runtime:
    """One runtime's scheduler: a waiting queue, a running batch, one iteration at a time."""

    def __init__(self, name: str, costs: RuntimeCosts, sim: "Sim"):
        self.name, self.costs, self.sim = name, costs, sim
        self.waiting: Deque[Request] = deque()
        self.running: List[Request] = []
        self.held = 0  # KV tokens held by running requests
        self.busy_until: Optional[float] = None
        self.busy_s = 0.0
        self.in_flight = 0  # requests submitted and not ended (waiting + running + in transit)

    def submit(self, request: Request) -> None:
        request.arrived = self.sim.now
        self.waiting.append(request)
        if self.busy_until is None:
            self.iterate()

    def saturated(self) -> bool:
        """Requests wait, or the running batch is full (what ``Endpoint.saturated`` reads)."""
        return bool(self.waiting) or len(self.running) >= self.costs.max_running

    def crowded(self, admitted: int) -> bool:
        """Whether the iteration about to start (``admitted`` requests just taken from the queue)
        shares the machine (``RuntimeCosts.contention``)."""
        if len(self.running) + admitted + len(self.waiting) > 1:
            return True
        return any(rt.busy_until is not None for rt in self.sim.runtimes.values() if rt is not self)

    def iterate(self) -> None:
        """Start the next iteration now, if there is work."""
        admitted = []
        while self.waiting and len(self.running) + len(admitted) < self.costs.max_running:
            head = self.waiting[0]
            if self.held + head.room > self.costs.kv_capacity and (self.running or admitted):
                break  # waits for room (a lone request too big for the cache runs anyway)
            admitted.append(self.waiting.popleft())
            self.held += head.room
        if admitted:
            seconds = self.costs.prefill_s(sum(r.new_tokens for r in admitted),
                                           sum(r.context for r in admitted))
            batch = admitted
        elif self.running:
            seconds = self.costs.decode_s(len(self.running), sum(r.context + r.produced for r in self.running))
            batch = self.running
        else:
            self.busy_until = None
            return
        if self.crowded(len(admitted)):
            seconds *= self.costs.slowdown(prefill=bool(admitted))
        self.busy_until = self.sim.now + seconds
        self.busy_s += seconds
        self.sim.at(self.busy_until, lambda: self.end_iteration(batch, admitted, seconds))

    def end_iteration(self, batch: List[Request], admitted: List[Request], seconds: float) -> None:
        now = self.sim.now
        for request in batch:
            request.produced += 1
            request.busy += seconds / len(batch)
        if admitted:
            self.running.extend(admitted)
        finished = [r for r in self.running if r.produced >= r.out_tokens]
        if finished:
            self.running = [r for r in self.running if r.produced < r.out_tokens]
            for request in finished:
                self.held -= request.room
                request.done(now, request.busy)
        self.iterate()


class Sim:
    """The clock and the events of both runtimes."""

    def __init__(self, costs: Dict[str, RuntimeCosts]):
        self.now = 0.0
        self._events: list = []
        self._order = itertools.count()
        self.runtimes = {name: Runtime(name, c, self) for name, c in costs.items()}

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), action))

    def call(self, runtime: str, new_tokens: int, context: int, out_tokens: int,
             then: Callable[[float, float], None]) -> None:
        """Send a request to ``runtime`` now (``request_s`` is spent half before it arrives and
        half after it ends); ``then(seconds, busy)`` runs when the reply is back, with the call's
        wall time and the busy time it added: its share of the runtime's iterations."""
        rt = self.runtimes[runtime]
        rt.in_flight += 1
        started = self.now

        def done(ended: float, busy: float) -> None:
            rt.in_flight -= 1
            self.at(ended + rt.costs.request_s / 2, lambda: then(self.now - started, busy))

        request = Request(max(0, new_tokens), max(1, context), max(1, out_tokens), done)
        self.at(self.now + rt.costs.request_s / 2, lambda: rt.submit(request))

    def run(self, until: float = float("inf")) -> None:
        while self._events and self._events[0][0] <= until:
            when, _, action = heapq.heappop(self._events)
            self.now = when
            action()
