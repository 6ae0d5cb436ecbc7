"""The general-request measurement and its judge benchmark, on records whose answer is known: the
text corruptions, the drafts read off serve's traces, a plain conversation judged on a scripted
fake runtime, and the report's counts against the targets."""

import random

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.eval.corrupt_text import KINDS, corrupt, make_pairs, negate, swap_words
from sgl_specreason.eval.general_judges import drafted_steps
from sgl_specreason.eval.datasets import general_requests as load_requests
from sgl_specreason.eval.general_requests import record, report, summary
from sgl_specreason.eval.judge_bench import build_report, judge_pair_step
from sgl_specreason.framing import PLAIN, frame

REQUESTS = load_requests()


def test_the_committed_requests_are_twenty_or_more_and_not_math():
    assert len(REQUESTS) >= 20 and len({r["id"] for r in REQUESTS}) == len(REQUESTS)
    kinds = {r["kind"] for r in REQUESTS}
    assert {"writing", "explanation", "code", "advice", "summary", "translation", "follow-up"} <= kinds
    assert any(len(r["messages"]) > 2 for r in REQUESTS)  # a multi-turn follow-up
    assert all(r["messages"][-1]["role"] == "user" for r in REQUESTS)


@pytest.mark.parametrize("seed", range(20))
def test_negation_flips_one_polar_word_and_nothing_else(seed):
    step = "The cache is warm, so the second call will be faster than the first."
    twin = negate(step, random.Random(seed))
    assert twin != step
    diff = [w for w in twin.split() if w not in step.split()] + [w for w in step.split() if w not in twin.split()]
    assert 1 <= len(diff) <= 2  # "is" -> "is not", "will" -> "will not", "first" -> "last", ...
    assert negate("Plain words here.", random.Random(seed)) is None


@pytest.mark.parametrize("seed", range(20))
def test_swap_keeps_the_words_and_changes_their_order(seed):
    step = "def reverse(words): return ' '.join(reversed(words.split()))"
    twin = swap_words(step, random.Random(seed))
    assert twin != step and sorted(twin) == sorted(step)
    assert swap_words("A cat, a cat.", random.Random(seed)) is None  # one distinct long word


def test_off_topic_and_repeat_take_other_steps():
    rng = random.Random(0)
    assert corrupt("Leaves fall.", "off-topic", [], ["SELECT 1;"], rng) == "SELECT 1;"
    assert corrupt("Leaves fall.", "off-topic", [], [], rng) is None
    assert corrupt("Then more.", "repeat", ["First.", "Second."], [], rng) == "Second."
    assert corrupt("Second.", "repeat", ["Second."], [], rng) is None  # a twin equal to its original
    with pytest.raises(ValueError, match="corruption kind must be one of"):
        corrupt("x", "numbers", [], [], rng)


def reply(content, finish="stop", stop_reason="ended", drafted=2, kept=1, trace=None):
    return {"choices": [{"message": {"content": content, "reasoning_content": None}, "finish_reason": finish}],
            "specreason": {"stop_reason": stop_reason, "steps": {"drafted": drafted, "kept": kept},
                           "acceptance": kept / drafted if drafted else None,
                           "judge": "likelihood-numbers", "threshold": 9.0, "trace": trace},
            "usage": {"completion_tokens": 40, "completion_tokens_details": {"reasoning_tokens": 0}}}


TRACE = {"steps": [{"text": "Leaves fall.", "draft_text": None},
                   {"text": "They are red, and they drift down before the snow.",
                    "draft_text": "They are red, and they drift down before the snow."},
                   {"text": "Base wrote this.", "draft_text": "A draft the judge refused is still a draft."}]}


def records():
    poem, email = REQUESTS[0], REQUESTS[1]
    return [record(poem, "specreason", reply("Leaves fall.\n\nThey are red.", trace=TRACE), 12.0),
            record(poem, "never", reply("Leaves fall.", drafted=0, kept=0), 9.0),
            record(email, "specreason", reply("x " * 300 + "\\boxed{no}", finish="length", stop_reason="budget"), 30.0),
            record(email, "never", {"error": "HTTP 500: boom"}, 1.0)]


def test_summary_counts_what_the_targets_ask():
    s = summary(records())
    assert s["specreason"]["replies"] == 2 and s["specreason"]["ended"] == 1 and s["specreason"]["capped"] == 1
    assert s["specreason"]["boxed"] == 1 and s["never"]["errors"] == 1 and s["never"]["ended"] == 1
    assert s["specreason"]["drafted_steps"] == 4 and s["specreason"]["kept_drafts"] == 2
    text = report(records(), "python -m eval.general_requests")
    assert "| poem-autumn | writing | specreason | stop (ended) | no | 40 (0) | 12.0 | 2 / 1 | 0.50 |" in text
    assert "| email-decline | writing | specreason | length (budget) | YES |" in text
    assert "error: HTTP 500" in text and "likelihood-numbers >= 9" in text


def test_a_way_not_sent_has_no_row_in_the_totals():
    text = report([r for r in records() if r["way"] == "specreason"], "python -m eval.general_requests")
    assert "| specreason | 2 | 0 | 1 (50%) | 1 | 1 |" in text
    assert "| never |" not in text


def test_keep_prefix_is_reported_beside_specreason_with_the_draft_tokens_its_rewrites_kept():
    poem = REQUESTS[0]
    rewritten = {"steps": [{"text": "Leaves fall slowly.", "draft_text": "Leaves fall up.", "lead_tokens": 2}]}
    rows = records() + [record(poem, "keep-prefix", reply("Leaves fall slowly.", kept=1, trace=rewritten), 8.0)]
    s = summary(rows)
    assert (s["keep-prefix"]["leads"], s["keep-prefix"]["lead_tokens"]) == (1, 2)
    assert s["specreason"]["leads"] == 0
    text = report(rows, "python -m eval.general_requests --ways specreason keep-prefix")
    assert "| poem-autumn | writing | keep-prefix | stop (ended) | no | 40 (0) | 8.0 | 2 / 1 (+ 2 lead tokens) |" in text
    assert "keep-prefix: 1 of its 1 rejected drafts kept a start (2 draft tokens in all)" in text
    assert "specreason over keep-prefix on the same requests: 5.25x" in text  # (12 + 30) / 8
    assert "keep-prefix:" not in report(records(), "python -m eval.general_requests")


def test_the_drafts_are_every_drafted_step_with_what_was_kept_before_it():
    drafts = drafted_steps(records())
    assert [(d["request"], d["index"]) for d in drafts] == [("poem-autumn", 1), ("poem-autumn", 2)]
    assert drafts[1]["earlier"] == ["Leaves fall.", "They are red, and they drift down before the snow."]
    assert drafts[1]["step"] == "A draft the judge refused is still a draft."
    assert drafts[0]["messages"] == REQUESTS[0]["messages"]


def test_pairs_are_seeded_and_one_per_request_and_kind():
    drafts = [{**d, "question": "q"} for d in drafted_steps(records())]
    drafts.append({"request": "other", "question": "q", "index": 0, "earlier": [], "step": "SELECT name FROM t;"})
    pairs = make_pairs(drafts, seed=3)
    assert pairs == make_pairs(drafts, seed=3)
    assert {p.kind for p in pairs if p.problem_id == "poem-autumn"} == set(KINDS)
    assert len({(p.problem_id, p.kind) for p in pairs}) == len(pairs)
    assert all(p.corrupted.strip() != p.original.strip() for p in pairs)
    off = next(p for p in pairs if p.problem_id == "poem-autumn" and p.kind == "off-topic")
    assert off.corrupted == "SELECT name FROM t;"


def test_a_plain_conversation_is_judged_by_every_judge_and_reported_per_kind():
    base = FakeRuntime("base", lambda steps, fork: "b", score=lambda text: 3 if " not " in text else 8)
    roles = fake_roles(base, base)
    question = frame([("user", "Is ice cold?")], PLAIN, templates=[roles["base"].template])
    from sgl_specreason.eval.corrupt import Pair
    pair = Pair("ice-s0-negation", "ice", question, [], "Ice is cold.", "Ice is not cold.", "negation")
    out = [judge_pair_step(roles["base"], pair, v, SpecReasonConfig(seed=0)) for v in ("original", "corrupted")]
    assert out[0]["scores"]["greedy"] == 8 and out[1]["scores"]["greedy"] == 3
    prompts = [r.prompt for r in base.requests if r.kind == "judge"]
    assert all("Is ice cold?" in p and "Solve the following math problem" not in p for p in prompts)
    rows = {r["method"]: r for r in build_report(out, kinds=KINDS)["rows"]}
    assert rows["greedy"]["auroc"] == 1.0 and rows["greedy"]["by_kind"]["negation"] == 1.0
    assert rows["greedy"]["by_kind"]["swap"] is None


def test_an_unknown_request_id_is_refused_by_name_before_anything_starts(tmp_path, capsys):
    from sgl_specreason.eval.general_requests import main

    with pytest.raises(SystemExit) as exit_:
        main(["--ids", REQUESTS[0]["id"], "no-such-request", "--out-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2 and "no request with id no-such-request" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_report_rewritten_from_the_records_names_the_command_that_made_them(tmp_path):
    from sgl_specreason.eval.general_requests import main
    from sgl_specreason.store import ResultStore

    with ResultStore(tmp_path / "records.jsonl").append() as writer:
        for row in records():
            writer.write(row)
    assert main(["--out-dir", str(tmp_path), "--max-tokens", "600", "--report-only"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert f"python -m eval.general_requests --out-dir {tmp_path} --max-tokens 600\n" in text
    assert "max_tokens 600" in text and "| poem-autumn | writing | specreason | stop (ended) |" in text
