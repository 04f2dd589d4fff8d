"""``Incident``: one scenario run told as a story, from baseline to verdict.

A scenario test builds its components, then walks the incident through
phases on the run's single timeline::

    incident = make_incident("etcd-leader-loss", title=..., seed="seed 000 ch.1", budget=budget)
    with EtcdCluster(backend, run, pki) as cluster, incident.observing(
        LeaderWatcher(lambda: leader_name(cluster), run.timeline)
    ):
        with incident.phase("baseline"):
            incident.hold(5)
        with incident.phase("fault"), ProcessKill(scope, "leader", max_duration=30):
            incident.hold_until(new_leader_elected, timeout=15, what="a new leader")
    incident.check(fault_took_effect(run.timeline, "etcd.leader_changed", fault="kill"))
    incident.assert_passed()

Observers run only inside :meth:`Incident.observing` (stopped before the
components they watch). The ``make_incident`` fixture calls
:meth:`Incident.finish` on every exit path: it writes ``report.json`` and
``report.html`` into ``<report dir>/<scenario>/<run id>/`` and attaches
TTD/TTR figures as JUnit properties, so a failed or interrupted run still
leaves its evidence.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.checks import Budget, CheckResult, Status, merge
from harness.run import Run
from harness.timeline import Timeline
from harness.wait import wait_until

__all__ = ["Incident", "MakeIncident", "Observer"]

log = logging.getLogger(__name__)


class Observer(Protocol):
    """A poller, a load generator, a writer: anything started and stopped."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


@dataclass
class Incident:
    """See the module docstring."""

    name: str
    title: str
    seed: str
    run: Run
    budget: Budget
    report_dir: Path
    backend: str = "local"
    checks: list[CheckResult] = field(default_factory=list)
    # The seed-style table: metric -> {"normal": x, "worst": y, "recovered": z}.
    figures: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The series report.html draws first (it picks sensible ones when empty).
    key_series: list[str] = field(default_factory=list)
    _finished: Path | None = None

    @property
    def timeline(self) -> Timeline:
        return self.run.timeline

    @contextlib.contextmanager
    def observing(self, *observers: Observer) -> Iterator[None]:
        """Start the observers; stop them (newest first) on every exit path."""
        with contextlib.ExitStack() as stack:
            for obs in observers:
                obs.start()
                stack.callback(self._stop_observer, obs)
            yield

    def _stop_observer(self, obs: Observer) -> None:
        try:
            obs.stop()
        except Exception as err:  # noqa: BLE001 - one stuck observer must not hide the rest
            self.note(f"observer {type(obs).__name__} did not stop cleanly: {err!r}")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark a phase (baseline, fault, recovery...) on the timeline."""
        self.timeline.event("phase.start", name)
        log.info("%s: phase %s", self.name, name)
        try:
            yield
        finally:
            self.timeline.event("phase.end", name)

    def window(self, phase: str) -> tuple[float, float] | None:
        """(start, end) of the first phase of that name; end is now if still open."""
        starts = self.timeline.events("phase.start", phase)
        if not starts:
            return None
        ends = [e for e in self.timeline.events("phase.end", phase) if e.t >= starts[0].t]
        return starts[0].t, ends[0].t if ends else self.timeline.now()

    def hold(self, seconds: float) -> None:
        """Let the system run for a phase's planned length while observers record it."""
        time.sleep(seconds)

    def hold_until(
        self, condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
    ) -> float | None:
        """Wait for ``condition``; return seconds waited, or None (noted) if it never held.

        Not holding is not an exception here: the checks decide what it means.
        """
        start = time.monotonic()
        try:
            wait_until(condition, timeout=timeout, interval=interval, what=what)
        except TimeoutError:
            self.note(f"{what}: not reached within {timeout:.1f}s")
            return None
        return time.monotonic() - start

    def check(self, *results: CheckResult) -> None:
        for r in results:
            log.info("%s: %s %s: %s", self.name, r.status.value.upper(), r.name, r.message)
        self.checks.extend(results)

    def note(self, text: str) -> None:
        log.info("%s: %s", self.name, text)
        self.notes.append(text)

    def figure(self, metric: str, **values: float | None) -> None:
        """Record a row of the seed-style table (e.g. normal / worst / recovered)."""
        self.figures.setdefault(metric, {}).update(values)

    def figure_from_series(
        self, metric: str, series: str, *, worst: str = "min", tail: float = 5.0
    ) -> None:
        """A seed-table row from a timeline series: the mean over the baseline phase
        ("normal"), the worst sample from the fault phase on ("worst": ``min`` or
        ``max``), and the mean of the last ``tail`` seconds ("recovered")."""
        samples = self.timeline.series(series)
        base, fault = self.window("baseline"), self.window("fault")
        if not samples or base is None or fault is None:
            self.note(f"figure {metric}: no samples of {series} or no baseline/fault phase")
            return
        normal = [s.value for s in samples if base[0] <= s.t <= base[1]]
        during = [s.value for s in samples if s.t >= fault[0]]
        last = [s.value for s in samples if s.t >= samples[-1].t - tail]
        pick = min if worst == "min" else max
        self.figure(
            metric,
            normal=statistics.fmean(normal) if normal else None,
            worst=pick(during) if during else None,
            recovered=statistics.fmean(last),
        )

    @property
    def verdict(self) -> Status:
        return merge(self.checks)

    def finish(self) -> Path:
        """Write the reports; idempotent. Returns the report directory."""
        if self._finished is not None:
            return self._finished
        from harness.report import write_reports

        out = self.report_dir / self.name / self.run.run_id
        write_reports(out, self.to_dict())
        self._finished = out
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "title": self.title,
            "seed": self.seed,
            "run_id": self.run.run_id,
            "backend": self.backend,
            "budget": self.budget.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "verdict": self.verdict.value,
            "figures": self.figures,
            "notes": self.notes,
            "key_series": self.key_series,
            "timeline": self.timeline.to_dict(),
        }

    def assert_passed(self) -> None:
        """Fail the test unless every check passed; the message lists the others."""
        verdict = self.verdict
        if verdict is Status.PASSED:
            return
        bad = [
            f"{c.status.value.upper()} {c.name}: {c.message}"
            for c in self.checks
            if c.status is not Status.PASSED
        ]
        raise AssertionError(
            f"{self.name}: verdict {verdict.value}"
            + ("".join(f"\n  {b}" for b in bad) or "\n  (no checks were made)")
        )


MakeIncident = Callable[..., Incident]
