import math

import pytest

from sgl_specreason.scoring import digit_distribution, score_from_meta, score_step


def lp(p):
    return math.log(p)


def test_greedy_takes_the_produced_digit():
    assert score_step("7", [(lp(0.5), "7"), (lp(0.4), "9")], "greedy").value == 7


def test_greedy_non_digit_token_scores_zero():
    top = [(lp(0.6), "The"), (lp(0.3), "9"), (lp(0.1), "8")]
    assert score_step("The", top, "greedy").value == 0


def test_average_renormalises_over_digits_only():
    top = [(lp(0.6), "The"), (lp(0.3), "9"), (lp(0.1), "8")]
    score = score_step("The", top, "average")
    assert score.digits == pytest.approx({9: 0.75, 8: 0.25})
    assert score.value == pytest.approx(9 * 0.75 + 8 * 0.25)


def test_no_digit_in_top_k_scores_zero_both_ways():
    top = [(lp(0.7), "a"), (lp(0.3), "\n")]
    assert score_step("a", top, "average").value == 0
    assert score_step("a", top, "average").digits == {}
    assert score_step("a", top, "greedy").value == 0


def test_tie_between_digits_averages_evenly_and_greedy_follows_the_produced_token():
    top = [(lp(0.4), "3"), (lp(0.4), "9"), (lp(0.2), "x")]
    assert score_step("3", top, "average").value == pytest.approx(6.0)
    assert score_step("3", top, "greedy").value == 3
    assert score_step("9", top, "greedy").value == 9


def test_spaced_digit_tokens_count_and_merge():
    top = [(lp(0.3), " 7"), (lp(0.3), "7"), (lp(0.4), "5")]
    assert digit_distribution(top) == pytest.approx({7: 0.6, 5: 0.4})
    assert score_step(" 7", top, "greedy").value == 7


def test_multi_digit_and_empty_tokens_are_not_scores():
    top = [(lp(0.5), "10"), (lp(0.3), ""), (lp(0.2), "4")]
    assert digit_distribution(top) == pytest.approx({4: 1.0})
    assert score_step("10", top, "greedy").value == 0


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="greedy"):
        score_step("7", [(0.0, "7")], "median")


def test_score_from_meta_reads_sglang_logprob_layout():
    meta = {
        "output_token_logprobs": [[-0.22, 34, "8"]],
        "output_top_logprobs": [[[-0.22, 34, "8"], [-1.9, 35, "9"], [-3.0, 198, "\n"]]],
    }
    score = score_from_meta(meta, "average")
    assert score.token == "8"
    assert set(score.digits) == {8, 9}
    assert 8 < score.value < 9
    assert score_from_meta(meta, "greedy").value == 8


def test_score_from_meta_without_logprobs_explains_what_is_missing():
    with pytest.raises(ValueError, match="return_logprob"):
        score_from_meta({"completion_tokens": 1}, "greedy")
