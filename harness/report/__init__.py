"""Reports of a run: ``report.json`` (schema_version 2), ``report.html``, a terminal
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
from harness.errors import ConfigError
from harness.observe.prom import RULES_EVENT
from harness.report.html import render_html
from harness.report.seeds import seed_comparison
from harness.report.terminal import render_terminal
from harness.timeline import Event, Timeline

__all__ = [
    "COMPOSED_WITHIN_S",
    "DETECTION_KINDS",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "as_report",
    "build_report",
    "junit_properties",
    "load_report",
    "render_html",
    "render_terminal",
    "report_from_incident",
    "timeline_from_dict",
    "validate_report",
    "write_reports",
]

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).with_name("schema.json")
# Events that count as "the fault was detected" for the report's TTD.
DETECTION_KINDS = ("alert.firing", "detector.hit")
# A recovery check's ``after_t`` may be taken just before the revert event is written.
_REVERT_SLACK_S = 0.5
# Injections this close to the one before are one composite injection (``with a, b:``).
COMPOSED_WITHIN_S = 1.0

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


def _own_windows(faults: Sequence[Mapping[str, Any]]) -> list[float]:
    """Where each injection's own detection window ends: at the next injection after
    it (that fault's alerts are its own), else never (math.inf).

    A control fault held while the real one joins it (CPU pressure, then the storm
    on top) is so never credited with the later fault's alert. Faults injected
    together (``with a, b:``, a latency toxic on every member: each within
    :data:`COMPOSED_WITHIN_S` of the one before) are one composite injection and
    share its window.
    """
    starts = sorted(f["injected_at"] for f in faults)
    ends = []
    for f in faults:
        end = math.inf
        last = f["injected_at"]
        for t in starts:
            if t <= f["injected_at"]:
                continue
            if t - last >= COMPOSED_WITHIN_S:
                end = t
                break
            last = t
        ends.append(end)
    return ends


Key = tuple[str, tuple[tuple[str, str], ...]]


def _label_key(e: Event) -> Key:
    labels = e.detail.get("labels") or {}
    return e.name, tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _detections(events: Sequence[Event]) -> list[tuple[float, Event]]:
    """(when its cause began, event) of every detection: a detector hit at its own
    time; an alert firing at the start of its episode (its pending at Prometheus'
    activeAt), so a rule that was already on its way when the next fault came in
    (pending before it, firing just after) stays with the fault that caused it."""
    pending: dict[Key, float] = {}
    out = []
    for e in events:
        if e.kind == "alert.pending":
            pending[_label_key(e)] = e.t
        elif e.kind == "alert.firing":
            began = pending.get(_label_key(e), e.t)
            out.append((min(began, e.t), e))
        elif e.kind in DETECTION_KINDS:
            out.append((e.t, e))
    return out


def _in_window(detections: Sequence[tuple[float, Event]], start: float, end: float) -> list[Event]:
    """Detections whose cause began in [start, end) and that came at or after start."""
    return [e for began, e in detections if start <= began < end and e.t >= start]


def _ttd(
    detections: Sequence[tuple[float, Event]], fault: Mapping[str, Any], window_end: float
) -> dict[str, Any]:
    start = fault["injected_at"]
    hits = sorted(_in_window(detections, start, window_end), key=lambda e: e.t)
    row: dict[str, Any] = {
        "fault": fault["name"],
        "seconds": None,
        "by": None,
        "window_end": None if math.isinf(window_end) else round(window_end, 3),
    }
    if hits:
        row["seconds"] = round(hits[0].t - start, 3)
        row["by"] = f"{hits[0].kind}:{hits[0].name}"
    return row


def _slo_rows(
    checks: Sequence[CheckResult], faults: Sequence[Mapping[str, Any]], fault: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The scenario's recovery checks (SLO back, writes back...) measured after this
    fault's revert: a ``recovered_within`` check whose ``after_t`` is at or after the
    revert (within ``_REVERT_SLACK_S`` before it) with no injection in between."""
    end = fault["reverted_at"]
    rows = []
    for c in checks:
        after = c.figures.get("after_t")
        if not c.name.startswith("recovered_within:") or not isinstance(after, int | float):
            continue
        if after < end - _REVERT_SLACK_S:
            continue
        if any(end < f["injected_at"] <= after for f in faults):
            continue
        ttr = c.figures.get("ttr_s")
        rows.append(
            {
                "check": c.name.removeprefix("recovered_within:"),
                "status": c.status.value,
                "seconds": float(ttr) if isinstance(ttr, int | float) else None,
            }
        )
    return rows


def _ttr(
    timeline: Timeline,
    fault: Mapping[str, Any],
    window_end: float,
    *,
    slo: list[dict[str, Any]],
    observed_until: float,
) -> dict[str, Any] | None:
    """Time to recover after the revert, two ways: the scenario's SLO checks
    (``slo``), and every alert that fired in the fault's own window resolving
    (``alerts``; one per label set; ``resolved_after_s`` null: still firing when
    the run stopped observing, ``observed_after_s`` after the revert)."""
    start, end = fault["injected_at"], fault["reverted_at"]
    if end is None:
        return None
    events = timeline.events()
    firing: dict[Key, float] = {}
    for e in _in_window(_detections(events), start, window_end):
        if e.kind == "alert.firing":
            firing[_label_key(e)] = e.t  # the last episode in the window
    alerts: list[dict[str, Any]] = []
    done: list[float] = []
    unresolved: set[str] = set()
    for key, fired_at in firing.items():
        resolved = [
            e.t
            for e in events
            if e.kind == "alert.resolved" and e.t >= fired_at and _label_key(e) == key
        ]
        after = None if not resolved else round(max(resolved[0] - end, 0.0), 3)
        if after is None:
            unresolved.add(key[0])
        else:
            done.append(after)
        labels = {k: v for k, v in key[1] if k != "alertname"}
        alerts.append({"alert": key[0], "labels": labels, "resolved_after_s": after})
    seconds = max(done) if alerts and not unresolved else None
    return {
        "fault": fault["name"],
        "seconds": seconds,
        "unresolved": sorted(unresolved),
        "alerts": alerts,
        "observed_after_s": round(max(observed_until - end, 0.0), 3),
        "slo": slo,
    }


def _last_time(timeline: Timeline) -> float:
    """The last moment the run observed anything (an event or a sample)."""
    times = [e.t for e in timeline.events()]
    times += [ss[-1].t for n in timeline.series_names() if (ss := timeline.series(n))]
    return max(times, default=0.0)


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
    """Everything the report says, as a schema_version 2 dictionary."""
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
    ends = _own_windows(faults)
    detected = _detections(timeline.events())
    observed_until = _last_time(timeline)
    ttr = [
        r
        for f, end in zip(faults, ends, strict=True)
        if (
            r := _ttr(
                timeline,
                f,
                end,
                slo=[] if f["reverted_at"] is None else _slo_rows(checks, faults, f),
                observed_until=observed_until,
            )
        )
        is not None
    ]
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
        "ttd": [_ttd(detected, f, end) for f, end in zip(faults, ends, strict=True)],
        "ttr": ttr,
        "budget": None if budget is None else budget.to_dict(),
        "checks": [c.to_dict() for c in checks],
        "series": {
            name: [[round(s.t, 3), s.value] for s in timeline.series(name) if _finite(s.value)]
            for name in timeline.series_names()
        },
    }
    loaded = timeline.events(RULES_EVENT)
    if loaded:
        report["rules"] = sorted({str(r) for e in loaded for r in e.detail.get("rules", [])})
    return dict(_jsonable(report))


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate_report(report: Report) -> None:
    """Raise ``jsonschema.ValidationError`` when ``report`` does not follow the schema."""
    import jsonschema  # imported here: only report writers and tests need it

    jsonschema.validate(report, _schema(), cls=jsonschema.Draft202012Validator)


def load_report(path: Path) -> Report:
    """A stored ``report.json`` (or its directory), checked against the schema.

    Bad input is a :class:`ConfigError` naming the file and the field that fails
    (``report.json: ttd/0/seconds: 'fast' is not of type 'number', 'null'``).
    """
    import jsonschema

    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(path), f"cannot read a report: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "not a JSON object", expected="a faultline report.json")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        old = " (an older faultline's report: run the scenario again)" if version == 1 else ""
        raise ConfigError(
            f"{path}: schema_version", f"{version!r}{old}", expected=str(SCHEMA_VERSION)
        )
    try:
        validate_report(data)
    except jsonschema.ValidationError as err:
        field = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        text = err.message if len(err.message) <= 200 else err.message[:200] + "..."
        raise ConfigError(f"{path}: {field}", text, expected="see " + SCHEMA_PATH.name) from None
    return data


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
    table = seed_comparison(report["scenario"], report.get("figures") or {})
    if table is not None:
        report["seed_comparison"] = _jsonable(table)
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
    (-1 when never; ``ttr_s`` alerts resolved, ``ttr_slo_s`` the slowest SLO-back
    check), and each check's status. ``data`` as for :func:`write_reports`."""
    report = as_report(data)
    props: list[tuple[str, str | float]] = [("faultline.verdict", report["verdict"])]
    for row in report["ttd"]:
        props.append((f"faultline.ttd_s.{row['fault']}", _or_minus_one(row["seconds"])))
    for row in report["ttr"]:
        props.append((f"faultline.ttr_s.{row['fault']}", _or_minus_one(row["seconds"])))
        slo = [r["seconds"] for r in row["slo"]]
        if slo:
            back = None if None in slo else max(slo)
            props.append((f"faultline.ttr_slo_s.{row['fault']}", _or_minus_one(back)))
    for check in report["checks"]:
        props.append((f"faultline.check.{check['name']}", check["status"]))
    return props


def _or_minus_one(value: float | None) -> float:
    # JUnit consumers chart numbers; "never" is kept numeric so the series stays plottable.
    return -1.0 if value is None else float(value)
