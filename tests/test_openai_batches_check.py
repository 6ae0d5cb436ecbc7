"""The checks of eval.openai_batches on output files (no runtime)."""

import json

from sgl_specreason.eval.openai_batches import check, write_input


def line(custom_id, status=200):
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "error": None,
            "response": {"status_code": status, "request_id": "r", "body": {}}}


def test_the_input_cycles_the_general_requests_with_ids_of_their_own(tmp_path):
    ids = write_input(tmp_path / "in.jsonl", 30, 64)
    lines = [json.loads(x) for x in (tmp_path / "in.jsonl").read_text().splitlines()]
    assert len(set(ids)) == 30 and [x["custom_id"] for x in lines] == ids
    assert {x["url"] for x in lines} == {"/v1/chat/completions"} and lines[0]["body"]["max_tokens"] == 64


def test_lost_duplicated_and_unknown_lines_are_counted_and_shapes_compared():
    ids = ["a", "b", "c"]
    assert check([line("a"), line("b"), line("c")], ids) == {
        "lines": 3, "answered_200": 3, "matched": 3, "lost": 0, "duplicated": 0, "unknown": 0, "one_shape": True}
    odd = {"custom_id": "c", "response": None}
    got = check([line("a"), line("a", 500), line("x"), odd], ids)
    assert (got["lost"], got["duplicated"], got["unknown"], got["answered_200"], got["one_shape"]) == (1, 1, 1, 2, False)
