import pytest

from sgl_specreason.answers import extract_answer, gsm8k_reference, is_correct, last_boxed
from sgl_specreason.errors import InputError
from sgl_specreason.grading import CHOICE, grade
from sgl_specreason.problems import make_problem, read_jsonl


@pytest.mark.parametrize("question,message", [
    ("", "question is empty"),
    ("   \n\t", "question is empty"),
    (b"caf\xe9 \xff", "not valid UTF-8 .bad byte at offset 3"),
    (None, "must be text, got NoneType"),
    ("a\x00b", "NUL"),
])
def test_bad_questions_get_one_clear_message(question, message):
    with pytest.raises(InputError, match=message):
        make_problem(question, id="p7")
    with pytest.raises(InputError, match="problem p7"):
        make_problem(question, id="p7")


def test_utf8_bytes_and_choices_are_accepted():
    p = make_problem("Quelle est la réponse ?".encode(), id="x", answer=4, choices=["a", "b"])
    assert p.question.startswith("Quelle") and p.answer == "4" and p.choices == ("a", "b")
    with pytest.raises(InputError, match="choices"):
        make_problem("q", choices=["only one"])


def test_jsonl_bad_lines_are_reported_with_their_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"question": "1+1?", "answer": "2"}\n'
        b'not json\n'
        b'\n'
        b'{"q": "missing field"}\n'
        b'{"question": "   "}\n'
        b'{"question": "\xff\xfe"}\n'
        b'{"id": "last", "question": "2+2?"}\n'
        b'{"id": "last", "question": "3+3?"}\n'
    )
    got = read_jsonl(path)
    assert [p.question for p in got.problems] == ["1+1?", "2+2?"]
    assert got.problems[1].id == "last"
    errors = [b.error for b in got.bad]
    assert errors[0].startswith(f"{path}:2: not JSON")
    assert errors[1] == f"{path}:4: give one of 'question', 'messages' or 'prompt', got none of them"
    assert errors[2].startswith(f"{path}:5: ") and "empty" in errors[2]
    assert errors[3].startswith(f"{path}:6: ") and "UTF-8" in errors[3]
    assert errors[4] == f"{path}:8: duplicate id 'last' (first on line 7)"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="cannot read problems file .*nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_answer_extraction():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{3}{4}}.") == "\\frac{3}{4}"
    assert last_boxed("\\boxed{{a}{b}}") == "{a}{b}"
    assert last_boxed("\\boxed 5.") == "5"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None
    assert extract_answer("so\nAnswer: 42.") == "42"
    assert extract_answer("5. **Final Answer:**\n - The final answer is $50,000.") == "The final answer is $50,000"
    assert is_correct(extract_answer("**Final Answer:** $50,000."), "50000")
    assert extract_answer("no answer here") is None


def test_grading_of_numbers_and_letters():
    assert gsm8k_reference("blah\n#### 1,234") == "1234"
    assert is_correct("1,234", "1234")
    assert is_correct("\\$18", "18")
    assert is_correct("18 \\text{ dollars}", "18")
    assert not is_correct("17", "18")
    assert grade("Answer: (B)", "B", CHOICE).correct
    assert not grade("Answer: A", "B", CHOICE).correct
