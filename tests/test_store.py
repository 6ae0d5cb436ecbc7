"""The result store every command writes through: torn tails, the index of what is done, appends."""

import json

from sgl_specreason.store import ResultStore, final_records, read_records, repair_tail


def test_repair_tail_cuts_only_a_torn_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    assert repair_tail(path) == 0  # no file yet
    whole = json.dumps({"id": "a", "mode": "base"}) + "\n"
    path.write_text(whole + '{"id": "b", "mo')
    assert repair_tail(path) == len('{"id": "b", "mo')
    assert path.read_text() == whole
    assert repair_tail(path) == 0 and path.read_text() == whole
    path.write_text('{"id": "only", "torn')  # the first line torn: nothing is left
    assert repair_tail(path) > 0 and path.read_bytes() == b""
    big = "x" * 200_000
    path.write_text(whole + big)  # a torn line longer than one read block
    assert repair_tail(path) == len(big) and path.read_text() == whole


def test_repair_tail_completes_a_whole_record_that_lost_only_its_newline(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = json.dumps({"id": "a", "mode": "base"})
    path.write_text(whole + "\n" + whole)
    assert repair_tail(path) == 0
    assert path.read_text() == whole + "\n" + whole + "\n"


def test_an_append_after_a_torn_line_is_read_back(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps({"id": "a", "mode": "base"}) + "\n" + '{"id": "b", "mo')
    told = []
    store = ResultStore(path, log=told.append)
    with store.append() as writer:
        writer.write({"id": "b", "mode": "base"})
    assert [r["id"] for r in read_records(path)] == ["a", "b"]
    assert told == [f"{path}: removed a torn last line (15 bytes) left by an interrupted run"]


def test_done_skips_errors_foreign_lines_and_records_without_the_field(tmp_path):
    path = tmp_path / "out.jsonl"
    lines = [{"id": "1", "mode": "base"}, {"id": "2", "mode": "base", "error": "RuntimeTimeoutError: ..."},
             {"summary": {"mode": "base"}}, [1, 2]]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    assert ResultStore(path).done(lambda r: r["id"], require="mode") == {"1"}
    assert ResultStore(tmp_path / "missing.jsonl").done(lambda r: r["id"], require="mode") == set()


def test_the_final_record_of_a_key_is_its_last_success_or_else_its_last_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    lines = [{"id": "a", "mode": "base", "error": "RuntimeTimeoutError: ..."},
             {"id": "b", "mode": "base", "try": 1},
             {"id": "a", "mode": "base", "try": 2},
             {"id": "b", "mode": "base", "error": "a later failure"},  # does not replace the success
             {"id": "c", "mode": "base", "error": "first"},
             {"summary": {"mode": "base"}},
             {"id": "a", "mode": "base", "try": 3},  # a later success does
             {"id": "c", "mode": "base", "error": "second"},
             {"mode": "base"}]  # no key: left out
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    final = ResultStore(path).final(lambda r: r.get("id"), require="mode")
    assert list(final) == ["a", "b", "c"]  # in the order each key first appears
    assert final["a"]["try"] == 3 and final["b"]["try"] == 1 and final["c"]["error"] == "second"
    assert final_records(read_records(path), lambda r: r.get("id")) == final
    # done: the keys whose final record succeeded
    assert ResultStore(path).done(lambda r: r.get("id"), require="mode") == {"a", "b"}
    assert ResultStore(tmp_path / "missing.jsonl").final(lambda r: r["id"], require="mode") == {}


def test_start_over_empties_the_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "out.jsonl"
    with ResultStore(path).append() as writer:
        writer.write({"n": 1})
    with ResultStore(path).append(start_over=True) as writer:
        writer.write({"n": 2})
    assert read_records(path, "n") == [{"n": 2}]
