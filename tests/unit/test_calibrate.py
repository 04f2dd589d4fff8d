"""The calibration table and its checks over hand-built timelines."""

from __future__ import annotations

import math

import pytest

from harness.calibrate import (
    Expectation,
    FaultWindow,
    calibrate,
    calibration_checks,
    fault_windows,
    firing_intervals,
    validate_expectations,
)
from harness.checks import Status
from harness.errors import ConfigError
from harness.timeline import Timeline

RULES = ["LatencyHigh", "ErrorsHigh", "Noisy", "Restarted"]


def _alert(tl: Timeline, kind: str, rule: str, at: float, instance: str = "a") -> None:
    tl.event(f"alert.{kind}", rule, at=at, labels={"alertname": rule, "instance": instance})


def _story() -> Timeline:
    """Baseline 0-10; cpu 10-20 (then quiet to 30); errors 30-40 (observed to the end)."""
    tl = Timeline(origin=0.0, wall_origin=1000.0)
    # Noisy fires on the baseline; ErrorsHigh only goes pending there (a near miss).
    _alert(tl, "pending", "Noisy", 2.0)
    _alert(tl, "firing", "Noisy", 4.0)
    _alert(tl, "resolved", "Noisy", 6.0)
    _alert(tl, "pending", "ErrorsHigh", 7.0)
    _alert(tl, "resolved", "ErrorsHigh", 8.0)
    tl.event("fault.injected", "throttle", at=10.0)
    _alert(tl, "pending", "LatencyHigh", 12.0)
    _alert(tl, "firing", "LatencyHigh", 15.0)
    tl.event("fault.reverted", "throttle", at=20.0)
    _alert(tl, "resolved", "LatencyHigh", 26.0)
    # Restarted fires late in the cpu window and is still firing when errors start.
    _alert(tl, "firing", "Restarted", 25.0)
    tl.event("fault.injected", "kill-a", at=30.0)
    tl.event("fault.injected", "kill-b", at=30.5)
    _alert(tl, "firing", "ErrorsHigh", 33.0, instance="a")
    _alert(tl, "firing", "ErrorsHigh", 34.0, instance="b")
    _alert(tl, "resolved", "ErrorsHigh", 36.0, instance="a")  # b still firing
    tl.event("fault.reverted", "kill-b", at=39.0)
    tl.event("fault.reverted", "kill-a", at=40.0)
    _alert(tl, "resolved", "ErrorsHigh", 43.0, instance="b")
    return tl


MECHS = {"cpu": ["throttle"], "errors": ["kill-a", "kill-b"], "never": ["not-injected"]}


def test_fault_windows_span_all_faults_of_a_mechanism_in_time_order() -> None:
    windows = fault_windows(_story(), MECHS)
    assert windows == [FaultWindow("cpu", 10.0, 20.0), FaultWindow("errors", 30.0, 40.0)]


def test_a_fault_not_reverted_leaves_its_window_open() -> None:
    tl = Timeline(origin=0.0)
    tl.event("fault.injected", "x", at=1.0)
    tl.event("fault.injected", "y", at=2.0)
    tl.event("fault.reverted", "y", at=3.0)
    assert fault_windows(tl, {"m": ["x", "y"]}) == [FaultWindow("m", 1.0, None)]


def test_firing_intervals_are_per_label_set_then_merged() -> None:
    tl = _story()
    # instance a resolving at 36 does not end b's firing, which lasts to 43.
    assert firing_intervals(tl, "ErrorsHigh") == [(33.0, 43.0)]
    assert firing_intervals(tl, "Restarted") == [(25.0, math.inf)]
    assert firing_intervals(tl, "Unknown") == []


def test_table_scores_baseline_ttd_ttr_and_carry_over() -> None:
    tl = _story()
    table = calibrate(tl, rules=RULES, baseline=(0.0, 10.0), windows=fault_windows(tl, MECHS))
    noisy, errors = table.row("Noisy"), table.row("ErrorsHigh")
    latency, restarted = table.row("LatencyHigh"), table.row("Restarted")
    assert noisy is not None and errors is not None and latency is not None
    assert restarted is not None
    assert (noisy.baseline_firings, noisy.baseline_pending) == (1, 0)
    assert (errors.baseline_firings, errors.baseline_pending) == (0, 1)
    cpu = latency.result("cpu")
    assert cpu is not None
    assert (cpu.ttp, cpu.ttd, cpu.ttr, cpu.carried) == (2.0, 5.0, 6.0, False)
    assert latency.fired_under == ["cpu"]
    err = errors.result("errors")
    assert err is not None and (err.ttd, err.ttr) == (3.0, 3.0)
    # Fired in the cpu window (after its revert: a lagging rule), never resolved.
    late = restarted.result("cpu")
    assert late is not None and (late.ttd, late.ttr) == (15.0, None)
    carried = restarted.result("errors")
    assert carried is not None and carried.carried and not carried.fired


def test_a_rule_that_resolved_before_the_revert_has_zero_ttr() -> None:
    tl = Timeline(origin=0.0)
    tl.event("fault.injected", "f", at=10.0)
    _alert(tl, "firing", "ErrorsHigh", 11.0)
    _alert(tl, "resolved", "ErrorsHigh", 12.0)
    tl.event("fault.reverted", "f", at=20.0)
    table = calibrate(
        tl, rules=["ErrorsHigh"], baseline=(0.0, 10.0), windows=fault_windows(tl, {"m": ["f"]})
    )
    row = table.row("ErrorsHigh")
    assert row is not None and row.windows[0].ttr == 0.0


def test_checks_pass_fail_and_unknown() -> None:
    tl = _story()
    table = calibrate(tl, rules=RULES, baseline=(0.0, 10.0), windows=fault_windows(tl, MECHS))
    expectations = [
        Expectation("LatencyHigh", "cpu", max_ttd=6.0, max_ttr=10.0),  # passes
        Expectation("ErrorsHigh", "errors", max_ttd=2.0, max_ttr=2.0),  # both over budget
        Expectation("ErrorsHigh", "cpu", max_ttd=30.0),  # never fired there
        Expectation("Restarted", "errors", max_ttd=30.0, max_ttr=5.0),  # carried over
        Expectation("Restarted", "cpu", max_ttd=30.0, max_ttr=5.0),  # still firing
        Expectation("LatencyHigh", "never", max_ttd=5.0),  # mechanism never injected
    ]
    got = {c.name: c for c in calibration_checks(table, expectations)}
    status = {name: c.status for name, c in got.items()}
    assert status == {
        "baseline_quiet:every_rule": Status.FAILED,
        "fires_within:LatencyHigh@cpu": Status.PASSED,
        "resolves_within:LatencyHigh@cpu": Status.PASSED,
        "fires_within:ErrorsHigh@errors": Status.FAILED,
        "resolves_within:ErrorsHigh@errors": Status.FAILED,
        "fires_within:ErrorsHigh@cpu": Status.FAILED,
        "fires_within:Restarted@errors": Status.UNKNOWN,
        "resolves_within:Restarted@errors": Status.UNKNOWN,
        "fires_within:Restarted@cpu": Status.PASSED,
        "resolves_within:Restarted@cpu": Status.FAILED,
        "fires_within:LatencyHigh@never": Status.UNKNOWN,
    }
    assert "Noisy" in got["baseline_quiet:every_rule"].message
    assert got["fires_within:LatencyHigh@cpu"].figures["ttd_s"] == 5.0
    assert "never fired" in got["fires_within:ErrorsHigh@cpu"].message
    assert "still firing" in got["resolves_within:Restarted@cpu"].message


def test_budget_scale_widens_every_budget() -> None:
    tl = _story()
    table = calibrate(tl, rules=RULES, baseline=(0.0, 10.0), windows=fault_windows(tl, MECHS))
    tight = [Expectation("ErrorsHigh", "errors", max_ttd=2.0, max_ttr=2.0)]
    assert {c.status for c in calibration_checks(table, tight, scale=1.0)[1:]} == {Status.FAILED}
    assert {c.status for c in calibration_checks(table, tight, scale=2.0)[1:]} == {Status.PASSED}


def test_quiet_baseline_passes_and_no_rules_is_unknown() -> None:
    tl = _story()
    windows = fault_windows(tl, MECHS)
    quiet = calibrate(tl, rules=RULES, baseline=(7.0, 10.0), windows=windows)
    assert calibration_checks(quiet, [])[0].status is Status.PASSED
    empty = calibrate(tl, rules=[], baseline=(0.0, 10.0), windows=windows)
    assert calibration_checks(empty, [])[0].status is Status.UNKNOWN


def test_figures_and_rendered_table() -> None:
    tl = _story()
    table = calibrate(tl, rules=RULES, baseline=(0.0, 10.0), windows=fault_windows(tl, MECHS))
    figures = table.to_figures()
    assert figures["LatencyHigh"] == {"FP": 0.0, "TTD cpu": 5.0, "TTD errors": None, "TTR": 6.0}
    assert figures["Noisy"]["FP"] == 1.0
    assert figures["Restarted"]["TTR"] is None
    text = table.render([Expectation("LatencyHigh", "cpu", max_ttd=6.0)])
    lines = {line.split()[0]: line.split() for line in text.splitlines()}
    assert lines["rule"] == ["rule", "baseline", "cpu", "errors", "TTR"]
    assert lines["LatencyHigh"] == ["LatencyHigh", "-", "5.0s*", "-", "6.0s"]
    assert lines["Noisy"][1:3] == ["FIRED", "x1"]
    assert lines["ErrorsHigh"][1] == "pend"
    assert lines["Restarted"] == ["Restarted", "-", "15.0s", "carry", "never"]


@pytest.mark.parametrize(
    ("expectation", "field"),
    [
        (Expectation("Nope", "cpu", max_ttd=1.0), "expectations[0].rule"),
        (Expectation("LatencyHigh", "nope", max_ttd=1.0), "expectations[0].mechanism"),
        (Expectation("LatencyHigh", "cpu", max_ttd=0.0), "expectations[0].max_ttd"),
        (Expectation("LatencyHigh", "cpu", max_ttd=1.0, max_ttr=math.nan), "max_ttr"),
    ],
)
def test_bad_expectations_name_the_field(expectation: Expectation, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_expectations([expectation], rules=RULES, mechanisms=MECHS)


def test_duplicate_expectation_refused() -> None:
    e = Expectation("LatencyHigh", "cpu", max_ttd=1.0)
    with pytest.raises(ConfigError, match="listed twice"):
        validate_expectations([e, e], rules=RULES, mechanisms=MECHS)


def test_inverted_baseline_refused() -> None:
    with pytest.raises(ConfigError, match=r"calibrate\.baseline"):
        calibrate(Timeline(origin=0.0), rules=RULES, baseline=(5.0, 1.0), windows=[])
