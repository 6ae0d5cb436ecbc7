"""The judge registry: every judge is one object, and a new one needs nothing else."""

import pkgutil
import sys
from pathlib import Path

import pytest

from fake_runtime import FakeRuntime, fake_roles
from sgl_specreason.programs import specreason
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason import judges
from sgl_specreason.judges import JUDGES, NOTHING, QUESTION, STEP, Judge, JudgeScore, get_judge, register
from sgl_specreason.problems import make_problem
from sgl_specreason.templates import JUDGE_INSTRUCTION


def test_the_built_in_judges_and_what_each_asks_of_the_base_runtime():
    asks = {name: judge.asks for name, judge in JUDGES.items()}
    assert asks == {"greedy": QUESTION, "average": QUESTION, "likelihood": STEP,
                    "likelihood-min": STEP, "likelihood-numbers": STEP, "llr": STEP,
                    "agreement": NOTHING, "agreement-set": NOTHING, "random": NOTHING}
    assert [n for n, j in JUDGES.items() if j.needs_draft_logprobs] == ["llr"]
    assert [n for n, j in JUDGES.items() if j.min_drafts > 1] == ["agreement", "agreement-set"]
    assert all(judge.help for judge in JUDGES.values())


def test_every_module_of_the_folder_is_imported_and_imports_the_base_not_the_package():
    modules = {m.name for m in pkgutil.iter_modules(judges.__path__)} - {"base"}
    assert modules >= {"paper", "likelihood", "llr", "agreement", "random_control"}
    assert all(f"sgl_specreason.judges.{name}" in sys.modules for name in modules)
    for name in modules:
        source = Path(judges.__path__[0], f"{name}.py").read_text(encoding="utf-8")
        assert "from sgl_specreason.judges import" not in source, name
    # each judge comes from one module of the folder, with its arithmetic
    assert {j.score.__module__ for j in JUDGES.values()} >= {f"sgl_specreason.judges.{m}" for m in (
        "paper", "likelihood", "llr", "agreement", "random_control")}


def test_an_unknown_judge_or_a_bad_one_is_named():
    with pytest.raises(ValueError, match="unknown judge 'median'; known: greedy, average"):
        get_judge("median")
    with pytest.raises(ValueError, match="asks must be"):
        Judge("x", "x", "everything", lambda c: [])
    with pytest.raises(ValueError, match="registered already"):
        register(JUDGES["greedy"])


@pytest.fixture
def shortest():
    """A new judge, registered the way a module in sgl_specreason/judges/ registers one."""
    judge = register(Judge("shortest", "10 for the shortest draft", NOTHING,
                           lambda c: [JudgeScore(10.0 * (len(t) == min(map(len, c.texts))), "")
                                      for t in c.texts], min_drafts=2))
    yield judge
    del JUDGES[judge.name]


def test_a_new_judge_is_one_object(shortest):
    with pytest.raises(ConfigError, match="needs num_drafts >= 2"):
        SpecReasonConfig(score_method="shortest")
    cfg = SpecReasonConfig(score_method="shortest", threshold=5, num_drafts=2, seed=0)
    draft = FakeRuntime("draft", lambda steps, fork: "so \\boxed{5}" if steps else "x" * (5 + 5 * fork))
    base = FakeRuntime("base", lambda steps, fork: "b")
    roles = fake_roles(draft, base)
    result = specreason.run(problem=make_problem("2 + 3?", answer="5"), cfg=cfg, draft=roles["draft"],
                            base=roles["base"], backend=base).ret_value
    assert result.error is None and result.steps[0].text == "xxxxx"
    assert sorted(result.steps[0].draft_scores) == [0.0, 10.0]
    assert not base.requests  # it asks the base runtime nothing


# -- the base model's log-probabilities of kept drafts, under every judge ---------------------------

def _solve_with(cfg):
    draft = FakeRuntime("draft", lambda steps, fork: "so \\boxed{5}" if len(steps) >= 2 else f"d{len(steps)}: {fork}.")
    base = FakeRuntime("base", lambda steps, fork: "b", score=lambda step: 8)
    roles = fake_roles(draft, base)
    result = specreason.run(problem=make_problem("2 + 3?", answer="5"), cfg=cfg, draft=roles["draft"],
                            base=roles["base"], backend=base).ret_value
    assert result.error is None, result.error
    return result, base


def test_the_papers_judge_gives_the_kept_drafts_log_probabilities_from_its_own_prefill():
    cfg = SpecReasonConfig(score_method="greedy", threshold=7, logprobs=2, seed=0)
    result, base = _solve_with(cfg)
    assert [s.source for s in result.steps] == ["draft"] * 3
    for step in result.steps:  # every kept token, from the judge's prefill (the fake: score - 10 each)
        assert "".join(t[0] for t in step.logprobs) == step.text
        assert {t[1] for t in step.logprobs} == {8 - 10.0}
        assert [c.kind for c in step.calls] == ["draft", "judge"]  # no prefill of its own
    judges_asked = base.requests
    assert [r.kind for r in judges_asked] == ["judge"] * 3
    for r in judges_asked:  # asked from one token before the step (SGLang scores no first position)
        start = r.params["logprob_start_len"]
        assert r.prompt[start + 1:].startswith(r.steps[-1] + "\n\n")
        assert r.prompt.endswith("I think the quality score is: ") and r.params["top_logprobs_num"] == 10
    assert [s.score for s in result.steps] == [8, 8, 8]


def test_without_logprobs_the_papers_judge_asks_for_no_prompt_log_probabilities():
    result, base = _solve_with(SpecReasonConfig(score_method="greedy", threshold=7, seed=0))
    assert all(r.params["logprob_start_len"] is None for r in base.requests)
    assert all(step.logprobs is None for step in result.steps)


def test_a_judge_that_asks_the_base_nothing_prefills_the_kept_draft_once_for_its_log_probabilities():
    cfg = SpecReasonConfig(score_method="agreement", threshold=0, num_drafts=2, logprobs=0, seed=0)
    result, base = _solve_with(cfg)
    first = result.steps[0]
    assert first.source == "draft" and "".join(t[0] for t in first.logprobs) == first.text
    assert [c.kind for c in first.calls] == ["draft", "draft", "logprobs"]
    prefills = [r for r in base.requests if r.params["logprob_start_len"] is not None]
    assert len(prefills) == len(result.steps)  # one per kept draft, none per candidate
    assert all(JUDGE_INSTRUCTION not in r.prompt for r in prefills)  # the step alone, no question
