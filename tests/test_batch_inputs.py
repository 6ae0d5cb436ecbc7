"""Batch input lines (issue 31, part 5): a question, a conversation or a prompt per line, each
framed as its kind says unless the run's --framing is given; bad lines named by line and field,
the rest still read; the format of a file told from its first good line."""

import json

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.input_formats import FORMATS, InputFormat, format_of, register_format
from sgl_specreason.problems import read_jsonl
from sgl_specreason.runner import Monitor, run_problems


def write(tmp_path, *records, raw=()):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in records] + list(raw)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_three_kinds_of_line_and_the_framing_each_takes(tmp_path):
    path = write(tmp_path,
                 {"id": "q", "question": "2+2?", "answer": "4"},
                 {"id": "m", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
                 {"id": "p", "prompt": "Write a haiku."})
    got = read_jsonl(path)
    assert not got.bad
    q, m, p = got.problems
    assert (q.framing, q.question, q.answer) == (None, "2+2?", "4")  # the run's framing: paper by default
    assert m.framing == "plain" and m.messages == (("system", "Be brief."), ("user", "Hi"))
    assert p.framing == "plain" and p.messages == (("user", "Write a haiku."),)
    # --framing given: every line takes it
    assert {x.framing for x in read_jsonl(path, framing="paper").problems} == {"paper"}


def test_bad_lines_name_the_line_and_the_field_and_lose_nothing_else(tmp_path):
    path = write(tmp_path,
                 {"id": "ok", "prompt": "Hi"},
                 {"id": "both", "question": "2+2?", "messages": [{"role": "user", "content": "Hi"}]},
                 {"id": "neither", "text": "Hi"},
                 {"id": "tool", "messages": [{"role": "tool", "content": "{}"}, {"role": "user", "content": "Hi"}]},
                 {"id": "last", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
                 {"id": "img", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                 {"id": "num", "prompt": 3},
                 {"id": "ok2", "messages": [{"role": "user", "content": "Bye"}]})
    got = read_jsonl(path)
    assert [p.id for p in got.problems] == ["ok", "ok2"]
    errors = [b.error for b in got.bad]
    assert errors[0] == f"{path}:2: give one of 'question', 'messages' or 'prompt', got question and messages"
    assert errors[1] == f"{path}:3: give one of 'question', 'messages' or 'prompt', got none of them"
    assert errors[2].startswith(f"{path}:4: problem tool: messages[0].role: 'tool' is not supported")
    assert errors[3].startswith(f"{path}:5: ") and "last message must come from the user" in errors[3]
    assert errors[4].startswith(f"{path}:6: messages[0].content: only text parts")
    assert errors[5] == f"{path}:7: prompt: must be text, got int"


def test_a_first_line_in_no_format_is_bad_and_the_next_one_tells_the_format(tmp_path):
    path = write(tmp_path, {"text": "Hi"}, {"id": "a", "prompt": "Hi"}, raw=['["a list"]'])
    got = read_jsonl(path)
    assert [p.id for p in got.problems] == ["a"]
    assert got.bad[0].error.startswith(f"{path}:1: a line in none of the input formats: problems: ")
    assert got.bad[1].error == f"{path}:3: not a JSON object"


def test_another_format_is_one_registry_entry(tmp_path):
    # as OpenAI's Batch API lines will be added: claimed by their own fields, read by their own rule
    fmt = InputFormat("test-batch", "ticket and body",
                      lambda r: "ticket" in r,
                      lambda r, line: {"id": r["ticket"], "question": None, "messages": r["body"]["messages"]
                                       and [(m["role"], m["content"]) for m in r["body"]["messages"]],
                                       "framing": "plain"})
    register_format(fmt)
    try:
        path = write(tmp_path, {"ticket": "r1", "body": {"messages": [{"role": "user", "content": "Hi"}]}},
                     {"ticket": "r2", "body": {"messages": [{"role": "user", "content": "Bye"}]}})
        assert format_of({"ticket": "x"}) is fmt
        assert [(p.id, p.question) for p in read_jsonl(path).problems] == [("r1", "Hi"), ("r2", "Bye")]
    finally:
        del FORMATS["test-batch"]


def test_a_batch_of_mixed_lines_runs_each_under_its_framing(tmp_path):
    path = write(tmp_path, {"id": "q", "question": "2+2?"}, {"id": "p", "prompt": "Write a line."})
    draft = FakeRuntime("draft", lambda steps, fork: "so \\boxed{4}")
    base = FakeRuntime("base", lambda steps, fork: "so \\boxed{4}")
    monitor = Monitor(stream=None)
    results = run_problems(read_jsonl(path).problems, SpecReasonConfig(step_max_tokens=40), fake_roles(draft, base),
                           "specreason", monitor)
    assert [r.error for r in results] == [None, None]
    asked = [req.prompt for req in draft.requests if req.kind == "step"]
    assert any("Solve the following math problem" in p and "2+2?" in p for p in asked)
    assert any("Write a line." in p and "Solve the following" not in p for p in asked)
    # the output line keeps the reasoning, the reply and the whole text apart
    line = results[1].to_dict()
    assert {"reasoning", "content", "text"} <= set(line)
    assert line["reasoning"] == "" and line["content"] == "so \\boxed{4}" == line["text"]


@pytest.mark.parametrize("kind", ["question", "messages", "prompt"])
def test_an_empty_question_is_named_whatever_its_kind(tmp_path, kind):
    value = {"question": " ", "prompt": " ", "messages": [{"role": "user", "content": " "}]}[kind]
    got = read_jsonl(write(tmp_path, {"id": "e", kind: value}))
    assert not got.problems and "empty" in got.bad[0].error


def test_the_general_requests_are_plain_conversations_of_many_kinds():
    # eval/general_requests.jsonl: what a later measurement on real runtimes sends through serve
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "eval" / "general_requests.jsonl"
    got = read_jsonl(path)
    assert not got.bad and len(got.problems) >= 20
    assert {p.framing for p in got.problems} == {"plain"}
    kinds = {json.loads(line)["kind"] for line in path.read_text().splitlines()}
    assert {"writing", "explanation", "code", "sql", "advice", "summary", "translation", "follow-up"} <= kinds
    assert any(p.earlier for p in got.problems)  # multi-turn follow-ups
