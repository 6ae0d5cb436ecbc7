from sgl_specreason.trace import BASE, DRAFT, Call, ProblemResult, Step, Totals


def call(role, kind, tokens, latency=1.0):
    return Call(role, kind, prompt_tokens=100, cached_tokens=90, completion_tokens=tokens, latency_s=latency)


def test_wasted_work_counts_as_produced_tokens_and_on_its_own():
    kept = Step(0, DRAFT, "a", 10, draft_tokens=10, score=9.0,
                calls=[call(DRAFT, "draft", 10), call(BASE, "judge", 1, 0.5), call(BASE, "wasted", 4)])
    rejected = Step(1, BASE, "b", 7, draft_tokens=12, score=1.0,
                    calls=[call(DRAFT, "draft", 12), call(BASE, "judge", 1, 0.5), call(DRAFT, "wasted", 5),
                           call(BASE, "step", 7)])
    result = ProblemResult("p", "q", "specreason", steps=[kept, rejected])
    totals = result.totals()
    assert totals.wasted_tokens == 9
    assert totals.draft_tokens == 10 + 12 + 5 and totals.base_tokens == 4 + 7
    assert totals.judge_calls == 2 and totals.judge_s == 1.0
    assert totals.acceptance_rate == 0.5
    again = Totals.from_dict(result.to_dict()["totals"])
    assert again.wasted_tokens == 9
    assert Totals.from_dict({"steps": 1}).wasted_tokens == 0  # records written before the field
