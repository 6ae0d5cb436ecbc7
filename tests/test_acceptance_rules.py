"""The acceptance rules that need no model: agreement of forked drafts, the random control, the
base-over-draft log-likelihood ratio, and the config checks that go with them."""

import pytest

from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.judges.agreement import agreement_key, agreement_scores, step_numbers
from sgl_specreason.judges.llr import draft_logprob_sum, log_ratio_score
from sgl_specreason.judges.random_control import random_score


def test_numbers_are_read_as_values_whatever_their_form():
    assert step_numbers("It costs $1,200.00, i.e. 1200 or 12.5%.") == (1200.0, 1200.0, 12.5)
    assert step_numbers("Let's think about it.") == ()


def test_drafts_that_end_on_the_same_result_agree_even_when_worded_apart():
    drafts = ["She sells 16 - 3 - 4 = 9 eggs.", "Remaining eggs: 9", "Eggs sold = 7 - 7 = 0"]
    assert agreement_scores(drafts, "last") == [5.0, 5.0, 0.0]


def test_set_agreement_needs_the_same_numbers():
    drafts = ["16 - 7 = 9", "9 = 16 - 7", "16 - 3 - 4 = 9"]
    assert agreement_scores(drafts, "set") == [5.0, 5.0, 0.0]


def test_steps_without_numbers_agree_with_each_other_only():
    assert agreement_key("Let's start.", "last") is None
    assert agreement_scores(["Let's start.", "First, read it.", "So 4"], "last") == [5.0, 5.0, 0.0]


def test_one_draft_has_nothing_to_agree_with():
    assert agreement_scores(["so 4"]) == [0.0]


def test_unknown_agreement_key_is_named():
    with pytest.raises(ValueError, match="agreement key"):
        agreement_key("4", "median")


def test_random_score_is_reproducible_and_spread_over_the_scale():
    values = [random_score("question", i, None) for i in range(2000)]
    assert values == [random_score("question", i, None) for i in range(2000)]
    kept = sum(v >= 3 for v in values) / len(values)
    assert 0.66 < kept < 0.74  # threshold 3 keeps about 70 %
    assert random_score("question", 0, 1) != random_score("question", 0, 2)  # the seed matters


def test_log_ratio_score_is_five_when_both_models_agree_and_clipped():
    assert log_ratio_score([(-1.0, "a"), (-1.0, "b")], -2.0) == 5.0
    assert log_ratio_score([(-0.1, "a")], -30.0) == 10.0
    assert log_ratio_score([(-30.0, "a")], -0.1) == 0.0
    assert log_ratio_score([], -1.0) == 0.0


def test_draft_logprob_sum_needs_the_logprobs():
    assert draft_logprob_sum({"output_token_logprobs": [[-0.5, 1, "a"], [-0.25, 2, "b"]]}) == -0.75
    with pytest.raises(ValueError, match="return_logprob"):
        draft_logprob_sum({})


def test_agreement_needs_several_drafts():
    with pytest.raises(ConfigError, match="num_drafts >= 2"):
        SpecReasonConfig(score_method="agreement", num_drafts=1)
    assert SpecReasonConfig(score_method="agreement-set", num_drafts=3).num_drafts == 3
    assert SpecReasonConfig(score_method="random", threshold=3).threshold == 3
