"""report.json against its schema, TTD/TTR derivation, HTML and terminal rendering."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from harness.checks import Budget, Status, alert_fired_within, alert_quiet, recovered_within
from harness.report import (
    SCHEMA_PATH,
    as_report,
    build_report,
    junit_properties,
    render_html,
    render_terminal,
    timeline_from_dict,
    validate_report,
    write_reports,
)
from harness.run import Run
from harness.scenario import Incident
from harness.timeline import Timeline


def _incident_timeline() -> Timeline:
    """60 s: 100 req/s with P99 40 ms; a leader kill at 20 s, reverted at 40 s."""
    tl = Timeline(origin=0.0, wall_origin=1_800_000_000.0)
    for t in range(60):
        bad = 20 <= t < 43
        tl.sample("p99_latency_s", 1.8 if bad else 0.04, at=float(t))
        tl.sample("error_ratio", 0.3 if bad else 0.0, at=float(t))
        tl.sample("etcd_has_leader", 0.0 if 21 <= t < 41 else 1.0, at=float(t))
        tl.sample("go_goroutines", 40.0 + (3 * (t - 20) if t >= 20 else 0), at=float(t))
    tl.sample("nan_series", math.nan, at=1.0)
    tl.event("phase.start", "baseline", at=0.0)
    tl.event("fault.injected", "kill-leader", at=20.0, target="etcd-1")
    tl.event("etcd.quorum_lost", "etcd", at=20.6, last_leader="etcd-1")
    labels = {"alertname": "EtcdNoLeader", "severity": "critical", "job": "etcd"}
    tl.event("alert.pending", "EtcdNoLeader", at=21.0, labels=labels, value=0.0)
    tl.event("alert.firing", "EtcdNoLeader", at=23.4, labels=labels, value=0.0)
    tl.event("alert.pending", "OrderdLatencyP99High", at=22.0, labels={}, value=1.8)
    tl.event("alert.firing", "OrderdLatencyP99High", at=25.1, labels={}, value=1.8)
    tl.event(
        "detector.hit",
        "panic",
        at=30.0,
        workload="orderd",
        stack="panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:3 +0x1",
        top_frame="main.main (/src/main.go:3)",
    )
    tl.event("fault.reverted", "kill-leader", at=40.0)
    tl.event("alert.resolved", "EtcdNoLeader", at=42.2, labels=labels, was="firing")
    tl.event("alert.resolved", "OrderdLatencyP99High", at=45.5, labels={}, was="firing")
    return tl


def _checks(tl: Timeline, budget: Budget) -> list:  # type: ignore[type-arg]
    return [
        alert_fired_within(tl, "EtcdNoLeader", fault="kill-leader", budget=budget),
        alert_quiet(tl, "EtcdNoLeader", (0.0, 20.0)),
        recovered_within(
            tl.series("error_ratio"), 40.0, lambda v: v < 0.01, 3.0, budget, name="error_ratio"
        ),
    ]


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_report_content_and_schema() -> None:
    tl = _incident_timeline()
    budget = Budget(max_ttd=5, max_ttr=10, must_fire=("EtcdNoLeader",))
    report = build_report(
        tl, scenario="etcd-leader-loss", checks=_checks(tl, budget), budget=budget
    )
    validate_report(report)
    assert report["schema_version"] == 2
    assert report["verdict"] == "passed"
    assert report["faults"] == [
        {
            "name": "kill-leader",
            "injected_at": 20.0,
            "reverted_at": 40.0,
            "detail": {"target": "etcd-1"},
        }
    ]
    assert report["ttd"] == [
        {
            "fault": "kill-leader",
            "seconds": 3.4,
            "by": "alert.firing:EtcdNoLeader",
            "window_end": None,
        }
    ]
    # TTR waits for the last alert that fired during the fault; the SLO check counts too
    assert report["ttr"] == [
        {
            "fault": "kill-leader",
            "seconds": 5.5,
            "unresolved": [],
            "alerts": [
                {
                    "alert": "EtcdNoLeader",
                    "labels": {"severity": "critical", "job": "etcd"},
                    "resolved_after_s": 2.2,
                },
                {"alert": "OrderdLatencyP99High", "labels": {}, "resolved_after_s": 5.5},
            ],
            "observed_after_s": 19.0,
            "slo": [{"check": "error_ratio", "status": "passed", "seconds": 3.0}],
        }
    ]
    states = [(a["alert"], a["state"]) for a in report["alerts"]]
    assert states[:2] == [("EtcdNoLeader", "pending"), ("OrderdLatencyP99High", "pending")]
    kinds = {d["kind"] for d in report["detections"]}
    assert kinds == {"phase.start", "etcd.quorum_lost", "detector.hit"}
    assert report["series"]["nan_series"] == []  # NaN is not JSON: dropped
    json.dumps(report, allow_nan=False)


def test_unresolved_alert_leaves_ttr_unknown_and_verdict_merges() -> None:
    tl = _incident_timeline()
    tl.event("alert.pending", "EtcdInsufficientMembers", at=24.0, labels={})
    tl.event("alert.firing", "EtcdInsufficientMembers", at=27.0, labels={})
    budget = Budget(max_ttd=2, max_ttr=10)
    report = build_report(tl, scenario="s", checks=_checks(tl, budget), budget=budget)
    row = report["ttr"][0]
    assert (row["seconds"], row["unresolved"]) == (None, ["EtcdInsufficientMembers"])
    assert row["alerts"][-1] == {
        "alert": "EtcdInsufficientMembers",
        "labels": {},
        "resolved_after_s": None,
    }
    assert report["verdict"] == "failed"  # TTD 3.4 s over the 2 s budget
    validate_report(report)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("schema_version", 1),
        ("verdict", "ok"),
        ("alerts", [{"t": 1.0, "alert": "A", "state": "inactive", "labels": {}}]),
        ("checks", [{"name": "c", "status": "passed", "message": "m", "figures": {"x": [1]}}]),
        ("surprise", 1),
    ],
)
def test_schema_rejects_malformed_reports(path: str, value: object) -> None:
    report = build_report(_incident_timeline(), scenario="s", checks=[])
    report[path] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)


def test_write_reports_html_has_the_picture(tmp_path: Path) -> None:
    tl = _incident_timeline()
    budget = Budget(max_ttd=5, max_ttr=10)
    report = build_report(
        tl, scenario="etcd-leader-loss", checks=_checks(tl, budget), budget=budget
    )
    json_path, html_path = write_reports(tmp_path / "out", report)
    assert json.loads(json_path.read_text()) == report
    page = html_path.read_text()
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert m is not None
    png = base64.b64decode(m.group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "timeline.png").write_bytes(png)  # kept for a look when debugging
    assert "TTD" in page and "main.main (/src/main.go:3)" in page
    assert "&lt;" not in report["scenario"]


def test_incident_dict_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    run = Run.open(watchdog=False)
    try:
        budget = Budget(max_ttd=5, max_ttr=10)
        incident = Incident(
            name="etcd-leader-loss",
            title="leader killed",
            seed="seed 000",
            run=run,
            budget=budget,
            report_dir=tmp_path / "reports",
        )
        src = _incident_timeline()
        for e in src.events():
            run.timeline.event(e.kind, e.name, at=e.t, **e.detail)
        for name in src.series_names():
            for s in src.series(name):
                run.timeline.sample(name, s.value, at=s.t)
        incident.check(*_checks(run.timeline, budget))
        incident.figure("error_ratio", normal=0.0, worst=0.3, recovered=0.0)
        out = incident.finish()
        report = json.loads((out / "report.json").read_text())
        validate_report(report)
        assert (
            report["title"] == "leader killed" and report["figures"]["error_ratio"]["worst"] == 0.3
        )
        assert report["ttd"][0]["seconds"] == 3.4
        props = dict(junit_properties(incident.to_dict()))
        assert props["faultline.verdict"] == "passed"
        assert props["faultline.ttd_s.kill-leader"] == 3.4
        assert props["faultline.ttr_s.kill-leader"] == 5.5
        assert props["faultline.check.alert_fired_within:EtcdNoLeader"] == "passed"
        assert as_report(report) == report
    finally:
        assert run.close() == []


def test_timeline_from_dict_keeps_clashing_detail_keys() -> None:
    tl = Timeline(origin=0.0, wall_origin=5.0)
    tl.event("load.phase", "ramp", at=1.5, name_of="x")
    data = tl.to_dict()
    data["events"][0]["detail"]["name"] = "clash"
    back = timeline_from_dict(data)
    assert back.events()[0].detail == {"name_of": "x", "detail_name": "clash"}
    assert back.wall_origin == 5.0


def test_junit_never_is_minus_one_and_terminal_table() -> None:
    tl = Timeline(origin=0.0, wall_origin=0.0)
    tl.event("fault.injected", "f", at=1.0)
    report = build_report(tl, scenario="quiet", checks=[])
    assert report["verdict"] == Status.UNKNOWN.value
    assert dict(junit_properties(report))["faultline.ttd_s.f"] == -1.0
    buf = io.StringIO()
    report["figures"] = {"p99_s": {"normal": 0.04, "worst": None}}
    render_terminal(report, Console(file=buf, width=100))
    text = buf.getvalue()
    assert "quiet: UNKNOWN" in text and "TTD never" in text and "p99_s" in text


def _storm_timeline() -> Timeline:
    """The flagship's shape: a control fault (CPU pressure) held while the real one
    (the storm) joins it; both reverted together; one alert stays firing by design."""
    tl = Timeline(origin=0.0, wall_origin=0.0)
    for t in range(50):
        tl.sample("ok", 0.5 if 22 <= t < 31 else 1.0, at=float(t))
    tl.event("fault.injected", "cpu-squeeze", at=10.0)
    tl.event("fault.injected", "tls-storm", at=20.0)
    tl.event("alert.pending", "EtcdLeaderChanged", at=21.0, labels={"instance": "a"})
    tl.event("alert.firing", "EtcdLeaderChanged", at=21.5, labels={"instance": "a"})
    tl.event("alert.firing", "P99High", at=24.0, labels={})
    tl.event("fault.reverted", "tls-storm", at=30.0)
    tl.event("fault.reverted", "cpu-squeeze", at=30.05)
    tl.event("alert.resolved", "P99High", at=36.0, labels={})
    return tl


def test_a_control_fault_is_not_credited_with_the_later_faults_alert() -> None:
    tl = _storm_timeline()
    rec = recovered_within(tl.series("ok"), 30.1, lambda v: v >= 0.99, 3.0, 30.0, name="ok")
    report = build_report(tl, scenario="storm", checks=[rec])
    validate_report(report)
    squeeze, storm = report["ttd"]
    assert squeeze == {"fault": "cpu-squeeze", "seconds": None, "by": None, "window_end": 20.0}
    assert (storm["seconds"], storm["by"]) == (1.5, "alert.firing:EtcdLeaderChanged")
    ttr_squeeze, ttr_storm = report["ttr"]
    assert ttr_squeeze["alerts"] == [] and ttr_squeeze["seconds"] is None
    # The SLO came back 0.9 s after both reverts: both faults show it.
    assert (
        ttr_squeeze["slo"]
        == ttr_storm["slo"]
        == [{"check": "ok", "status": "passed", "seconds": 0.9}]
    )
    assert ttr_storm["unresolved"] == ["EtcdLeaderChanged"]
    assert ttr_storm["observed_after_s"] == 19.0
    buf = io.StringIO()
    render_terminal(report, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "never (unresolved" not in text
    assert "TTR, SLO back: 0.90s ok (passed)" in text
    assert "P99High 6.00s after revert" in text
    assert "still firing 19.0s after the revert when the run ended" in text
    assert "cpu-squeeze: TTD never (own window to t=20.00s)" in text
    page = render_html(report)
    assert "0.90s ok (passed)" in page and "resolution beyond the run" in page


def test_a_recovery_check_before_a_later_injection_belongs_to_the_earlier_fault() -> None:
    tl = Timeline(origin=0.0, wall_origin=0.0)
    for t in range(40):
        tl.sample("ok", 1.0, at=float(t))
    tl.event("fault.injected", "first", at=5.0)
    tl.event("fault.reverted", "first", at=10.0)
    tl.event("fault.injected", "second", at=20.0)
    tl.event("fault.reverted", "second", at=25.0)
    checks = [
        recovered_within(tl.series("ok"), 10.0, bool, 1.0, 5.0, name="after first"),
        recovered_within(tl.series("ok"), 25.0, bool, 1.0, 5.0, name="after second"),
    ]
    report = build_report(tl, scenario="two", checks=checks)
    assert [[s["check"] for s in r["slo"]] for r in report["ttr"]] == [
        ["after first"],
        ["after second"],
    ]


def test_seed_comparison_puts_seed_and_measured_side_by_side_as_ratios() -> None:
    from harness.report.seeds import seed_comparison, seed_figures

    seed = seed_figures()["etcd-tls-storm"]
    assert seed["rows"]["P95 latency (ms)"]["worst"] == 4200.0
    table = seed_comparison(
        "etcd-tls-storm",
        {"P95 latency (ms)": {"normal": 20.0, "worst": 1000.0, "recovered": 25.0}},
    )
    assert table is not None
    rows = {r["metric"]: r for r in table["rows"]}
    p95 = rows["P95 latency (ms)"]
    assert p95["seed_ratio"] == {"worst": 48.84, "after": None}  # 4200 / 86; no after figure
    assert p95["measured_ratio"] == {"worst": 50.0, "after": 1.25}
    assert rows["throughput (req/s)"]["measured"] == {"before": None, "worst": None, "after": None}
    assert seed_comparison("no-such-scenario", {}) is None


def test_bad_seed_figures_file_names_the_field(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.report.seeds import seed_figures

    bad = tmp_path / "seed_figures.json"
    bad.write_text(
        json.dumps({"s": {"source": "x", "rows": {"m": {"seed_metric": "y", "worst": "a"}}}})
    )
    with pytest.raises(ConfigError, match=r"s\.rows\.m\.worst: 'a'"):
        seed_figures(bad)


def test_incident_report_carries_the_seed_table_and_the_loaded_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    run = Run.open(watchdog=False)
    try:
        incident = Incident(
            name="etcd-tls-storm",
            title="storm",
            seed="seed 000",
            run=run,
            budget=Budget(max_ttd=5),
            report_dir=tmp_path / "reports",
        )
        run.timeline.event("alert.rules_loaded", "prometheus", rules=["B", "A"])
        run.timeline.event("alert.firing", "A", labels={})
        incident.figure("order success ratio", normal=1.0, worst=0.5, recovered=1.0)
        report = json.loads((incident.finish() / "report.json").read_text())
        validate_report(report)
        assert report["rules"] == ["A", "B"]
        rows = {r["metric"]: r for r in report["seed_comparison"]["rows"]}
        assert rows["order success ratio"]["measured_ratio"] == {"worst": 0.5, "after": 1.0}
        assert rows["order success ratio"]["seed_ratio"]["worst"] == 0.413
        buf = io.StringIO()
        render_terminal(report, Console(file=buf, width=250))
        assert "seed vs reproduction" in buf.getvalue()
    finally:
        assert run.close() == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.update(schema_version=1), "schema_version: 1"),
        (lambda r: r["ttd"][0].update(seconds="fast"), "ttd/0/seconds: 'fast'"),
        (lambda r: r.pop("checks"), "(top level): 'checks' is a required property"),
    ],
)
def test_load_report_names_the_failing_field(tmp_path: Path, mutate: object, field: str) -> None:
    from harness.errors import ConfigError
    from harness.report import load_report

    report = build_report(_incident_timeline(), scenario="s", checks=[])
    assert callable(mutate)
    mutate(report)
    (tmp_path / "report.json").write_text(json.dumps(report))
    with pytest.raises(ConfigError) as err:
        load_report(tmp_path)
    assert field in str(err.value) and str(tmp_path / "report.json") in str(err.value)


def test_composed_faults_share_a_window_and_a_lagging_alert_stays_with_its_cause() -> None:
    tl = Timeline(origin=0.0, wall_origin=0.0)
    # A latency toxic on each of two members, injected together; then a leak, then
    # its mitigation (a restart) while the leak's alert is still pending.
    tl.event("fault.injected", "latency-0", at=10.0)
    tl.event("fault.injected", "latency-1", at=10.02)
    tl.event("alert.pending", "P99High", at=12.0, labels={})
    tl.event("alert.firing", "P99High", at=15.0, labels={})
    tl.event("fault.reverted", "latency-0", at=20.0)
    tl.event("fault.reverted", "latency-1", at=20.0)
    tl.event("alert.resolved", "P99High", at=24.0, labels={})
    tl.event("fault.injected", "leak", at=30.0)
    tl.event("alert.pending", "Growing", at=38.0, labels={})
    tl.event("fault.reverted", "leak", at=39.0)
    tl.event("fault.injected", "restart", at=40.0)
    tl.event("alert.firing", "Growing", at=40.1, labels={})  # pending since 38: the leak's
    tl.event("alert.firing", "Restarted", at=41.0, labels={})
    tl.event("fault.reverted", "restart", at=41.5)
    report = build_report(tl, scenario="calibration", checks=[])
    validate_report(report)
    ttd = {r["fault"]: (r["seconds"], r["by"], r["window_end"]) for r in report["ttd"]}
    assert ttd == {
        "latency-0": (5.0, "alert.firing:P99High", 30.0),
        "latency-1": (4.98, "alert.firing:P99High", 30.0),
        "leak": (10.1, "alert.firing:Growing", 40.0),
        "restart": (1.0, "alert.firing:Restarted", None),
    }
    ttr = {r["fault"]: [a["alert"] for a in r["alerts"]] for r in report["ttr"]}
    assert ttr["leak"] == ["Growing"] and ttr["restart"] == ["Restarted"]
