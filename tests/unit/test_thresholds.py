"""Pure logic of faultline calibrate: expression split, Prometheus for-replay, recommendation,
rule file and promtool test writing (promtool itself runs in the last test)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.thresholds.offline import (
    Candidate,
    Window,
    evaluate,
    firing_mask,
    firing_times,
    margin_limit,
    recommend,
    split_expr,
)
from harness.thresholds.rulefile import (
    PromtoolCase,
    load_rule,
    metric_names,
    promtool_test,
    run_promtool_test,
    write_rule_file,
)

SLO = Path(__file__).resolve().parents[2] / "fixtures" / "alerts" / "orderd_slo.yml"
KEY = (("job", "orderd"),)


def test_split_expr_takes_the_top_level_comparison() -> None:
    lhs, op, thr = split_expr(
        "histogram_quantile(0.99, sum by (le) (rate(x[10s]))) > 0.72", rule="r"
    )
    assert (lhs, op, thr) == ("histogram_quantile(0.99, sum by (le) (rate(x[10s])))", ">", 0.72)
    assert split_expr("a:ratio <= 1e-3", rule="r") == ("a:ratio", "<=", 0.001)


@pytest.mark.parametrize(
    "expr",
    ["up == 0", "rate(x[1m]) > rate(y[1m])", "(a > 1", "a > 1 and b", "a > bool 1"],
)
def test_split_expr_refuses_other_shapes_naming_the_rule(expr: str) -> None:
    with pytest.raises(ConfigError, match=r"rule MyRule\.expr"):
        split_expr(expr, rule="MyRule")


def test_for_replay_matches_prometheus_semantics() -> None:
    # true at t=2,3,4 (for 2s: pending at 2, firing at 4), gap at 5, true again 6..9.
    values = [0, 0, 5, 5, 5, None, 5, 5, 5, 5]
    samples = [(float(t), None if v is None else float(v)) for t, v in enumerate(values)]
    assert firing_mask(samples, ">", 1.0, 2.0) == [False] * 4 + [
        True,
        False,
        False,
        False,
        True,
        True,
    ]
    assert firing_times(samples, ">", 1.0, 2.0) == [4.0, 8.0]
    assert firing_times(samples, ">", 1.0, 0.0) == [2.0, 6.0]
    assert firing_times(samples, ">", 5.0, 0.0) == []
    assert firing_times(samples, ">=", 5.0, 0.0) == [2.0, 6.0]


def _window(label: str, values: Sequence[float], injected: float | None = None) -> Window:
    return Window(
        label,
        None if injected is None else 1.0,
        injected,
        {KEY: [(float(t), v) for t, v in enumerate(values)]},
    )


def test_recommendation_is_safe_beyond_the_margin_and_fastest() -> None:
    baseline = [_window("b1", [10, 12, 11, 20, 10] * 4), _window("b2", [11] * 20)]
    # The fault: 15 (too small to tell), then 60 from t=5 on.
    faults = [_window("small", [15] * 20, injected=0.0), _window("big", [10] * 5 + [60] * 15, 5.0)]
    limit = margin_limit(baseline, ">", 1.0)
    assert limit == pytest.approx(20 + (20 - 11))  # worst + 1 x (worst - median)
    evals = [
        evaluate(Candidate(t, f), baseline, faults, ">", limit=limit, max_ttd=30)
        for t in (15.0, 25.0, 30.0, 50.0, 70.0)
        for f in (0.0, 2.0)
    ]
    by = {(e.candidate.threshold, e.candidate.for_s): e for e in evals}
    assert by[(15.0, 0.0)].false_positives == 4 and not by[(15.0, 0.0)].safe
    assert by[(25.0, 0.0)].false_positives == 0 and not by[(25.0, 0.0)].safe  # inside the margin
    assert by[(30.0, 2.0)].ttd == {"small": None, "big": 2.0}
    assert by[(70.0, 0.0)].ttd == {"small": None, "big": None}
    best = recommend(evals, ">")
    assert best is not None and best.candidate == Candidate(50.0, 0.0)  # ties: farther out


def test_recommendation_trades_a_second_of_ttd_for_room_from_the_baseline() -> None:
    baseline = [_window("b", [10, 12] * 10)]
    # The fault steps up from t=5: 50, 70, then 100.
    faults = [_window("step", [10] * 5 + [50, 70] + [100] * 13, 5.0)]
    limit = margin_limit(baseline, ">", 1.0)
    evals = [
        evaluate(Candidate(t, 0.0), baseline, faults, ">", limit=limit, max_ttd=30)
        for t in (15.0, 40.0, 60.0, 95.0, 120.0)
    ]
    by = {e.candidate.threshold: e for e in evals}
    assert [by[t].ttd["step"] for t in (15.0, 40.0, 60.0, 95.0)] == [0.0, 0.0, 1.0, 2.0]
    assert by[120.0].ttd["step"] is None
    best = recommend(evals, ">")
    # 60 fires one evaluation later than 15 and 40 and leaves the baseline 4x the room;
    # 95 is two evaluations later.
    assert best is not None and best.candidate.threshold == 60.0


def test_recommendation_for_a_less_than_rule() -> None:
    baseline = [_window("b", [1.0] * 20)]
    faults = [_window("errors", [1.0] * 5 + [0.99] * 15, 5.0)]
    limit = margin_limit(baseline, "<", 1.0)
    assert limit == pytest.approx(0.999)
    evals = [
        evaluate(Candidate(t, 1.0), baseline, faults, "<", limit=limit, max_ttd=30)
        for t in (0.9, 0.995, 0.9995)
    ]
    best = recommend(evals, "<")
    assert best is not None and best.candidate.threshold == 0.995
    assert best.ttd == {"errors": 1.0}


def test_load_rule_and_metric_names_follow_recording_rules() -> None:
    rule = load_rule(SLO, "OrderdSuccessRatioLow")
    assert (rule.lhs, rule.op, rule.threshold, rule.for_s) == (
        "orderd:success_ratio:rate10s",
        "<",
        0.998,
        3.0,
    )
    assert metric_names(rule) == ["orderd_http_requests_total"]
    assert rule.range_s == 10.0
    p99 = load_rule(SLO, "OrderdLatencyP99High")
    assert metric_names(p99) == ["orderd_http_request_duration_seconds_bucket"]
    with pytest.raises(ConfigError, match="--rule"):
        load_rule(SLO, "NoSuchRule")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="apt-get install prometheus")
def test_written_rule_and_generated_test_pass_promtool(tmp_path: Path) -> None:
    rule = load_rule(SLO, "OrderdSuccessRatioLow")
    out = write_rule_file(rule, 0.99, 2.0, tmp_path / SLO.name, header="test")
    assert load_rule(out, rule.name).threshold == 0.99
    assert load_rule(out, rule.name).for_s == 2.0
    ok_series = {"__name__": "orderd_http_requests_total", "job": "orderd", "code": "200"}
    bad_series = {**ok_series, "code": "503"}
    ok = [100.0 * t for t in range(60)]
    bad = [0.0] * 30 + [5.0 * t for t in range(30)]  # 5 % errors from 30 s
    case = PromtoolCase(
        "errors", [(ok_series, ok), (bad_series, bad)], [20], [45], {"job": "orderd"}
    )
    test = tmp_path / "orderd_slo_test.yml"
    test.write_text(promtool_test(out, rule, [case]))
    passed, output = run_promtool_test(test)
    assert passed, output
    # And the test can fail: expecting a firing where there is none.
    wrong = PromtoolCase("wrong", [(ok_series, ok)], [], [45], {"job": "orderd"})
    test.write_text(promtool_test(out, rule, [wrong]))
    assert not run_promtool_test(test)[0]


def test_calibration_html_draws_quantiles_and_ttd(tmp_path: Path) -> None:
    from harness.thresholds.cli import Calibration
    from harness.thresholds.html import write_html

    rule = load_rule(SLO, "OrderdLatencyP99High")
    baseline = [_window("baseline-1", [0.03, 0.035, 0.04] * 5)]
    faults = [_window("200ms", [0.03] * 5 + [0.25] * 10, 5.0)]
    limit = margin_limit(baseline, ">", 1.0)
    evals = [
        evaluate(Candidate(t, 1.0), baseline, faults, ">", limit=limit, max_ttd=30)
        for t in (0.035, 0.06, 0.1, 0.72)
    ]
    cal = Calibration(rule, baseline, faults, evals, recommend(evals, ">"), limit, tmp_path)
    page = write_html(cal, tmp_path / "calibration.html").read_text()
    assert "data:image/png;base64," in page and "(recommended)" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent.yml", "--rule", "X"], "RULE_FILE: /nonexistent.yml does not exist"),
        ([str(SLO), "--rule", "NoSuchRule"], "--rule: no alert 'NoSuchRule'"),
        ([str(SLO), "--rule", "OrderdThroughputDrop"], "rule OrderdThroughputDrop.expr"),
        ([str(SLO), "--rule", "OrderdLatencyP99High", "--intensities", "a,b"], "--intensities"),
        (
            [str(SLO), "--rule", "OrderdLatencyP99High", "--jitter", "100", "--intensities", "50"],
            "--jitter",
        ),
        ([str(SLO), "--rule", "OrderdLatencyP99High", "--for", "soon"], "--for: 'soon'"),
        ([str(SLO), "--rule", "OrderdLatencyP99High", "--baseline-runs", "0"], "--baseline-runs"),
    ],
)
def test_calibrate_bad_input_exits_2_naming_the_flag_with_no_run_made(
    tmp_path: Path, args: list[str], message: str
) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "calibrate", *args],
        capture_output=True,
        text=True,
        env={"FAULTLINE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()
