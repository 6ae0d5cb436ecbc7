"""When to speculate a step: ``always`` (SpecReason as the paper runs it), ``never`` (the base
model writes every step, through the same program), or ``auto``, which decides at each step
whether drafting and judging it is cheaper than letting the base model write it.

``auto`` compares the expected cost of one step of L tokens both ways:

    speculate:  d·L + j + (1 − a)·b·L     draft it, judge it, and rewrite it if it is rejected
    base:       b·L                        the base model writes it

- d, b: cost per token of the draft and the base runtime on the calls just made, at the load
  each runtime has now (requests this process has in flight to it);
- j: cost of a judgement at that load;
- a: the share of judged steps kept lately, for this judge and threshold, read optimistically:
  its estimate plus one standard error (a few judged steps say little: one early rejection
  must not turn speculation off, and the bound tightens as steps are judged);
- L: the tokens of recent drafted steps.

What a cost is depends on whether a runtime is saturated: requests wait at it, or its running
batch is full (SGLang's own counts, ``Endpoint.saturated``).
- No runtime saturated: a cost is **seconds of latency**, the wall time of the call (queueing
  included). A step then takes its time from the problem that waits for it, and the runtimes
  have room for more work, so the faster choice is also the one that finishes problems sooner.
- Some runtime saturated: a cost is the **busy time the step adds to the saturated runtimes**,
  and latency is not counted. Throughput is then set by the busiest runtime, and a step pays
  in what it takes from it. Under continuous batching a request shares the runtime with the
  others in its batch, so the busy time one request adds is its share: the integral of dt/n
  over its life, n the requests in flight then (``RuntimeLoad.share_of``). The shares of all
  requests add up to the runtime's busy time; where a runtime's step time grows with the work
  batched (compute-bound: a CPU, or a GPU at large batch) the share is what the request adds,
  and where it does not, the runtime has room, is not saturated, and latency is the price. A
  step's cost is summed over the saturated runtimes only: time on a runtime that has room
  costs no throughput.

It optimises problems per second, not correct answers: accuracy enters only through a (a
rejected draft costs its rewrite); a rule's accuracy is the judge's and threshold's business.

Every figure is an exponentially weighted mean of what the program measured around its own
calls, shared by every problem that runs on the same pair of runtimes (``live_costs``). A
figure not yet known is learnt first: ``auto`` takes the choice that measures it. And a choice
whose figures have not been measured for ``PROBE_EVERY`` decisions is taken once (recorded as
a probe), so that both sides' figures stay current as the load changes: a base model that
writes no step while drafts pass, or drafts not written while the base model is cheaper, would
otherwise be judged on old figures. No constant here is tuned to a machine.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Collection, Dict, Hashable, Optional

#: the policies a config, a flag or a request can name
POLICIES = ("always", "never", "auto")

#: what a step's ``choice`` records
SPECULATE = "speculate"  # drafted and judged
BASE = "base"  # the base model wrote it, by the policy's choice
#: the other choice than the figures say, taken to measure it again (auto)
PROBE_SPECULATE = "probe-speculate"
PROBE_BASE = "probe-base"
FIRST = "first"  # the base model wrote it as one of the first ``first_n_base_steps``
#: the choices the policy makes (FIRST is the config's)
CHOICES = (SPECULATE, BASE, PROBE_SPECULATE, PROBE_BASE)

#: a side whose figures are this many decisions old is taken once, as a probe
PROBE_EVERY = 8
#: weight of the newest measurement in each running mean of a cost (costs follow the load)
WEIGHT = 0.25
#: judged steps the acceptance remembers (it belongs to the rule and the problems, not the load)
ACCEPTANCE_MEMORY = 32
#: the two runtimes, as ``saturated`` names them
DRAFT_RUNTIME, BASE_RUNTIME = "draft", "base"


@dataclass
class Mean:
    """An exponentially weighted running mean (None until the first value)."""

    value: Optional[float] = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - WEIGHT) * self.value + WEIGHT * x


@dataclass
class Rate:
    """The share of judged steps kept, over about the last ``ACCEPTANCE_MEMORY`` of them.

    >>> rate = Rate()
    >>> rate.add(False)
    >>> round(rate.estimate(), 3), round(rate.optimistic(), 3)  # one rejection: still unsure
    (0.333, 0.605)
    """

    kept: float = 0.0
    seen: float = 0.0

    def add(self, kept: bool) -> None:
        keep = 1 - 1 / ACCEPTANCE_MEMORY
        self.kept = self.kept * keep + kept
        self.seen = self.seen * keep + 1

    def estimate(self) -> float:
        """With one kept and one rejected step assumed before any was judged (Laplace)."""
        return (self.kept + 1) / (self.seen + 2)

    def optimistic(self) -> float:
        """The estimate plus one standard error."""
        a = self.estimate()
        return min(1.0, a + (a * (1 - a) / (self.seen + 2)) ** 0.5)


@dataclass
class ByLoad:
    """Running means of a cost, one per load (requests in flight to the runtime when the call
    began); read at a load, the mean of the nearest load measured.

    >>> cost = ByLoad()
    >>> cost.add(0, 1.0); cost.add(4, 3.0)
    >>> cost.at(1), cost.at(3), ByLoad().at(0)
    (1.0, 3.0, None)
    """

    means: Dict[int, Mean] = field(default_factory=dict)

    def add(self, load: int, x: float) -> None:
        self.means.setdefault(load, Mean()).add(x)

    def at(self, load: int) -> Optional[float]:
        if not self.means:
            return None
        return self.means[min(self.means, key=lambda n: (abs(n - load), n))].value


@dataclass
class Estimate:
    """The figures of one decision and what they say (both in seconds per step)."""

    speculate_s: Optional[float]
    base_s: Optional[float]
    #: "latency" (seconds a step takes) or "busy" (busy seconds it adds to saturated runtimes)
    pricing: str = "latency"


class LiveCosts:
    """What speculating and not speculating cost on one pair of runtimes, as just measured."""

    def __init__(self, draft_runtime=None, base_runtime=None):
        self.lock = threading.Lock()
        #: each runtime's backend, for its shared clock (``load``) and ``saturated()``; weakly
        #: held, as ``_shared`` holds its keys
        self.runtimes = {name: (None if backend is None else weakref.ref(backend))
                         for name, backend in ((DRAFT_RUNTIME, draft_runtime), (BASE_RUNTIME, base_runtime))}
        self.draft_s_per_token = ByLoad()
        self.base_s_per_token = ByLoad()
        self.judge_s = ByLoad()
        #: the same, as busy time added (each call's share of its runtime's busy time)
        self.draft_busy_per_token = ByLoad()
        self.base_busy_per_token = ByLoad()
        self.judge_busy = ByLoad()
        self.step_tokens = Mean()
        self.kept: Dict[Hashable, Rate] = {}  # acceptance per rule
        #: decisions since each side was last measured
        self.unmeasured = {SPECULATE: 0, BASE: 0}

    # -- what the program tells it ------------------------------------------------------------
    # Each takes the call's wall time (``seconds``, just ended) and its busy time added
    # (``busy``; None: read off the runtime's shared clock, or the wall time without one).
    def drafted(self, load: int, seconds: float, tokens: int, busy: Optional[float] = None) -> None:
        busy = self.share(DRAFT_RUNTIME, seconds, busy)
        if tokens > 0:
            with self.lock:
                self.draft_s_per_token.add(load, seconds / tokens)
                self.draft_busy_per_token.add(load, busy / tokens)
                self.step_tokens.add(tokens)
                self.unmeasured[SPECULATE] = 0

    def judged(self, load: int, seconds: float, rule: Hashable, kept: bool,
               busy: Optional[float] = None) -> None:
        busy = self.share(BASE_RUNTIME, seconds, busy)
        with self.lock:
            self.judge_s.add(load, seconds)
            self.judge_busy.add(load, busy)
            self.kept.setdefault(rule, Rate()).add(kept)

    def base_wrote(self, load: int, seconds: float, tokens: int, busy: Optional[float] = None) -> None:
        busy = self.share(BASE_RUNTIME, seconds, busy)
        if tokens > 0:
            with self.lock:
                self.base_s_per_token.add(load, seconds / tokens)
                self.base_busy_per_token.add(load, busy / tokens)
                self.unmeasured[BASE] = 0

    def share(self, runtime: str, seconds: float, busy: Optional[float] = None) -> float:
        """The busy time a call of ``seconds`` just ended added to ``runtime``."""
        if busy is not None:
            return busy
        load = getattr(self.runtime(runtime), "load", None)
        return load.share_of(seconds) if hasattr(load, "share_of") else seconds

    def runtime(self, name: str):
        """The backend of runtime ``name`` (None when not given or gone)."""
        ref = self.runtimes[name]
        return None if ref is None else ref()

    def saturated(self) -> frozenset:
        """The runtimes at which requests wait, or whose running batch is full, now."""
        readers = {name: getattr(self.runtime(name), "saturated", None) for name in self.runtimes}
        return frozenset(name for name, reader in readers.items() if reader is not None and reader())

    # -- the decision ---------------------------------------------------------------------------
    def estimate(self, rule: Hashable, draft_load: int, base_load: int,
                 saturated: Collection[str] = ()) -> Estimate:
        """Expected cost of the next step speculated and written by the base: seconds of
        latency with no runtime ``saturated``, else the busy seconds it adds to the saturated
        ones (the module's docstring says why). None for a side whose figures are not all known
        yet."""
        busy = bool(saturated)
        with self.lock:
            if busy:
                d, j = self.draft_busy_per_token.at(draft_load), self.judge_busy.at(base_load)
                b = self.base_busy_per_token.at(base_load)
            else:
                d, j = self.draft_s_per_token.at(draft_load), self.judge_s.at(base_load)
                b = self.base_s_per_token.at(base_load)
            length = self.step_tokens.value
            a = self.kept[rule].optimistic() if rule in self.kept else None
        pricing = "busy" if busy else "latency"
        if busy:  # time on a runtime with room costs no throughput
            d = 0.0 if DRAFT_RUNTIME not in saturated else d
            j, b = (0.0, 0.0) if BASE_RUNTIME not in saturated else (j, b)
        base_s = None if None in (b, length) else b * length
        if None in (d, j, a, base_s):
            return Estimate(None if None in (d, j, a, length) else d * length + j, base_s, pricing)
        return Estimate(d * length + j + (1 - a) * base_s, base_s, pricing)

    def choose(self, policy: str, rule: Hashable, draft_load: int, base_load: int,
               saturated: Optional[Collection[str]] = None) -> str:
        """``SPECULATE`` or ``BASE`` (or a probe of either) for the next step under ``policy``;
        ``saturated``: the saturated runtimes (None: asked of the runtimes now)."""
        if policy != "auto":
            return SPECULATE if policy == "always" else BASE
        est = self.estimate(rule, draft_load, base_load,
                            self.saturated() if saturated is None else saturated)
        if est.speculate_s is None:
            return SPECULATE  # learn what drafting and judging cost, and how often drafts pass
        if est.base_s is None:
            return BASE  # learn what the base model costs
        choice, other = (SPECULATE, BASE) if est.speculate_s < est.base_s else (BASE, SPECULATE)
        with self.lock:
            for side in self.unmeasured:
                self.unmeasured[side] += 1
            if self.unmeasured[other] < PROBE_EVERY:
                return choice
            self.unmeasured[other] = 0
        return PROBE_SPECULATE if other == SPECULATE else PROBE_BASE


def speculates(choice: str) -> bool:
    """Whether a step of this ``choice`` is drafted and judged."""
    return choice in (SPECULATE, PROBE_SPECULATE)


def reset() -> None:
    """Forget every pair of runtimes' figures (a load test starts each level from nothing)."""
    with _shared_lock:
        _shared.clear()


_shared: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def _root(backend):
    """The backend under any wrappers (a run's ``ScopedBackend`` wraps the shared endpoint)."""
    while getattr(backend, "inner", None) is not None:
        backend = backend.inner
    return backend


def live_costs(draft_backend, base_backend) -> LiveCosts:
    """The ``LiveCosts`` of a pair of runtimes, shared by every program that runs on them."""
    draft, base = _root(draft_backend), _root(base_backend)
    with _shared_lock:
        by_draft = _shared.setdefault(base, weakref.WeakKeyDictionary())
        costs = by_draft.get(draft)
        if costs is None:
            costs = by_draft[draft] = LiveCosts(draft, base)
        return costs


def load_of(backend) -> int:
    """Requests this process has in flight to ``backend``'s runtime (0 when it does not count)."""
    load = getattr(_root(backend), "load", None)
    return load.in_flight if load is not None else 0
