"""Alert coverage from report data: fired, quiet, untested; the command over a report dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.checks import CheckResult, Status
from harness.cli import main
from harness.coverage import aggregate, latest_per_scenario, render_html, render_text
from harness.report import build_report
from harness.timeline import Timeline


def _report(
    scenario: str,
    rules: list[str] | None,
    fired: list[str],
    pending: tuple[str, ...] = (),
    at: str = "",
) -> dict[str, Any]:
    tl = Timeline(origin=0.0, wall_origin=0.0)
    if rules is not None:
        tl.event("alert.rules_loaded", "prometheus", rules=rules)
    for i, name in enumerate(pending):
        tl.event("alert.pending", name, at=1.0 + i, labels={})
    for i, name in enumerate(fired):
        tl.event("alert.pending", name, at=2.0 + i, labels={})
        tl.event("alert.firing", name, at=3.0 + i, labels={})
    report = build_report(
        tl,
        scenario=scenario,
        checks=[CheckResult("c", Status.PASSED, "ok")],
        run_id=f"r-{scenario}{at}",
    )
    if at:
        report["generated_at"] = at
    return report


def test_fired_quiet_and_untested_per_rule() -> None:
    cov = aggregate(
        [
            _report("storm", ["A", "B", "C", "D"], fired=["A"], pending=("C",)),
            _report("oom", ["A", "B", "C", "D"], fired=["B", "A"]),
            _report("race", None, fired=[]),
        ]
    )
    assert {r: (c.fired_in, c.quiet_in) for r, c in cov.rules.items()} == {
        "A": (["oom", "storm"], []),
        "B": (["oom"], ["storm"]),
        "C": ([], ["oom", "storm"]),  # pending in storm that never fired: quiet
        "D": ([], ["oom", "storm"]),
    }
    assert cov.untested == ["C", "D"]
    assert cov.unwatched == ["race"]
    text = "\n".join(render_text(cov))
    assert "4 rules, 2 fired somewhere, 2 never fired (untested)" in text
    assert "untested (never fired anywhere): C, D" in text
    assert "scenarios without an alert watcher: race" in text
    assert "<b>untested</b>" in render_html(cov)
    data = cov.to_dict()
    assert data["untested"] == ["C", "D"] and data["rules"]["B"]["quiet_in"] == ["storm"]


def test_a_rule_that_fires_in_any_run_of_a_scenario_counts_as_fired_there() -> None:
    cov = aggregate([_report("s", ["A"], fired=[]), _report("s", ["A"], fired=["A"])])
    assert (cov.rules["A"].fired_in, cov.rules["A"].quiet_in) == (["s"], [])


def test_latest_per_scenario_keeps_the_newest_run() -> None:
    old = _report("s", ["A"], fired=["A"], at="2026-12-01T00:00:00+00:00")
    new = _report("s", ["A"], fired=[], at="2026-12-02T00:00:00+00:00")
    assert latest_per_scenario([new, old]) == [new]


def _store(root: Path, report: dict[str, Any]) -> Path:
    d = root / str(report["scenario"]) / str(report["run_id"])
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps(report))
    return d / "report.json"


def test_coverage_command_prints_and_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(tmp_path, _report("storm", ["A", "B"], fired=["A"]))
    _store(tmp_path, _report("oom", ["A", "B"], fired=[]))
    assert main(["coverage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "untested (never fired anywhere): B" in out
    data = json.loads((tmp_path / "coverage.json").read_text())
    assert data["rules"]["A"] == {"fired_in": ["storm"], "quiet_in": ["oom"]}
    assert (tmp_path / "coverage.html").read_text().startswith("<!doctype html>")


def test_coverage_command_exits_2_on_a_bad_report(tmp_path: Path) -> None:
    report = _report("storm", ["A"], fired=["A"])
    report["alerts"][0]["state"] = "burning"
    path = _store(tmp_path, report)
    assert main(["coverage", str(tmp_path)]) == 2
    assert not (tmp_path / "coverage.json").exists()
    assert main(["coverage", str(tmp_path / "nothing-here")]) == 2
    path.unlink()
    assert main(["coverage", str(tmp_path)]) == 2  # no report at all
