"""Resuming a batch: torn lines and finished ids (no runtime needed)."""

import json

from sgl_specreason.batch import finished_ids, repair_tail


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


def test_finished_ids_count_only_this_modes_results_without_error(tmp_path):
    path = tmp_path / "out.jsonl"
    lines = [
        {"id": "1", "mode": "specreason", "error": None},
        {"id": "2", "mode": "specreason", "error": "RuntimeServerError: HTTP 503"},
        {"id": "3", "mode": "base", "error": None},
        {"summary": {"task": "x"}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert finished_ids(path, "specreason") == {"1"}
    assert finished_ids(path, "base") == {"3"}
    assert finished_ids(tmp_path / "missing.jsonl", "base") == set()
