"""Checks over hand-built timelines: pass, fail, unknown, and never raising."""

from __future__ import annotations

import pytest

from harness.checks import (
    Budget,
    CheckResult,
    Status,
    alert_fired_within,
    alert_quiet,
    budget_checks,
    detected_within,
    fault_took_effect,
    fault_window,
    merge,
    recovered_within,
)
from harness.errors import ConfigError
from harness.timeline import Sample, Timeline


def _incident() -> Timeline:
    tl = Timeline(origin=0.0, wall_origin=1000.0)
    tl.event("alert.pending", "EtcdNoLeader", at=5.0)  # a blip in the baseline
    tl.event("fault.injected", "kill-majority", at=10.0)
    tl.event("etcd.quorum_lost", "etcd", at=10.4)
    tl.event("alert.pending", "EtcdNoLeader", at=11.0)
    tl.event("alert.firing", "EtcdNoLeader", at=13.5)
    tl.event("detector.hit", "panic", at=12.0)
    tl.event("fault.reverted", "kill-majority", at=30.0)
    tl.event("alert.resolved", "EtcdNoLeader", at=33.0)
    return tl


def _r(status: Status) -> CheckResult:
    return CheckResult("x", status, "")


def test_merge_order() -> None:
    p, u, f = Status.PASSED, Status.UNKNOWN, Status.FAILED
    assert merge([_r(p), _r(p)]) is p
    assert merge([_r(p), _r(u)]) is u
    assert merge([_r(u), _r(f), _r(p)]) is f
    assert merge([p, f]) is f
    assert merge([]) is u


def test_budget_scales_and_validates() -> None:
    b = Budget(max_ttd=10, max_ttr=30, scale=1.5)
    assert (b.ttd, b.ttr) == (15.0, 45.0)
    assert Budget().ttd is None
    with pytest.raises(ConfigError, match=r"budget\.scale"):
        Budget(max_ttd=1, scale=0)
    with pytest.raises(ConfigError, match=r"budget\.max_ttd"):
        Budget(max_ttd=-1)
    with pytest.raises(ConfigError, match="must_stay_quiet"):
        Budget(must_fire=("A",), must_stay_quiet=("A",))


def test_fault_window() -> None:
    tl = _incident()
    assert fault_window(tl, "kill-majority") == (10.0, 30.0)
    assert fault_window(tl, "other") is None


def test_fault_took_effect() -> None:
    tl = _incident()
    ok = fault_took_effect(tl, "etcd.quorum_lost", fault="kill-majority")
    assert ok.status is Status.PASSED and ok.figures["evidence_after_s"] == pytest.approx(0.4)
    late = fault_took_effect(tl, "etcd.quorum_lost", fault="kill-majority", within=0.2)
    assert late.status is Status.FAILED
    none = fault_took_effect(tl, "oom.killed", fault="kill-majority")
    assert none.status is Status.FAILED and "no visible effect" in none.message
    assert fault_took_effect(tl, "oom.killed", fault="never").status is Status.UNKNOWN


def test_alert_fired_within_budget() -> None:
    tl = _incident()
    ok = alert_fired_within(tl, "EtcdNoLeader", fault="kill-majority", budget=Budget(max_ttd=5))
    assert ok.status is Status.PASSED and ok.figures["ttd_s"] == pytest.approx(3.5)
    slow = alert_fired_within(tl, "EtcdNoLeader", fault="kill-majority", budget=3.0)
    assert slow.status is Status.FAILED and "over budget" in slow.message
    # a scale factor for slow machines turns the same run into a pass
    scaled = Budget(max_ttd=3.0, scale=2.0)
    assert (
        alert_fired_within(tl, "EtcdNoLeader", fault="kill-majority", budget=scaled).status
        is Status.PASSED
    )
    never = alert_fired_within(tl, "EtcdInsufficientMembers", fault="kill-majority", budget=5)
    assert never.status is Status.FAILED and never.figures["ttd_s"] is None
    nobudget = alert_fired_within(tl, "EtcdNoLeader", fault="kill-majority", budget=Budget())
    assert nobudget.status is Status.UNKNOWN


def test_detected_within() -> None:
    tl = _incident()
    r = detected_within(tl, fault="kill-majority", kind="detector.hit", name="panic", budget=5)
    assert r.status is Status.PASSED and r.figures["ttd_s"] == pytest.approx(2.0)
    r = detected_within(tl, fault="kill-majority", kind="detector.hit", name="data_race", budget=5)
    assert r.status is Status.FAILED


def test_alert_quiet() -> None:
    tl = _incident()
    baseline = alert_quiet(tl, "EtcdNoLeader", (0.0, 10.0))
    assert baseline.status is Status.PASSED and baseline.figures["pending"] == 1.0
    during = alert_quiet(tl, "EtcdNoLeader", (0.0, 40.0))
    assert during.status is Status.FAILED and during.figures["first_firing_t"] == 13.5
    after = alert_quiet(tl, "EtcdNoLeader", (33.5, 50.0))
    assert after.status is Status.PASSED
    # firing before the window and still unresolved inside it is not quiet
    tl.event("alert.firing", "Other", at=1.0)
    assert alert_quiet(tl, "Other", (20.0, 25.0)).status is Status.FAILED
    assert alert_quiet(tl, "Other", (5.0, 1.0)).status is Status.UNKNOWN


def test_recovered_within() -> None:
    # error ratio per second: bad from 10 s, back to normal at 34 s, a relapse at 36 s
    values = [0.0] * 10 + [0.5] * 24 + [0.0, 0.0, 0.3] + [0.0] * 10
    series = [Sample(float(t), v) for t, v in enumerate(values)]
    healthy = lambda v: v < 0.01  # noqa: E731
    r = recovered_within(series, 30.0, healthy, 3.0, Budget(max_ttr=10), name="error_ratio")
    assert r.status is Status.PASSED and r.figures["ttr_s"] == pytest.approx(7.0)
    assert r.name == "recovered_within:error_ratio"
    assert recovered_within(series, 30.0, healthy, 3.0, 5.0).status is Status.FAILED
    never = recovered_within(series, 30.0, lambda v: v < 0, 1.0, 10.0)
    assert never.status is Status.FAILED and never.figures["ttr_s"] is None
    assert recovered_within(series, 99.0, healthy, 1.0, 10.0).status is Status.UNKNOWN
    assert recovered_within(series, 30.0, healthy, 1.0, Budget()).status is Status.UNKNOWN


def test_crashing_check_is_unknown() -> None:
    series = [Sample(0.0, 1.0), Sample(1.0, 2.0)]

    def broken(v: float) -> bool:
        raise ZeroDivisionError("boom")

    r = recovered_within(series, 0.0, broken, 0.0, 5.0)
    assert r.status is Status.UNKNOWN and "boom" in r.message
    bad = fault_took_effect(None, "x", fault="f")  # type: ignore[arg-type]
    assert bad.status is Status.UNKNOWN and "crashed" in bad.message


def test_budget_checks() -> None:
    tl = _incident()
    budget = Budget(
        max_ttd=5, must_fire=("EtcdNoLeader",), must_stay_quiet=("OrderdLatencyP99High",)
    )
    results = budget_checks(tl, budget, fault="kill-majority", quiet_window=(0.0, 40.0))
    assert [r.name for r in results] == [
        "alert_fired_within:EtcdNoLeader",
        "alert_quiet:OrderdLatencyP99High",
    ]
    assert merge(results) is Status.PASSED
