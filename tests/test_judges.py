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
