"""The scale-out report: the cache-aware router held to the comma list's cache share, and the
fault run held to nothing lost."""

import pytest

from sgl_specreason.eval.router_report import measured_command, table, verdicts, write_report


def line(setup, per_s, draft, base, round_=1):
    return {"setup": setup, "round": round_, "num_requests": 16, "other": {
        "errors": 0, "problems_per_s": per_s, "problem_latency_s": {"p50": 10.0, "p99": 20.0},
        "cache_hit_ratio": {"draft": draft, "base": base}, "acceptance_rate": 0.5}}


def test_cache_share_within_five_points_and_nothing_lost(tmp_path):
    records = [line("router cache_aware", 0.2, 0.80, 0.90), line("router round_robin", 0.15, 0.40, 0.50),
               line("comma list", 0.19, 0.82, 0.97),
               {"setup": "fault: a base worker killed half-way (router cache_aware)", "problems": 16,
                "expected": 16, "lost": 0, "duplicated": 0, "errors": 0, "healthy_base_workers_after": 1,
                "base_workers": 2}]
    out = verdicts(records)
    assert out[0].startswith("- met: draft cache share through the cache-aware router 80.0 %")
    assert out[1].startswith("- NOT met: base cache share") and "97.0 %" in out[1]
    assert "1.05x" in out[2] and out[3].startswith("- met: a base worker killed half-way: 0 lost")
    assert "| router round_robin | 1 | 16 | 0 | 0.1500 |" in table(records)
    write_report(records, tmp_path, "--workers 2")
    assert (tmp_path / "router.png").exists() and "## Targets" in (tmp_path / "README.md").read_text()
    assert measured_command(tmp_path) == "--workers 2" and "What it says" not in (tmp_path / "README.md").read_text()
    (tmp_path / "notes.md").write_text("- the router stays\n")
    write_report(records, tmp_path, "--workers 2")
    assert (tmp_path / "README.md").read_text().endswith("## What it says\n\n- the router stays\n")


def test_rounds_are_averaged_and_their_range_shown():
    records = [line("router cache_aware", 0.2, 0.80, 0.90), line("comma list", 0.2, 0.70, 0.95),
               line("router cache_aware", 0.3, 0.90, 0.80, 2), line("comma list", 0.1, 0.80, 0.85, 2)]
    out = verdicts(records)
    assert out[0] == ("- met: draft cache share through the cache-aware router 85.0 (80.0-90.0) % against the "
                      "comma list's 75.0 (70.0-80.0) % (within 5 points, or better)")
    assert out[1].startswith("- met: base cache share through the cache-aware router 85.0 (80.0-90.0) %")
    assert out[2] == ("- throughput: cache-aware router 0.2500 (0.2000-0.3000) problems/s, comma list "
                      "0.1500 (0.1000-0.2000) (1.67x)")


def test_several_urls_for_one_role_are_refused_with_the_router_as_the_way():
    # the project's own replica list is gone (the router matched it: eval/reports/router)
    from sgl_specreason.config import SpecReasonConfig
    from sgl_specreason.errors import ConfigError
    from sgl_specreason.runner import RuntimeOptions, open_runtimes
    from sgl_specreason.trace import BASE

    with pytest.raises(ConfigError, match=r"--base-url takes one URL, got 2 .*--base-workers 2 --router"):
        with open_runtimes(RuntimeOptions(base_url="http://127.0.0.1:1,http://127.0.0.1:2"), SpecReasonConfig(),
                           (BASE,)):
            pass
    with pytest.raises(ConfigError, match="no URL"):
        with open_runtimes(RuntimeOptions(base_url=" , "), SpecReasonConfig(), (BASE,)):
            pass
