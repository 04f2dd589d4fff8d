"""Reports of a run: ``report.json`` (schema_version 1), ``report.html``, a terminal
table, and JUnit properties.

The JSON schema is :data:`SCHEMA_PATH` (``harness/report/schema.json``, which
documents every field); :func:`write_report` validates against it before
writing. The HTML report is rendered from the JSON alone, so ``faultline
report`` can redraw it from a stored ``report.json``.

>>> report = build_report(run.timeline, scenario="etcd-kill-leader",
...                       checks=results, budget=budget, run_id=run.run_id)  # doctest: +SKIP
>>> write_reports(run.dir, report)               # report.json + report.html  # doctest: +SKIP
>>> for name, value in junit_properties(report):                            # doctest: +SKIP
...     record_property(name, value)

:func:`write_reports` and :func:`junit_properties` also take the dictionary of a
:class:`harness.scenario.Incident` (``incident.to_dict()``) and build the report
from its timeline, checks and budget.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from harness.checks import Budget, CheckResult, Status, merge
from harness.report.html import render_html
from harness.report.terminal import render_terminal
from harness.timeline import Timeline

__all__ = [
    "DETECTION_KINDS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "as_report",
    "build_report",
    "junit_properties",
    "render_html",
    "render_terminal",
    "report_from_incident",
    "timeline_from_dict",
    "validate_report",
    "write_reports",
]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema.json")
# Events that count as "the fault was detected" for the report's TTD.
DETECTION_KINDS = ("alert.firing", "detector.hit")

Report = dict[str, Any]


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _faults(timeline: Timeline) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for e in timeline.events():
        if e.kind == "fault.injected":
            entry = {"name": e.name, "injected_at": e.t, "reverted_at": None, "detail": e.detail}
            out.append(entry)
            open_[e.name] = entry
        elif e.kind == "fault.reverted" and e.name in open_:
            open_.pop(e.name)["reverted_at"] = e.t
    return out


def _ttd(timeline: Timeline, fault: dict[str, Any]) -> dict[str, Any]:
    start = fault["injected_at"]
    hits = [e for e in timeline.events() if e.kind in DETECTION_KINDS and e.t >= start]
    if not hits:
        return {"fault": fault["name"], "seconds": None, "by": None}
    first = hits[0]
    return {
        "fault": fault["name"],
        "seconds": round(first.t - start, 3),
        "by": f"{first.kind}:{first.name}",
    }


def _ttr(timeline: Timeline, fault: dict[str, Any]) -> dict[str, Any] | None:
    start, end = fault["injected_at"], fault["reverted_at"]
    if end is None:
        return None
    fired = {e.name for e in timeline.events("alert.firing") if start <= e.t <= end}
    recovered_at: list[float] = []
    unresolved = []
    for alert in sorted(fired):
        resolved = [e.t for e in timeline.events("alert.resolved", alert) if e.t >= end]
        if resolved:
            recovered_at.append(resolved[0])
        else:
            unresolved.append(alert)
    seconds = None
    if fired and not unresolved:
        seconds = round(max(max(recovered_at) - end, 0.0), 3)
    return {"fault": fault["name"], "seconds": seconds, "unresolved": unresolved}


def _jsonable(value: Any) -> Any:
    """Event details may hold anything: keep JSON types, stringify the rest."""
    return json.loads(json.dumps(value, default=str), parse_constant=str)


def build_report(
    timeline: Timeline,
    *,
    scenario: str,
    checks: Sequence[CheckResult],
    budget: Budget | None = None,
    run_id: str | None = None,
) -> Report:
    """Everything the report says, as a schema_version 1 dictionary."""
    faults = _faults(timeline)
    alerts = []
    detections = []
    for e in timeline.events():
        if e.kind.startswith("fault."):
            continue
        if e.kind in ("alert.pending", "alert.firing", "alert.resolved"):
            labels = e.detail.get("labels") or {}
            alerts.append(
                {
                    "t": round(e.t, 3),
                    "alert": e.name,
                    "state": e.kind.split(".", 1)[1],
                    "labels": {str(k): str(v) for k, v in labels.items()},
                }
            )
        else:
            detections.append(
                {"t": round(e.t, 3), "kind": e.kind, "name": e.name, "detail": e.detail}
            )
    for f in faults:
        f["injected_at"] = round(f["injected_at"], 3)
        if f["reverted_at"] is not None:
            f["reverted_at"] = round(f["reverted_at"], 3)
    ttr = [r for r in (_ttr(timeline, f) for f in faults) if r is not None]
    report: Report = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario,
        "run_id": run_id,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_origin": timeline.wall_origin,
        "verdict": merge(checks).value,
        "faults": faults,
        "alerts": alerts,
        "detections": detections,
        "ttd": [_ttd(timeline, f) for f in faults],
        "ttr": ttr,
        "budget": None if budget is None else budget.to_dict(),
        "checks": [c.to_dict() for c in checks],
        "series": {
            name: [[round(s.t, 3), s.value] for s in timeline.series(name) if _finite(s.value)]
            for name in timeline.series_names()
        },
    }
    return dict(_jsonable(report))


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate_report(report: Report) -> None:
    """Raise ``jsonschema.ValidationError`` when ``report`` does not follow the schema."""
    import jsonschema  # imported here: only report writers and tests need it

    jsonschema.validate(report, _schema(), cls=jsonschema.Draft202012Validator)


def timeline_from_dict(data: Mapping[str, Any]) -> Timeline:
    """A :class:`Timeline` back from :meth:`Timeline.to_dict` (times as they were).

    A detail key that clashes with :meth:`Timeline.event`'s own parameters
    (``kind``, ``name``, ``at``) is kept as ``detail_<key>``.
    """
    tl = Timeline(wall_origin=float(data["wall_origin"]))
    for e in data.get("events", []):
        detail = {
            (f"detail_{k}" if k in ("kind", "name", "at") else k): v
            for k, v in (e.get("detail") or {}).items()
        }
        tl.event(e["kind"], e["name"], at=float(e["t"]), **detail)
    for name, points in data.get("series", {}).items():
        for t, v in points:
            tl.sample(name, v, at=float(t))
    return tl


def report_from_incident(data: Mapping[str, Any]) -> Report:
    """The report of a :class:`harness.scenario.Incident` (its ``to_dict()``)."""
    checks = [
        CheckResult(c["name"], Status(c["status"]), c["message"], dict(c.get("figures", {})))
        for c in data.get("checks", [])
    ]
    b = data.get("budget")
    budget = None
    if b:
        budget = Budget(
            max_ttd=b.get("max_ttd"),
            max_ttr=b.get("max_ttr"),
            must_fire=tuple(b.get("must_fire", ())),
            must_stay_quiet=tuple(b.get("must_stay_quiet", ())),
            scale=b.get("scale", 1.0),
        )
    report = build_report(
        timeline_from_dict(data["timeline"]),
        scenario=str(data["scenario"]),
        checks=checks,
        budget=budget,
        run_id=data.get("run_id"),
    )
    for key in ("title", "seed", "backend", "figures", "notes", "key_series"):
        if key in data:
            report[key] = _jsonable(data[key])
    return report


def as_report(data: Mapping[str, Any]) -> Report:
    """``data`` if it is a report already, else the report of an Incident dictionary."""
    return dict(data) if "schema_version" in data else report_from_incident(data)


def write_reports(directory: Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """Validate, then write ``report.json`` and ``report.html`` into ``directory``.

    ``data`` is a report (:func:`build_report`) or an Incident's ``to_dict()``.
    """
    report = as_report(data)
    validate_report(report)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    html_path = directory / "report.html"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path


def junit_properties(data: Mapping[str, Any]) -> list[tuple[str, str | float]]:
    """(name, value) pairs for pytest's ``record_property``: verdict, TTD/TTR per fault
    (-1 when never), and each check's status. ``data`` as for :func:`write_reports`."""
    report = as_report(data)
    props: list[tuple[str, str | float]] = [("faultline.verdict", report["verdict"])]
    for row in report["ttd"]:
        props.append((f"faultline.ttd_s.{row['fault']}", _or_minus_one(row["seconds"])))
    for row in report["ttr"]:
        props.append((f"faultline.ttr_s.{row['fault']}", _or_minus_one(row["seconds"])))
    for check in report["checks"]:
        props.append((f"faultline.check.{check['name']}", check["status"]))
    return props


def _or_minus_one(value: float | None) -> float:
    # JUnit consumers chart numbers; "never" is kept numeric so the series stays plottable.
    return -1.0 if value is None else float(value)
