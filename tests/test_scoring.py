"""The arithmetic of the judges that ask the base runtime about one step: the paper's digit
(``judges/paper.py``) and the likelihood ones (``judges/likelihood.py``)."""

import math

import pytest

from sgl_specreason.judges import JUDGES, Candidates
from sgl_specreason.judges.likelihood import likelihood_signals, score_likelihood, step_token_logprobs
from sgl_specreason.judges.paper import digit_distribution, score_from_meta, score_step


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


# -- the likelihood judges ------------------------------------------------------------------------

def entries(*pairs):
    return [(lp(p), text) for p, text in pairs]


def test_likelihood_scores_are_ten_plus_log_prob_of_mean_worst_window_and_worst_number():
    step = entries((0.9, "She"), (0.8, " pays"), (0.5, " 1"), (0.02, "7"), (0.9, " dollars"))
    s = likelihood_signals(step, window=2)
    logs = [lp(p) for p in (0.9, 0.8, 0.5, 0.02, 0.9)]
    assert s["likelihood"] == pytest.approx(10 + sum(logs) / 5)
    assert s["likelihood-min"] == pytest.approx(10 + (lp(0.5) + lp(0.02)) / 2)
    assert s["likelihood-numbers"] == pytest.approx(10 + lp(0.02))


def test_likelihood_scores_clip_to_zero_ten_and_handle_short_steps_without_numbers():
    s = likelihood_signals(entries((1e-9, "Hmm")))
    assert s == {"likelihood": 0.0, "likelihood-min": 0.0, "likelihood-numbers": 0.0}
    s = likelihood_signals([(0.0, "So"), (-1.0, " we")], window=3)  # shorter than the window
    assert s["likelihood-min"] == pytest.approx(9.5) == s["likelihood-numbers"]
    assert likelihood_signals([]) == {"likelihood": 0.0, "likelihood-min": 0.0, "likelihood-numbers": 0.0}


def test_step_token_logprobs_skip_the_position_before_the_step():
    meta = {"input_token_logprobs": [[None, 46, ">"], [-0.5, 1, "Jan"], [-1.5, 2, "et"], [-0.1, 3, "\n\n"]]}
    assert step_token_logprobs(meta, 2) == [(-0.5, "Jan"), (-1.5, "et")]
    with pytest.raises(ValueError, match="no input logprobs"):
        step_token_logprobs({}, 2)


def test_each_family_picks_its_method_and_keeps_every_signal():
    meta = {"input_token_logprobs": [[None, 0, "x"], [-0.2, 1, " 4"], [-3.0, 2, "2"]],
            "output_token_logprobs": [[-0.1, 5, "\n"]]}
    score = score_likelihood(meta, "likelihood-numbers", step_tokens=2)
    assert score.value == pytest.approx(7.0)
    assert set(score.signals) == {"likelihood", "likelihood-min", "likelihood-numbers"}
    paper = {"output_token_logprobs": [[lp(0.6), 1, "9"]], "output_top_logprobs": [[[lp(0.6), 1, "9"], [lp(0.4), 2, "7"]]]}
    score = score_from_meta(paper, "average")
    assert score.value == pytest.approx(8.2) and score.signals == pytest.approx({"greedy": 9, "average": 8.2})
    with pytest.raises(ValueError, match="needs the step's token count"):
        score_likelihood(meta, "likelihood", None)
    with pytest.raises(ValueError, match="unknown score method"):
        score_likelihood(meta, "vibes", 2)


def test_the_registered_judges_read_the_same_replies():
    meta = {"input_token_logprobs": [[None, 0, "x"], [-0.2, 1, " 4"], [-3.0, 2, "2"]],
            "output_token_logprobs": [[-0.1, 5, "\n"]]}
    step = Candidates("q", 0, None, [" 42"], [{}], [meta], [2])
    assert JUDGES["likelihood-numbers"].score(step)[0].value == pytest.approx(7.0)
    assert JUDGES["likelihood"].score(step)[0].value == pytest.approx(10 - 1.6)
    paper = {"output_token_logprobs": [[lp(0.6), 1, "9"]], "output_top_logprobs": [[[lp(0.6), 1, "9"], [lp(0.4), 2, "7"]]]}
    asked = Candidates("q", 0, None, ["x"], [{}], [paper])
    assert JUDGES["average"].score(asked)[0].value == pytest.approx(8.2)
    assert JUDGES["greedy"].score(asked)[0].value == 9
