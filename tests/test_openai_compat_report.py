"""The report of SGLang's OpenAI-server suite run against serve: the count of passing cases, and
for each failing one its first failure line and why it fails."""

from sgl_specreason.eval.openai_compat import WHY, report


def test_the_report_counts_the_passes_and_says_why_each_failure_fails():
    records = [{"case": "test_chat_completion", "passed": True, "seconds": 3.0, "failure": ""},
               {"case": "test_penalty", "passed": False, "seconds": 1.5, "failure": "BadRequestError: a|b"},
               {"case": "test_new", "passed": False, "seconds": 2.0, "failure": "AssertionError"}]
    text = report(records, "python -m eval.openai_compat --suite s.py")
    assert "1 of 3 cases pass." in text
    assert "| test_penalty | FAIL | 1.5 | BadRequestError: a\\|b |" in text
    assert f"- `test_penalty`: {WHY['test_penalty']}" in text
    assert "- `test_new`: not known yet" in text and "`test_chat_completion`:" not in text


def test_rerunning_some_cases_keeps_the_others_in_their_place(tmp_path):
    from sgl_specreason.eval.openai_compat import merged

    path = tmp_path / "results.jsonl"
    path.write_text('{"case": "a", "passed": true}\n{"case": "b", "passed": false}\n')
    assert merged(path, [{"case": "b", "passed": True}, {"case": "c", "passed": True}]) == [
        {"case": "a", "passed": True}, {"case": "b", "passed": True}, {"case": "c", "passed": True}]
    assert merged(tmp_path / "none.jsonl", [{"case": "a"}]) == [{"case": "a"}]
