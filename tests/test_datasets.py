import json

import pytest

from sgl_specreason.eval import datasets
from sgl_specreason.errors import InputError


@pytest.mark.parametrize("name,count,kind", [
    ("gsm8k", 1319, "number"), ("math500", 500, "math"), ("aime2024", 30, "math"), ("aime2025", 15, "math"),
])
def test_builtin_sets_come_from_their_packages(name, count, kind):
    problems = datasets.load(name)
    assert len(problems) == count
    assert all(p.kind == kind and p.dataset == name and p.problem.answer for p in problems)
    assert len({p.problem.id for p in problems}) == count


def test_offset_and_count():
    got = datasets.load("gsm8k", num_questions=3, offset=5)
    assert [p.problem.id for p in got] == ["gsm8k-5", "gsm8k-6", "gsm8k-7"]
    assert got[0].problem.answer.isdigit()


def write(tmp_path, records):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_choices_are_shuffled_with_a_fixed_seed(tmp_path):
    records = [{"id": f"q{i}", "question": f"pick {i}", "choices": ["right", "w1", "w2", "w3"], "answer": "right"}
               for i in range(20)]
    path = write(tmp_path, records)
    first = datasets.load(str(path), seed=3)
    again = datasets.load(str(path), seed=3)
    assert [p.problem.choices for p in first] == [p.problem.choices for p in again]
    letters = {p.problem.answer for p in first}
    assert len(letters) > 1, "the right answer must not always be A"
    for p in first:
        assert p.kind == "choice"
        assert p.problem.choices["ABCD".index(p.problem.answer)] == "right"


def test_answer_may_be_a_letter(tmp_path):
    path = write(tmp_path, [{"question": "q", "choices": ["x", "y"], "answer": "B"}])
    p = datasets.load(str(path))[0]
    assert p.problem.choices[ord(p.problem.answer) - ord("A")] == "y"


@pytest.mark.parametrize("line,message", [
    ("not json", ":2: not a JSON object"),
    ('{"question": "q"}', ":2: missing field 'answer'"),
    ('{"answer": "1"}', ":2: missing field 'question'"),
    ('{"question": " ", "answer": "1"}', ":2: problem .* empty"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "z"}', ":2: 'answer' must be one of the choices"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, ['{"question": "fine", "answer": "1"}', line])
    with pytest.raises(InputError, match="mine.jsonl" + message):
        datasets.load(str(path))


def test_unknown_dataset():
    with pytest.raises(InputError, match="unknown data set 'mnist'"):
        datasets.load("mnist")


def test_demo_problems_are_the_same_gsm8k_records():
    from sgl_specreason.data import gsm8k

    demo = gsm8k(num_questions=2, offset=1)
    assert [p.id for p in demo] == ["gsm8k-1", "gsm8k-2"]
    assert [p.question for p in demo] == [p.problem.question for p in datasets.load("gsm8k", 2, 1)]
    assert demo[0].answer == "3"
