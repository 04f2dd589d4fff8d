"""Alert coverage across a suite run: every loaded rule, where it fired, where it
stayed quiet, and the rules that never fired anywhere (untested rules).

Pure functions of ``report.json`` data: a report's ``rules`` are the alerting
rules its Prometheus loaded (written by :class:`~harness.observe.prom.AlertWatcher`),
and a rule *fired* in a scenario when the report has a ``firing`` transition of
it (pending that never fired is quiet, as for ``alert_quiet``). A rule is
*untested* when no scenario made it fire: nothing shows that it can page.
Several runs of one scenario count as one: fired if it fired in any of them.

The pytest plugin aggregates the reports of a session (terminal section,
``coverage.json`` and ``coverage.html`` in the report directory); ``faultline
coverage REPORT_DIR`` does the same over stored reports.

>>> cov = aggregate([load_report(p) for p in report_paths])     # doctest: +SKIP
>>> print("\\n".join(render_text(cov)))                         # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COVERAGE_VERSION",
    "Coverage",
    "RuleCoverage",
    "RunCoverage",
    "aggregate",
    "latest_per_scenario",
    "render_html",
    "render_text",
    "run_coverage",
    "write_coverage",
]

COVERAGE_VERSION = 1


@dataclass(frozen=True)
class RunCoverage:
    """One report's part: the rules it loaded (None: no alert watcher) and those that fired."""

    scenario: str
    run_id: str | None
    verdict: str
    rules: tuple[str, ...] | None
    fired: frozenset[str]


@dataclass
class RuleCoverage:
    fired_in: list[str] = field(default_factory=list)
    quiet_in: list[str] = field(default_factory=list)


@dataclass
class Coverage:
    runs: list[RunCoverage]
    rules: dict[str, RuleCoverage]

    @property
    def untested(self) -> list[str]:
        """Rules loaded somewhere that fired nowhere."""
        return [r for r, c in self.rules.items() if not c.fired_in]

    @property
    def unwatched(self) -> list[str]:
        """Scenarios whose runs had no alert watcher (they say nothing about rules)."""
        watched = {r.scenario for r in self.runs if r.rules is not None}
        return sorted({r.scenario for r in self.runs} - watched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage_version": COVERAGE_VERSION,
            "runs": [
                {
                    "scenario": r.scenario,
                    "run_id": r.run_id,
                    "verdict": r.verdict,
                    "rules_loaded": None if r.rules is None else len(r.rules),
                    "fired": sorted(r.fired),
                }
                for r in self.runs
            ],
            "rules": {
                name: {"fired_in": c.fired_in, "quiet_in": c.quiet_in}
                for name, c in self.rules.items()
            },
            "untested": self.untested,
            "unwatched_scenarios": self.unwatched,
        }


def run_coverage(report: Mapping[str, Any]) -> RunCoverage:
    """The coverage part of one report (schema_version 2)."""
    rules = report.get("rules")
    fired = frozenset(a["alert"] for a in report["alerts"] if a["state"] == "firing")
    return RunCoverage(
        scenario=str(report["scenario"]),
        run_id=report.get("run_id"),
        verdict=str(report["verdict"]),
        rules=None if rules is None else tuple(rules),
        fired=fired,
    )


def aggregate(reports: Iterable[Mapping[str, Any]]) -> Coverage:
    """Every rule loaded (or seen firing) in any report, with the scenarios where it
    fired and those where it was loaded and stayed quiet."""
    runs = [run_coverage(r) for r in reports]
    loaded: dict[str, set[str]] = {}
    fired: dict[str, set[str]] = {}
    for run in runs:
        for rule in run.rules or ():
            loaded.setdefault(rule, set()).add(run.scenario)
        for rule in run.fired:
            fired.setdefault(rule, set()).add(run.scenario)
    rules = {}
    for rule in sorted(set(loaded) | set(fired)):
        where_fired = fired.get(rule, set())
        rules[rule] = RuleCoverage(
            fired_in=sorted(where_fired),
            quiet_in=sorted(loaded.get(rule, set()) - where_fired),
        )
    return Coverage(runs=runs, rules=rules)


def latest_per_scenario(reports: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest report of each scenario (by ``generated_at``, then run id)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for r in sorted(reports, key=lambda r: (str(r["generated_at"]), str(r.get("run_id")))):
        newest[str(r["scenario"])] = r
    return [newest[s] for s in sorted(newest)]


def _join(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "-"


def render_text(cov: Coverage) -> list[str]:
    """The terminal table: one line per rule, then the untested rules."""
    if not cov.rules:
        return ["alert coverage: no report of this run loaded alerting rules"]
    scenarios = sorted({r.scenario for r in cov.runs})
    untested = cov.untested
    lines = [
        f"alert coverage over {len(scenarios)} scenario(s): {len(cov.rules)} rules, "
        f"{len(cov.rules) - len(untested)} fired somewhere, {len(untested)} never fired (untested)"
    ]
    width = max(len(r) for r in cov.rules)
    fired_width = max(len(_join(c.fired_in)) for c in cov.rules.values())
    lines.append(f"  {'rule':<{width}}  {'fired in':<{fired_width}}  quiet in")
    for rule, c in cov.rules.items():
        lines.append(f"  {rule:<{width}}  {_join(c.fired_in):<{fired_width}}  {_join(c.quiet_in)}")
    lines.append(f"untested (never fired anywhere): {_join(untested)}")
    if cov.unwatched:
        lines.append(f"scenarios without an alert watcher: {_join(cov.unwatched)}")
    return lines


def render_html(cov: Coverage) -> str:
    """A self-contained page with the same table."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(rule)}</td><td>{e(_join(c.fired_in))}</td><td>{e(_join(c.quiet_in))}</td>"
        f"<td>{'' if c.fired_in else '<b>untested</b>'}</td></tr>"
        for rule, c in cov.rules.items()
    )
    runs = "".join(
        f"<tr><td>{e(r.scenario)}</td><td>{e(str(r.run_id))}</td><td>{e(r.verdict)}</td>"
        f"<td>{'no alert watcher' if r.rules is None else len(r.rules)}</td>"
        f"<td>{e(_join(sorted(r.fired)))}</td></tr>"
        for r in cov.runs
    )
    summary = e(render_text(cov)[0])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>faultline: alert coverage</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }}
</style></head><body>
<h1>Alert coverage</h1><p>{summary}</p>
<h2>Rules</h2>
<table><tr><th>rule</th><th>fired in</th><th>quiet in</th><th></th></tr>{rows}</table>
<h2>Runs</h2>
<table><tr><th>scenario</th><th>run</th><th>verdict</th><th>rules loaded</th><th>fired</th></tr>
{runs}</table>
</body></html>
"""


def write_coverage(directory: Path, cov: Coverage) -> tuple[Path, Path]:
    """Write ``coverage.json`` and ``coverage.html`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "coverage.json", directory / "coverage.html"
    json_path.write_text(json.dumps(cov.to_dict(), indent=1) + "\n")
    html_path.write_text(render_html(cov))
    return json_path, html_path
