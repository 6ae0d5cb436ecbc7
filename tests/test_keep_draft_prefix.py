"""``keep_draft_prefix``: a rejected draft's start that the judge would accept as a step of its own
is kept, and the base model writes the step on from it, on fake runtimes whose likelihood
prefill scores each character of a step (one character is one token there)."""

import pytest

from fake_runtime import END, OneStepRuntime as Runtime
from own_templates import offline_template
from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError
from sgl_specreason.problems import make_problem
from sgl_specreason.programs import specreason
from sgl_specreason.trace import BASE, DRAFT

pytestmark = pytest.mark.timeout(60)

DRAFTED = "The sky is green today."
LEAD = "The sky is"  # the draft's start before the word the base model finds unlikely
CFG = dict(token_budget=400, step_max_tokens=60, answer_max_tokens=40, seed=0, framing="plain",
           score_method="likelihood-min", threshold=6.0)


def per_character(step):
    """9 for every character but those of "green" (0): every window holding two of them fails."""
    at = step.find("green")
    return [0.0 if at >= 0 and at <= i < at + len("green") else 9.0 for i in range(len(step))]


def solve(score=per_character, **changes):
    template = offline_template("smollm2-135m")
    draft = Runtime(DRAFT, lambda kept, fork: DRAFTED + END, model_path="/models/fake-draft")
    base = Runtime(BASE, None, score=score, model_path="/models/fake-base")

    def base_writes(kept, fork):  # a model that continues the text it is given
        return (" blue." if base.requests[-1].prompt.endswith(LEAD) else "Clouds hide the sky.") + END
    base.write = base_writes
    state = specreason.run(problem=make_problem("What colour is the sky?", id="q"),
                           cfg=SpecReasonConfig(**{**CFG, **changes}), draft=Role(DRAFT, draft, template),
                           base=Role(BASE, base, template), backend=base)
    assert state.error() is None, state.error()
    result = state.ret_value
    assert result.error is None, result.error
    return result, base


def test_the_base_model_writes_on_from_the_lead_the_judge_would_keep():
    result, base = solve(keep_draft_prefix=True)
    [step] = result.steps
    assert step.source == BASE and step.draft_text == DRAFTED and step.text == LEAD + " blue."
    assert step.lead_tokens == len(LEAD) and step.kept_tokens == len(LEAD + " blue.")
    assert step.base_text == " blue." and step.base_tokens == len(" blue.")
    [written] = [r for r in base.requests if r.kind == "step"]
    assert written.prompt.endswith(LEAD) and written.params["max_new_tokens"] == 60 - len(LEAD)
    totals = result.totals()
    assert (totals.kept_draft_tokens, totals.kept_base_tokens) == (len(LEAD), len(" blue."))
    assert (totals.judged_steps, totals.accepted_steps) == (1, 0)  # a rewritten step is no kept draft
    assert result.content == LEAD + " blue."


def test_without_it_the_base_model_writes_the_step_from_its_start():
    result, base = solve()
    [step] = result.steps
    assert step.text == "Clouds hide the sky." and step.lead_tokens == 0
    assert result.totals().kept_draft_tokens == 0


def test_a_draft_wrong_from_its_first_word_leaves_no_lead():
    result, _ = solve(score=lambda step: [0.0] * len(step), keep_draft_prefix=True)
    [step] = result.steps
    assert step.text == "Clouds hide the sky." and step.lead_tokens == 0


def test_a_kept_draft_is_kept_whole():
    result, base = solve(score=lambda step: [9.0] * len(step), keep_draft_prefix=True)
    [step] = result.steps
    assert step.source == DRAFT and step.text == DRAFTED and step.lead_tokens == 0
    assert not [r for r in base.requests if r.kind == "step"]


def test_the_kept_tokens_log_probabilities_are_the_leads_then_the_base_models():
    result, _ = solve(keep_draft_prefix=True, logprobs=0)
    [step] = result.steps
    assert [t for t, *_ in step.logprobs] == list(LEAD + " blue.")
    assert [lp for _, lp, _ in step.logprobs[:len(LEAD)]] == [-1.0] * len(LEAD)  # the judge's 9 - 10


def test_pipelined_the_next_steps_drafts_are_dropped_and_the_lead_is_kept_the_same():
    result, _ = solve(keep_draft_prefix=True, pipeline=True)
    assert result.steps[0].text == LEAD + " blue."


@pytest.mark.parametrize("changes, named", [
    (dict(score_method="greedy"), "needs a judge that reads the step's own log-probabilities"),
    (dict(race_base_step=True), "choose one"),
    (dict(keep_draft_prefix="yes"), "must be true or false"),
])
def test_combinations_it_cannot_work_with_are_refused_by_name(changes, named):
    with pytest.raises(ConfigError, match="keep_draft_prefix") as error:
        SpecReasonConfig(**{**CFG, "keep_draft_prefix": True, **changes})
    assert named in str(error.value)


def test_serve_takes_it_from_its_flag_or_the_request_and_names_what_cannot_go_with_it():
    from fastapi.testclient import TestClient

    from sgl_specreason.serve import ServeSettings, create_app

    template = offline_template("smollm2-135m")
    draft = Runtime(DRAFT, lambda kept, fork: DRAFTED + END, model_path="/models/fake-draft")
    base = Runtime(BASE, lambda kept, fork: " blue." + END, score=per_character, model_path="/models/fake-base")
    app = create_app({DRAFT: Role(DRAFT, draft, template), BASE: Role(BASE, base, template)},
                     SpecReasonConfig(**CFG, keep_draft_prefix=True), ServeSettings())
    chat = {"model": "specreason", "messages": [{"role": "user", "content": "What colour is the sky?"}]}

    def ask(**options):
        return http.post("/v1/chat/completions", json={**chat, "specreason": options})
    with TestClient(app) as http:
        kept, not_kept = ask(), ask(keep_draft_prefix=False)
        judge_alone, both = ask(judge="greedy"), ask(judge="greedy", keep_draft_prefix=True)
        judge_without = ask(judge="greedy", keep_draft_prefix=False)  # read together: no conflict
    assert kept.json()["choices"][0]["message"]["content"] == LEAD + " blue."
    assert not_kept.json()["choices"][0]["message"]["content"] == "blue."  # the base model from the start
    assert judge_alone.status_code == 400 and judge_alone.json()["error"]["param"] == "specreason.judge"
    assert both.status_code == 400 and both.json()["error"]["param"] == "specreason.keep_draft_prefix"
    assert judge_without.status_code == 200, judge_without.text


def test_the_rewrite_bench_writes_a_rejected_draft_from_its_start_and_on_from_its_lead():
    from sgl_specreason.eval.rewrite_bench import rejected_drafts, report, rewrite_both, summary

    step = {"source": BASE, "score": 4.0, "text": "Clouds hide the sky.", "draft_text": DRAFTED, "draft_tokens": 23}
    kept = {"source": DRAFT, "score": 9.0, "text": "Hi.", "draft_text": "Hi.", "draft_tokens": 3}
    records = [{"id": "poem-autumn", "way": "specreason", "trace": {"steps": [kept, step]}}]
    [draft] = rejected_drafts(records, "run")
    assert (draft["id"], draft["earlier"], draft["draft"]) == ("run:specreason:poem-autumn:1", ["Hi."], DRAFTED)
    base = Runtime(BASE, None, score=per_character, model_path="/models/fake-base")
    base.write = lambda kept, fork: (" blue." if base.requests[-1].prompt.endswith(LEAD) else "Clouds.") + END
    role = Role(BASE, base, offline_template("smollm2-135m"))
    cfg = SpecReasonConfig(**CFG, keep_draft_prefix=True)
    rows = [rewrite_both(role, draft, cfg, order) for order in (0, 1)]
    for row in rows:
        assert row["rejected"] and row["lead_tokens"] == len(LEAD) and row["lead_text"] == LEAD
        assert row["start"]["text"] == "Clouds." and row["start"]["tokens"] == len("Clouds.")
        assert row["from_lead"]["text"] == LEAD + " blue." and row["from_lead"]["tokens"] == len(" blue.")
        assert row["from_lead"]["step_tokens"] == len(LEAD + " blue.")
    # which way goes first alternates: the lead's own prompt first, then the step's start
    assert [r.prompt.endswith(LEAD) for r in base.requests if r.kind == "step"] == [False, True, True, False]
    s = summary(rows)
    assert s["all"]["start"]["tokens"] == 2 * len("Clouds.") and s["all"]["from_lead"]["tokens"] == 2 * len(" blue.")
    assert "base tokens 1.17x" in report(rows, "python -m eval.rewrite_bench")  # 14 / 12
