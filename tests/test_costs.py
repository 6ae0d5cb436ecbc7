"""Pricing recorded calls with per-role costs: the run's measured ones give back the analytic
figures; a costs file's give a projection, labelled as one."""

import json
from pathlib import Path

import pytest

from sgl_specreason.eval.costs import Costs, RoleCost
from sgl_specreason.eval.report import analytic_latency, build_report, final_records, main as report_main, per_token_costs
from sgl_specreason.errors import ConfigError
from sgl_specreason.store import read_records
from sgl_specreason.trace import Call, ProblemResult, Step

ROOT = Path(__file__).resolve().parents[1]
#: the evaluation reports: an eval's records with the report made from them (other folders,
#: such as a bench's, keep records of their own kind)
REPORTS = sorted(p.parent for p in (ROOT / "eval" / "reports").glob("**/records.jsonl")
                 if (p.parent / "report.jsonl").exists())
H100 = ROOT / "eval" / "hardware" / "h100-r1-distill-1.5b-qwq-32b.json"


def costs_file(path: Path, costs: Costs) -> Path:
    """``costs`` written the way a user writes a costs file."""
    data = {"name": "test"}
    for role in ("draft", "base", "judge"):
        cost = getattr(costs, role)
        if cost is not None:
            data[role] = {"decode_ms_per_token": cost.decode_ms_per_token,
                          "prefill_ms_per_token": cost.prefill_ms_per_token, "request_ms": cost.request_ms}
    path.write_text(json.dumps(data))
    return path


def record(mode, steps, answer=None, mode_info=None):
    out = ProblemResult("p1#0", "q", mode, wall_s=1.0, steps=steps, answer_call=answer).to_dict()
    out.update(dataset="gsm8k", problem_id="p1", sample=0, mode=mode, mode_info=mode_info)
    return out


def test_a_call_costs_its_request_its_new_prompt_tokens_and_its_generated_tokens():
    costs = Costs(draft=RoleCost(4.0, 0.5, 2.0), base=RoleCost(30.0, 1.0, 3.0))
    draft = {"role": "draft", "kind": "draft", "prompt_tokens": 140, "cached_tokens": 100, "completion_tokens": 50}
    judge = {"role": "base", "kind": "judge", "prompt_tokens": 200, "cached_tokens": 140, "completion_tokens": 1}
    assert costs.call_s(draft) == pytest.approx((2 + 40 * 0.5 + 50 * 4) / 1000)
    assert costs.call_s(judge) == pytest.approx((3 + 60 * 1.0 + 30) / 1000)  # a base request
    with_judge = Costs(draft=costs.draft, base=costs.base, judge=RoleCost(request_ms=10.0))
    assert with_judge.call_s(judge) == pytest.approx(0.010)
    # a draft-only run measured no base cost: a base call that did work cannot be priced
    assert Costs(draft=costs.draft, base=None).call_s(judge) is None


def test_projection_prices_every_call_and_keeps_the_pipelined_overlap():
    step = Step(0, "draft", "t", 50, score=9.0, calls=[
        Call("draft", "draft", 140, 100, 50, 5.0), Call("base", "judge", 200, 140, 1, 2.0)])
    second = Step(1, "draft", "t", 20, score=9.0, calls=[
        Call("draft", "draft", 200, 190, 20, 2.0), Call("base", "judge", 230, 200, 1, 2.0)])
    answer = Call("base", "answer", 300, 290, 5, 1.0)
    costs = Costs(draft=RoleCost(4.0, 0.5, 2.0), base=RoleCost(30.0, 1.0, 3.0))
    line = record("specreason", [step, second], answer)
    draft_1, judge_1 = 0.002 + 0.020 + 0.200, 0.003 + 0.060 + 0.030
    draft_2, judge_2 = 0.002 + 0.005 + 0.080, 0.003 + 0.030 + 0.030
    answer_s = 0.003 + 0.010 + 0.150
    assert analytic_latency(line, costs) == pytest.approx(draft_1 + judge_1 + draft_2 + judge_2 + answer_s)
    # pipelined: the second draft ran while the first step was judged
    line["mode_info"] = {"pipeline": True}
    assert analytic_latency(line, costs) == pytest.approx(
        draft_1 + judge_1 + draft_2 + judge_2 + answer_s - min(draft_2, judge_2))


@pytest.mark.parametrize("report_dir", REPORTS, ids=lambda p: str(p.relative_to(ROOT / "eval" / "reports")))
def test_measured_costs_reproduce_every_shipped_reports_analytic_figures(report_dir, tmp_path):
    shipped = [json.loads(line) for line in (report_dir / "report.jsonl").read_text().splitlines()]
    shipped = {(r["dataset"], r["mode"]): r for r in shipped if "mode" in r}
    records_path = report_dir / "records.jsonl"
    measured = Costs.measured(per_token_costs(final_records(read_records(records_path))))
    projection = Costs.load(costs_file(tmp_path / "measured.json", measured))
    rows = build_report(records_path, [], projection=projection)["rows"]
    assert {(r["dataset"], r["mode"]) for r in rows} == set(shipped)
    for row in rows:
        was = shipped[row["dataset"], row["mode"]]
        assert row["projected"]["s_per_problem"] == pytest.approx(was["analytic_s_per_problem"], rel=0.01)
        assert row["projected"]["s_per_problem"] == pytest.approx(row["analytic_s_per_problem"], rel=1e-9)
        if row["analytic_speedup"] is not None:
            assert row["projected"]["speedup"] == pytest.approx(row["analytic_speedup"], rel=1e-9)


def test_the_shipped_cpu_costs_give_back_the_gsm8k_50_analytic_speedups(tmp_path, capsys):
    report_dir = ROOT / "eval" / "reports" / "gsm8k-50"
    shipped = [json.loads(line) for line in (report_dir / "report.jsonl").read_text().splitlines()]
    speedups = {r["mode"]: r["analytic_speedup"] for r in shipped if "mode" in r}
    assert report_main([str(report_dir / "records.jsonl"), "--report-dir", str(tmp_path),
                        "--costs", str(ROOT / "eval" / "hardware" / "cpu-gsm8k-50.json")]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    for row in rows[:-1]:
        assert row["projected"]["speedup"] == pytest.approx(speedups[row["mode"]], rel=0.01)
    assert rows[-1]["projection"]["judge"]["request_ms"] == pytest.approx(2670.3, abs=0.1)


def test_a_projection_is_labelled_as_one(tmp_path, capsys):
    report_dir = ROOT / "eval" / "reports" / "gsm8k-50"
    assert report_main([str(report_dir / "records.jsonl"), "--report-dir", str(tmp_path), "--costs", str(H100)]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION, not a measurement" in out and f"({H100})" in out
    assert "| dataset | mode | projected s/problem | projected speedup | measured analytic speedup " in out
    spec = [line for line in out.splitlines() if line.startswith("| gsm8k | specreason") and line.count("|") == 7][0]
    projected_speedup = float(spec.split("|")[4].strip().rstrip("x"))
    assert projected_speedup > 1.61  # the GPU pair's draft is ~7x cheaper per token, the CPU pair's 3.3x
    # the measured report is unchanged, every line of it; without --costs nothing is projected
    plain = build_report(report_dir / "records.jsonl", [])
    assert all(line in out.splitlines() for line in plain["markdown"].splitlines())
    assert "projected" not in plain["markdown"].lower() and plain["projection"] is None


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"),
    ('{"name": "x"}', "no 'draft' or 'base' costs"),
    ('{"draft": {"decode_ms_per_token": 4}, "base": {"decode_ms_per_token": 30}, "gpu": 1}', "unknown key\\(s\\) gpu"),
    ('{"draft": {"decode_ms_per_token": -4}, "base": {"decode_ms_per_token": 30}}',
     "draft.decode_ms_per_token: expected milliseconds >= 0, got -4"),
    ('{"draft": {"decode_ms": 4}, "base": {"decode_ms_per_token": 30}}', "draft: unknown key\\(s\\) decode_ms"),
    ('{"draft": {"decode_ms_per_token": 4}, "base": {"request_ms": 0}}', "base: every cost is 0"),
])
def test_a_bad_costs_file_is_named_with_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "costs.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=f"--costs {path}: .*{message}|--costs {path}: {message}"):
        Costs.load(path)


def test_report_refuses_a_missing_costs_file_by_flag(tmp_path, capsys):
    records = ROOT / "eval" / "reports" / "gsm8k-50" / "records.jsonl"
    with pytest.raises(SystemExit):
        report_main([str(records), "--report-dir", str(tmp_path), "--costs", str(tmp_path / "none.json")])
    assert "--costs " in capsys.readouterr().err
