"""The SpecReason step with work begun on a guess while the step is judged.

- ``cfg.pipeline``: the next step's drafts, as if this step will be kept;
- ``cfg.race_base_step``: the base model's own step, as if this one will not.

The guess that proves wrong is aborted, and what it cost stays in the trace as "wasted" calls.
The step itself is the plain one (``programs.steps.Steps``), in the same order.
"""

from __future__ import annotations

import time
from typing import List, Optional

from sgl_specreason.programs.steps import Steps, tokens_of
from sgl_specreason.calls import Pending, start
from sgl_specreason.speculation import speculates
from sgl_specreason.trace import BASE, DRAFT, Call, Step


class Overlapped(Steps):
    def __init__(self, draft, base, ctx, cfg):
        super().__init__(draft, base, ctx, cfg)
        self.ahead: Optional[Pending] = None  # the next step's drafts
        self.rival: Optional[Pending] = None  # the base model's own step
        self.last: Optional[Step] = None  # the latest step: what work aborted later is charged to

    def next(self, texts: List[str], kept: int) -> Step:
        started = time.perf_counter()
        limit = self.room(kept)
        choice = self.choose(texts)
        if not speculates(choice):
            wasted = self.drop("ahead", DRAFT)  # drafted on a guess this step will not use
            step = self.base_writes(texts, limit)
            step.calls += wasted
        else:
            # 1. the draft model writes the step, unless it was drafted while the last was judged
            drafts = self.ahead.result() if self.ahead else self.drafts(texts, limit)
            self.ahead = None
            if self.cfg.pipeline:  # guess: this step is kept
                self.ahead = start(self.drafts, texts + [self.ctx.tidy(drafts[0][0])],
                                   self.room(kept + tokens_of(drafts[0])))
            if self.cfg.race_base_step:  # guess: it is not
                self.rival = start(self.base_reply, texts, limit)
            # 2. the base model scores it
            step = self.judged(texts, drafts)
            # 3. keep it, or the base model writes the step itself; drop the wrong guess
            if step.score < self.cfg.threshold:
                step.calls += self.drop("ahead", DRAFT)
                reply, self.rival = self.rival and self.rival.result(), None
                self.rewrite(step, texts, limit, reply)
            else:
                step.calls += self.drop("rival", BASE)
        self.last = step
        step.choice = choice
        step.wall_s = time.perf_counter() - started
        return step

    def close(self) -> None:
        """Stopped (or failed) with work under way that no step will use."""
        wasted = self.drop("ahead", DRAFT) + self.drop("rival", BASE)
        if self.last is not None:
            self.last.calls += wasted

    def drop(self, which: str, role: str) -> List[Call]:
        """Abort the guess ``which`` ("ahead" or "rival"); its calls, as "wasted"."""
        pending = getattr(self, which)
        setattr(self, which, None)
        if pending is None:
            return []
        done = pending.cancel()
        replies = done if isinstance(done, list) else [done] if done else []
        return [Call.from_meta(role, "wasted", meta) for _, meta in replies]
