"""The report's arithmetic, on records built with the library's own trace types."""

import json

import pytest

from sgl_specreason.eval.report import build_report, main as report_main, write_report
from sgl_specreason.eval.run_eval import check_settings, finished_keys, mode_settings, plan_modes
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import SpecReasonError
from sgl_specreason.store import ResultStore
from sgl_specreason.trace import Call, ProblemResult, Step


def record(pid, sample, mode, correct, wall, steps):
    r = ProblemResult(f"{pid}#{sample}", "q", mode.split("-")[0], wall_s=wall, correct=correct, steps=steps)
    out = r.to_dict()
    out.update(dataset="gsm8k", problem_id=pid, sample=sample, mode=mode)
    return out


def base_step(i, tokens, seconds):
    return Step(i, "base", "t", tokens, base_text="t", base_tokens=tokens,
                calls=[Call("base", "step", 100, 90, tokens, seconds)])


def spec_step(i, tokens, score, accepted):
    step = Step(i, "draft", "t", tokens, draft_text="t", draft_tokens=tokens, score=score,
                calls=[Call("draft", "draft", 100, 99, tokens, tokens * 0.1), Call("base", "judge", 150, 100, 1, 1.0)])
    if not accepted:
        step.replace_with(base_step(i, tokens, tokens * 0.3))
    return step


@pytest.fixture
def results_file(tmp_path):
    records = []
    for pid, ok in (("p1", True), ("p2", False)):
        for sample in (0, 1):
            records.append(record(pid, sample, "base", ok, 30.0, [base_step(0, 50, 15.0), base_step(1, 50, 15.0)]))
            records.append(record(pid, sample, "specreason-greedy-7", ok and sample == 0, 10.0,
                                  [spec_step(0, 50, 9, True), spec_step(1, 50, 3, False)]))
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn": ')
    return path


def test_rows_pass_at_1_speedup_and_analytic_latency(results_file):
    report = build_report(results_file, ["base", "specreason-greedy-7"])
    base, spec = report["rows"]
    assert base["mode"] == "base" and base["problems"] == 2 and base["samples"] == 4
    assert base["pass_at_1"] == pytest.approx(0.5)
    assert spec["pass_at_1"] == pytest.approx(0.25)  # p1: 1 of 2 samples, p2: 0
    assert spec["pass_at_1_se"] == pytest.approx(0.25)  # stdev([0.5, 0]) / sqrt(2)
    assert base["speedup"] == pytest.approx(1.0) and spec["speedup"] == pytest.approx(3.0)
    costs = report["costs"]
    assert costs["base_s_per_token"] == pytest.approx((4 * 30 + 4 * 15) / (4 * 100 + 4 * 50))
    assert costs["draft_s_per_token"] == pytest.approx(0.1) and costs["judge_s"] == pytest.approx(1.0)
    expected_spec = 100 * 0.1 + 50 * costs["base_s_per_token"] + 2 * 1.0
    assert spec["analytic_s_per_problem"] == pytest.approx(expected_spec)
    assert spec["analytic_speedup"] == pytest.approx(100 * costs["base_s_per_token"] / expected_spec)
    assert spec["acceptance_rate"] == pytest.approx(0.5)
    assert spec["judge_histogram"][9] == 4 and spec["judge_histogram"][3] == 4
    assert report["acceptance_by_step"]["gsm8k/specreason-greedy-7"] == {0: 1.0, 1: 0.0}
    assert "| gsm8k | specreason-greedy-7 | 2 | 25.0% ± 25.0 |" in report["markdown"]
    # what the analytic speedup is made of: here both modes keep 100 tokens a problem
    assert base["limits"] is None  # nothing judged
    limits = spec["limits"]
    assert limits["kept_tokens"] == 100 and limits["length_ratio"] == pytest.approx(1.0)
    assert limits["per_token_speedup"] * limits["length_ratio"] == pytest.approx(spec["analytic_speedup"])
    assert limits["draft_tokens_per_step"] == 50  # 100 drafted tokens, 2 judge calls
    assert limits["ceiling"] == pytest.approx(costs["base_s_per_token"] / (0.1 + 1.0 / 50))
    assert limits["judge_in_draft_tokens"] == pytest.approx(10.0)
    assert limits["judge_share"] == pytest.approx(2 * 1.0 / expected_spec)
    assert "| gsm8k | specreason-greedy-7 | 100 | 100 | 1.00x |" in report["markdown"]


def test_a_retried_failure_counts_once_and_as_its_retry(results_file):
    lines = results_file.read_text().splitlines()[:-1]  # without the torn line
    failed = record("p2", 0, "base", False, 1.5, [])
    failed["error"] = "RuntimeUnavailableError: cannot reach the base runtime"
    never = record("p3", 0, "base", False, 2.0, [])
    never["error"] = "RuntimeTimeoutError: no reply"
    # p2's first try failed and was retried (appended later); p3 failed twice
    results_file.write_text("\n".join([json.dumps(failed), *lines, json.dumps(never), json.dumps(never)]) + "\n")
    base = build_report(results_file, ["base"])["rows"][0]
    assert base["samples"] == 5 and base["problems"] == 3  # p1 and p2 twice each, p3 once
    assert base["pass_at_1"] == pytest.approx(1 / 3)  # p1 1.0, p2 0.0, p3 0.0
    assert base["errors"] == 1
    assert base["wall_s_total"] == pytest.approx(4 * 30.0 + 2.0)


def test_report_files_are_written(results_file, tmp_path):
    paths = write_report(build_report(results_file, []), tmp_path / "report")
    names = sorted(p.name for p in paths)
    assert names == ["acceptance_per_step.png", "accuracy_vs_speedup.png", "report.jsonl", "report.md"]
    for p in paths:
        assert p.stat().st_size > 0
    assert (tmp_path / "report" / "accuracy_vs_speedup.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_keys_skip_finished_and_retry_failed(tmp_path):
    path = tmp_path / "e.jsonl"
    good = {"dataset": "gsm8k", "problem_id": "p1", "sample": 0, "mode": "base", "error": None}
    bad = {**good, "problem_id": "p2", "error": "RuntimeTimeoutError: ..."}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n" + '{"dataset": "gs')
    assert finished_keys(ResultStore(path).read("mode")) == {("gsm8k", "p1", 0, "base")}


def _roles(base_model):
    from types import SimpleNamespace as NS

    def role(path, template):
        return NS(backend=NS(model_path=path), template=NS(name=template))
    return {"draft": role("/m/qwen2.5-coder-0.5b", "qwen"), "base": role(base_model, "qwen")}


def test_resume_refuses_records_made_with_other_settings(tmp_path):
    path = tmp_path / "e.jsonl"
    cfg = SpecReasonConfig()
    [mode] = plan_modes(["specreason-likelihood-numbers-6"], [7], ["greedy"], cfg)
    roles = _roles("/cache/models/qwen2.5-coder-1.5b")
    settings = mode_settings(mode, roles)
    assert settings["models"] == {"draft": "qwen2.5-coder-0.5b (qwen)", "base": "qwen2.5-coder-1.5b (qwen)"}
    assert settings["config"]["token_budget"] == 8192 and "request_timeout" not in settings["config"]
    record = {"mode": mode.label, "settings": settings}
    old = {"mode": mode.label}  # written before records carried settings
    other = {"mode": "base", "settings": {"config": {"token_budget": 1}}}  # another mode: not compared
    # the same settings, the models served from another folder: fine; records without: counted
    assert check_settings(path, [record, old, other], [mode], _roles("/elsewhere/qwen2.5-coder-1.5b")) == 1
    [shorter] = plan_modes(["specreason-likelihood-numbers-6"], [7], ["greedy"], cfg.replace(token_budget=512))
    with pytest.raises(SpecReasonError, match=r"e.jsonl holds records of mode specreason-likelihood-numbers-6 "
                                              r"made with other settings \(config.token_budget: 8192 in the "
                                              r"file, 512 now\)"):
        check_settings(path, [record], [shorter])  # before the runtimes start: config only
    with pytest.raises(SpecReasonError, match=r"models.base: 'qwen2.5-coder-1.5b \(qwen\)' in the file, "
                                              r"'smollm2-135m \(qwen\)' now"):
        check_settings(path, [record], [mode], _roles("/m/smollm2-135m"))
    # a record made before a config field existed was made with that field's default
    before_field = {"mode": mode.label, "settings": {**settings, "config": {
        k: v for k, v in settings["config"].items() if k != "speculate"}}}
    assert check_settings(path, [before_field], [mode], roles) == 0
    [auto] = plan_modes(["specreason-likelihood-numbers-6"], [7], ["greedy"], cfg.replace(speculate="auto"))
    with pytest.raises(SpecReasonError, match=r"config.speculate: 'always' in the file, 'auto' now"):
        check_settings(path, [before_field], [auto])


def test_modes_expand_thresholds_and_methods():
    modes = plan_modes(["base", "specreason"], [6.5, 7], ["average", "greedy"], SpecReasonConfig())
    assert [m.label for m in modes] == ["base", "specreason-average-6.5", "specreason-average-7",
                                        "specreason-greedy-6.5", "specreason-greedy-7"]
    assert modes[2].cfg.threshold == 7 and modes[2].cfg.score_method == "average"
    with pytest.raises(SpecReasonError, match="unknown mode 'fast'"):
        plan_modes(["fast"], [7], ["greedy"], SpecReasonConfig())


def test_modes_name_one_judge_each():
    modes = plan_modes(["draft", "specreason-likelihood-numbers-5.5", "specreason-greedy-7"], [1], ["average"],
                       SpecReasonConfig())
    assert [m.label for m in modes] == ["draft", "specreason-likelihood-numbers-5.5", "specreason-greedy-7"]
    assert (modes[1].cfg.score_method, modes[1].cfg.threshold) == ("likelihood-numbers", 5.5)
    for bad in ("specreason-vibes-5", "specreason-average"):
        with pytest.raises(SpecReasonError, match="write specreason-METHOD-THRESHOLD"):
            plan_modes([bad], [7], ["greedy"], SpecReasonConfig())
    # a known judge with a setting out of range: the setting is named
    with pytest.raises(SpecReasonError, match="threshold must be in"):
        plan_modes(["specreason-greedy-11"], [7], ["greedy"], SpecReasonConfig())
    with pytest.raises(SpecReasonError, match="needs num_drafts >= 2"):
        plan_modes(["specreason-agreement-10"], [7], ["greedy"], SpecReasonConfig())
    assert plan_modes(["specreason-agreement-10+n3"], [7], ["greedy"], SpecReasonConfig())[0].cfg.num_drafts == 3


def test_modes_switch_drafts_pipelining_race_and_the_drop_in_backend():
    modes = plan_modes(["specreason-likelihood-numbers-6+n4", "specreason-greedy-7+pipeline+race",
                        "specreason+base1", "base-gen", "dropin-likelihood-numbers-6+pipeline"],
                       [5], ["average"], SpecReasonConfig())
    assert [m.label for m in modes] == [
        "specreason-likelihood-numbers-6+n4", "specreason-greedy-7+pipeline+race",
        "specreason-average-5+base1", "base-gen", "dropin-likelihood-numbers-6+pipeline"]
    assert [m.mode for m in modes] == ["specreason", "specreason", "specreason", "base-gen", "dropin"]
    assert modes[0].cfg.num_drafts == 4 and not modes[0].cfg.pipeline
    assert modes[1].cfg.pipeline and modes[1].cfg.race_base_step and modes[1].cfg.threshold == 7
    assert modes[2].cfg.first_n_base_steps == 1
    assert modes[4].to_dict()["pipeline"] is True and modes[4].cfg.score_method == "likelihood-numbers"
    with pytest.raises(SpecReasonError, match="bad option 'turbo' in mode 'specreason\\+turbo'"):
        plan_modes(["specreason+turbo"], [7], ["greedy"], SpecReasonConfig())
    with pytest.raises(SpecReasonError, match="pipeline needs num_drafts = 1"):
        plan_modes(["specreason-greedy-7+n2+pipeline"], [7], ["greedy"], SpecReasonConfig())
    with pytest.raises(SpecReasonError, match="unknown mode 'base\\+pipeline'"):
        plan_modes(["base+pipeline"], [7], ["greedy"], SpecReasonConfig())


def test_analytic_latency_of_pipelined_modes_hides_overlap_and_leaves_out_aborted_guesses():
    from sgl_specreason.eval.costs import Costs
    from sgl_specreason.eval.report import analytic_latency

    kept = [spec_step(0, 50, 9, True), spec_step(1, 50, 9, True)]
    rejected = spec_step(2, 10, 1, True)  # drafted (10 tokens), judged, then:
    rejected.calls.append(Call("draft", "wasted", 100, 99, 20, 2.0))  # the next draft, aborted
    rejected.replace_with(base_step(2, 30, 9.0))
    costs = Costs.measured({"draft_s_per_token": 0.1, "base_s_per_token": 0.3, "judge_s": 1.0})
    line = record("p1", 0, "specreason-greedy-7", True, 20.0, kept + [rejected])
    # sequential work: draft 130 tokens (13 s), base 30 (9 s), 3 judge calls (3 s)
    assert analytic_latency(line, costs) == pytest.approx(25.0)
    # pipelined: the aborted 20 draft tokens ran beside the loop; steps 1 and 2 were drafted
    # while their predecessor was judged, hiding min(draft, judge) = 1 s each
    line["mode_info"] = {"pipeline": True, "race_base_step": False}
    assert analytic_latency(line, costs) == pytest.approx(25.0 - 2.0 - 1.0 - 1.0)
    # and with the race, the rejected step's base step began with its judgement: 1 s more
    line["mode_info"]["race_base_step"] = True
    assert analytic_latency(line, costs) == pytest.approx(20.0)


def test_a_finished_run_starts_no_runtime_and_the_report_can_be_rewritten_alone(results_file, tmp_path, capsys):
    from sgl_specreason.eval.run_eval import main as eval_main

    data = tmp_path / "gsm8k.jsonl"  # a user file named like the records' data set
    data.write_text("".join(json.dumps({"id": pid, "question": "q", "answer": "1"}) + "\n" for pid in ("p1", "p2")))
    nowhere = "http://127.0.0.1:9"  # nothing listens there: any request would fail
    argv = ["--dataset", str(data), "--k", "2", "--modes", "base", "specreason-greedy-7",
            "--result-file", str(results_file), "--report-dir", str(tmp_path / "report"),
            "--draft-url", nowhere, "--base-url", nowhere]
    assert eval_main(argv) == 0
    out = capsys.readouterr().out
    assert "no runtime started" in out and "| gsm8k | specreason-greedy-7 | 2 | 25.0% ± 25.0 |" in out
    # the report alone, against another baseline
    assert report_main([str(results_file), "--report-dir", str(tmp_path / "again"),
                        "--baseline", "specreason-greedy-7"]) == 0
    out = capsys.readouterr().out
    assert "Speedups are over specreason-greedy-7" in out and "| gsm8k | base | 2 | 50.0% ± 50.0 | 25.0% | 30.0 | 0.33x |" in out
    assert (tmp_path / "again" / "report.md").exists()
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_each_rule_is_compared_with_random_acceptance_at_its_own_rate():
    from sgl_specreason.eval.report import against_random

    def row(mode, acceptance, pass1):
        return {"dataset": "gsm8k-train", "mode": mode, "acceptance_rate": acceptance, "pass_at_1": pass1}

    rows = [row("base", None, 0.40), row("draft", None, 0.20),
            row("specreason-random-5", 0.50, 0.30), row("specreason-agreement-10+n3", 0.75, 0.33),
            row("specreason-likelihood-numbers-6", 0.25, 0.31)]
    found = {c["mode"]: c for c in against_random(rows)}
    assert set(found) == {"specreason-agreement-10+n3", "specreason-likelihood-numbers-6"}
    assert found["specreason-agreement-10+n3"]["random_pass_at_1"] == pytest.approx(0.25)
    assert found["specreason-agreement-10+n3"]["margin"] == pytest.approx(0.08)
    assert found["specreason-likelihood-numbers-6"]["margin"] == pytest.approx(-0.04)
    # no random mode run on the data set: nothing to compare with
    assert against_random([r for r in rows if "random" not in r["mode"]]) == []


def test_a_rule_is_compared_with_random_over_the_problems_both_ran():
    """A rule stopped after 2 problems must not meet a random line drawn over 4: on problems
    0-1 random and base were right on both, so the rule's 50 % is below random there, though
    above random's 25 % over all four."""
    from sgl_specreason.eval.report import against_random

    def records(mode, rights, accepted=None):
        return [{"problem_id": i, "correct": right,
                 "totals": {} if accepted is None else {"judged_steps": 2, "accepted_steps": accepted}}
                for i, right in enumerate(rights)]

    chosen = {("d", "base"): records("base", [True, True, False, False]),
              ("d", "draft"): records("draft", [True, True, False, False]),
              ("d", "specreason-random-5"): records("random", [True, True, False, False], accepted=1),
              ("d", "specreason-likelihood-numbers-9"): records("rule", [True, False], accepted=1)}
    rows = [{"dataset": "d", "mode": m, "pass_at_1": sum(r["correct"] for r in recs) / len(recs),
             "acceptance_rate": 0.5 if "specreason" in m else None} for (_, m), recs in chosen.items()]
    over_all = {c["mode"]: c for c in against_random(rows)}
    assert over_all["specreason-likelihood-numbers-9"]["margin"] == pytest.approx(0.0)
    own = {c["mode"]: c for c in against_random(rows, chosen)}
    assert own["specreason-likelihood-numbers-9"]["random_pass_at_1"] == pytest.approx(1.0)
    assert own["specreason-likelihood-numbers-9"]["margin"] == pytest.approx(-0.5)
    assert own["specreason-likelihood-numbers-9"]["problems"] == 2
    # a rule run on more problems than the control (here random ran problem 0 only) is compared
    # over the problems they share, both sides recomputed there: right on problem 0, as all were
    chosen["d", "specreason-random-5"] = chosen["d", "specreason-random-5"][:1]
    shared = {c["mode"]: c for c in against_random(rows, chosen)}["specreason-likelihood-numbers-9"]
    assert shared["problems"] == 1
    assert (shared["pass_at_1"], shared["random_pass_at_1"], shared["margin"]) == (1.0, 1.0, 0.0)
    # no problem shared: nothing to compare
    chosen["d", "specreason-random-5"] = [dict(chosen["d", "specreason-random-5"][0], problem_id=7)]
    assert against_random(rows, chosen) == []


def test_the_target_picks_the_fastest_rule_that_keeps_accuracy_and_says_when_speed_is_missed():
    from sgl_specreason.eval.report import against_target, against_target_markdown

    def row(mode, pass1, speedup, baseline=0.50, acceptance=0.7):
        return {"dataset": "d", "mode": mode, "problems": 40, "pass_at_1": pass1, "baseline_pass_at_1": baseline,
                "speedup": speedup, "acceptance_rate": acceptance}

    rows = [row("base", 0.50, 1.0, acceptance=None), row("specreason-random-4", 0.40, 1.4),
            row("specreason-likelihood-numbers-6", 0.40, 1.5),   # fast, 10 points under
            row("specreason-likelihood-numbers-9", 0.49, 1.2),   # within 2 points, slow
            row("specreason-likelihood-numbers-8", 0.485, 1.25),  # within 2 points, faster, under random
            row("specreason-likelihood-numbers-10", 0.50, 1.1)]
    margins = {"specreason-likelihood-numbers-6": 0.05, "specreason-likelihood-numbers-9": 0.04,
               "specreason-likelihood-numbers-8": -0.01, "specreason-likelihood-numbers-10": 0.02}
    comparisons = [{"dataset": "d", "mode": m, "margin": v} for m, v in margins.items()]
    target = against_target(rows, comparisons)
    checks = {c["mode"]: c for c in target["rules"]}
    assert set(checks) == set(margins)  # neither base-only nor the random control is a rule
    assert checks["specreason-likelihood-numbers-6"]["gap"] == pytest.approx(-0.10)
    assert not checks["specreason-likelihood-numbers-6"]["keeps_accuracy"]
    assert checks["specreason-likelihood-numbers-6"]["fast_enough"]
    assert checks["specreason-likelihood-numbers-8"]["keeps_accuracy"]
    assert not checks["specreason-likelihood-numbers-8"]["beats_random"]
    assert target["choice"]["d"] == {"mode": "specreason-likelihood-numbers-9", "met": False}
    text = "\n".join(against_target_markdown(target))
    assert "no rule meets the speed target; the fastest that keeps accuracy is specreason-likelihood-numbers-9" in text
    # a rule that meets all three is chosen over faster ones that do not
    rows.append(row("specreason-likelihood-numbers-7", 0.50, 1.35))
    comparisons.append({"dataset": "d", "mode": "specreason-likelihood-numbers-7", "margin": 0.03})
    assert against_target(rows, comparisons)["choice"]["d"] == {"mode": "specreason-likelihood-numbers-7", "met": True}
    # nothing keeps accuracy: nothing is chosen
    worse = [dict(r, pass_at_1=0.30) if r["mode"] != "base" else r for r in rows]
    assert against_target(worse, comparisons)["choice"]["d"] is None
