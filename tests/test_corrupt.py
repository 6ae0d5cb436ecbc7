"""The corruption generator of the judge benchmark: deterministic, one error per twin, of the
kind it claims."""

import random
import re

import pytest

from sgl_specreason.eval.corrupt import KINDS, OPERATOR, corrupt, gsm8k_problems, gsm8k_steps, make_pairs, numbers, perturb

STEPS = [
    "The cost of the house and repairs came out to 80,000+50,000=$130,000",
    "He increased the value of the house by 80,000*1.5=120,000",
    "So the new value of the house is 120,000+80,000=$200,000",
    "So he made a profit of 200,000-130,000=$70,000",
]
PROBLEM = {"id": "house", "question": "Josh buys a house for $80,000 and puts in $50,000 in repairs. "
                                      "This increased the value by 150%. How much profit did he make?",
           "steps": STEPS}


def nums(text):
    return [m.group() for m in numbers(text)]


def diff(a, b):
    """The differing middle parts of two strings."""
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    j = 0
    while j < min(len(a), len(b)) - i and a[-1 - j] == b[-1 - j]:
        j += 1
    return a[i:len(a) - j], b[i:len(b) - j]


def test_same_seed_same_pairs_and_another_seed_differs():
    problems = [PROBLEM, {**PROBLEM, "id": "house2"}]
    assert make_pairs(problems, seed=3) == make_pairs(problems, seed=3)
    assert any(make_pairs(problems, seed=s) != make_pairs(problems, seed=3) for s in range(4, 10))


def test_every_kind_has_a_pair_and_each_twin_differs_in_one_place():
    pairs = make_pairs([PROBLEM], seed=0)
    assert sorted(p.kind for p in pairs) == sorted(KINDS)
    for pair in pairs:
        assert pair.corrupted != pair.original
        assert pair.steps == STEPS[:STEPS.index(pair.original)]
        old, new = diff(pair.original, pair.corrupted)
        assert len(old) <= 9 and len(new) <= 9, (old, new)  # one number or one operator


@pytest.mark.parametrize("seed", range(20))
def test_result_changes_the_number_after_the_last_equals_sign(seed):
    twin = corrupt(STEPS[0], "result", [PROBLEM["question"]], random.Random(seed))
    head, _, tail = STEPS[0].rpartition("=")
    new_head, _, new_tail = twin.rpartition("=")
    assert new_head == head and nums(new_tail) != nums(tail)
    assert "," in new_tail or float(nums(new_tail)[0]) < 1000  # written like the original


@pytest.mark.parametrize("seed", range(20))
def test_operation_swaps_an_operator_and_keeps_every_number(seed):
    step = "Janet sells 16 - 3 - 4 = 9 duck eggs a day."
    twin = corrupt(step, "operation", [], random.Random(seed))
    assert nums(twin) == nums(step)
    assert [m.group() for m in OPERATOR.finditer(twin)] != [m.group() for m in OPERATOR.finditer(step)]
    assert twin.endswith("= 9 duck eggs a day.")


@pytest.mark.parametrize("seed", range(20))
def test_quantity_takes_another_number_of_the_problem(seed):
    context = [PROBLEM["question"], STEPS[0]]
    twin = corrupt(STEPS[1], "quantity", context, random.Random(seed))
    old, new = diff(STEPS[1], twin)
    assert twin.endswith("=120,000")  # the result is kept, an operand is not
    pool = {m.group() for text in context for m in numbers(text)}
    assert any(n in pool for n in nums(twin)[:2]) and nums(twin) != nums(STEPS[1])


def test_conclusion_only_in_the_last_step_and_with_an_earlier_value():
    rng = random.Random(0)
    context = [PROBLEM["question"], *STEPS[:3]]
    assert corrupt(STEPS[1], "conclusion", context[:2], rng, last=False) is None
    twin = corrupt(STEPS[3], "conclusion", context, rng, last=True)
    final = nums(twin)[-1]
    earlier = {m.group() for text in STEPS[:3] for m in numbers(text)}
    assert final in earlier and final != "70,000"


def test_steps_without_a_place_for_an_error_give_none():
    rng = random.Random(0)
    assert corrupt("We need the total.", "result", [], rng) is None
    assert corrupt("We need the total.", "operation", [], rng) is None
    assert corrupt("We need the total.", "quantity", [], rng) is None
    with pytest.raises(ValueError, match="corruption kind must be one of"):
        corrupt("1 + 1 = 2", "typo", [], rng)


@pytest.mark.parametrize("like", ["1", "9", "15", "0.5", "1.25", "80,000", "130000", "2,500.50"])
def test_perturb_is_positive_different_and_formatted_alike(like):
    for seed in range(30):
        new = perturb(like, random.Random(seed))
        value = float(new.replace(",", ""))
        assert value > 0 and value != float(like.replace(",", ""))
        assert ("." in new) == ("." in like)
        if "," in like:
            assert re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?", new), new


def test_gsm8k_reference_solutions_become_steps_and_pairs():
    problems = gsm8k_problems(12)
    assert [p["id"] for p in problems[:2]] == ["gsm8k-0", "gsm8k-1"]
    assert problems[0]["steps"] == gsm8k_steps(
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18")
    assert all("<<" not in s and not s.startswith("####") for p in problems for s in p["steps"])
    pairs = make_pairs(problems, seed=0)
    assert len(pairs) >= 3 * len(problems)  # most problems offer every kind
    assert len({p.id for p in pairs}) == len(pairs)
