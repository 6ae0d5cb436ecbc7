"""Corrupted twins of steps that hold no arithmetic (prose, code, advice), for measuring how well a
judge tells a drafted step from a wrong one where ``eval.corrupt``'s number edits do not apply.

Each twin differs from its original the way a small model's step goes wrong in text:

- ``negation``: one polar word flips (``is`` -> ``is not``, ``always`` -> ``never``, ``before``
  -> ``after``): the step now says the opposite;
- ``swap``: two different content words (four letters or more, identifiers in code) trade
  places: the vocabulary stays, the meaning or the code breaks;
- ``off-topic``: the step is replaced by a step drafted for another request (a draft that lost
  the thread);
- ``repeat``: the step is replaced by the step before it, written again (a draft caught in a
  loop).

Everything is deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from typing import Dict, List, Optional, Sequence

from sgl_specreason.eval.corrupt import Pair

KINDS = ("negation", "swap", "off-topic", "repeat")

_PAIRS = [("is", "is not"), ("are", "are not"), ("can", "cannot"), ("will", "will not"),
          ("should", "should not"), ("does", "does not"), ("do", "do not"), ("always", "never"),
          ("increase", "decrease"), ("increases", "decreases"), ("more", "less"), ("before", "after"),
          ("true", "false"), ("best", "worst"), ("higher", "lower"), ("add", "remove"),
          ("first", "last"), ("larger", "smaller"), ("easy", "hard"), ("good", "bad"),
          ("include", "exclude"), ("with", "without"), ("open", "close"), ("start", "end")]
#: each polar word and what it flips to (both ways; "is not" -> "is" first, so it is not read as "is")
FLIPS: Dict[str, str] = {**{b: a for a, b in _PAIRS}, **dict(_PAIRS)}
_POLAR = re.compile(r"\b(" + "|".join(sorted(map(re.escape, FLIPS), key=len, reverse=True)) + r")\b",
                    re.IGNORECASE)
_WORD = re.compile(r"\b[A-Za-z_][A-Za-z_]{3,}\b")


def _cased(new: str, like: str) -> str:
    return new[0].upper() + new[1:] if like[:1].isupper() else new


def negate(step: str, rng: random.Random) -> Optional[str]:
    """``step`` with one seeded polar word flipped, or None when it has none.

    >>> negate("Water is wet.", random.Random(0))
    'Water is not wet.'
    >>> negate("It is not late.", random.Random(0))
    'It is late.'
    """
    found = list(_POLAR.finditer(step))
    if not found:
        return None
    m = rng.choice(found)
    return step[:m.start()] + _cased(FLIPS[m.group().lower()], m.group()) + step[m.end():]


def swap_words(step: str, rng: random.Random) -> Optional[str]:
    """``step`` with two different seeded words of four letters or more traded, or None.

    >>> swap_words("Sort the list, then print the first item.", random.Random(1))
    'Sort the item, then print the first list.'
    """
    words = list(_WORD.finditer(step))
    if len({w.group().lower() for w in words}) < 2:
        return None
    a = rng.choice(words)
    b = rng.choice([w for w in words if w.group().lower() != a.group().lower()])
    first, second = sorted((a, b), key=lambda m: m.start())
    return (step[:first.start()] + second.group() + step[first.end():second.start()] + first.group()
            + step[second.end():])


def corrupt(step: str, kind: str, earlier: Sequence[str], others: Sequence[str],
            rng: random.Random) -> Optional[str]:
    """The twin of ``step`` of ``kind``, or None where it does not apply. ``earlier``: the steps
    kept before it; ``others``: steps drafted for other requests."""
    if kind not in KINDS:
        raise ValueError(f"corruption kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "negation":
        return negate(step, rng)
    if kind == "swap":
        return swap_words(step, rng)
    if kind == "off-topic":
        return rng.choice(others) if others else None
    return earlier[-1] if earlier and earlier[-1].strip() != step.strip() else None


def make_pairs(drafts: Sequence[dict], seed: int = 0, kinds: Sequence[str] = KINDS) -> List[Pair]:
    """One pair per (request, kind) that applies: a seeded drafted step of the request and its
    twin. ``drafts`` are dicts ``{"request", "question", "index", "earlier", "step"}`` (the
    question as the models are asked it, the kept steps before the draft, the draft)."""
    by_request: Dict[str, List[dict]] = {}
    for d in drafts:
        by_request.setdefault(d["request"], []).append(d)
    pairs = []
    for request, own in by_request.items():
        others = [d["step"] for d in drafts if d["request"] != request]
        for kind in kinds:
            rng = random.Random(f"{seed}:{request}:{kind}")
            order = list(own)
            rng.shuffle(order)
            for d in order:
                twin = corrupt(d["step"], kind, d["earlier"], others, rng)
                if twin is not None and twin.strip() != d["step"].strip():
                    pairs.append(Pair(f"{request}-s{d['index']}-{kind}", request, d["question"],
                                      list(d["earlier"]), d["step"], twin, kind))
                    break
    return pairs
