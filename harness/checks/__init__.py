"""Checks: read the timeline, return a verdict. They never raise.

Each check returns a :class:`CheckResult` (PASSED / FAILED / UNKNOWN, a message
and figures for the report). A check that crashes, or whose assumptions do not
hold (the fault was never injected, the series is empty), is UNKNOWN, never
PASSED. Verdicts merge as failed > unknown > passed (:func:`merge`).

>>> budget = Budget(max_ttd=10, max_ttr=30, must_fire=("EtcdNoLeader",))
>>> results = [
...     fault_took_effect(tl, "etcd.quorum_lost", fault="kill-majority"),
...     alert_fired_within(tl, "EtcdNoLeader", fault="kill-majority", budget=budget),
...     alert_quiet(tl, "EtcdNoLeader", window=(0.0, 30.0)),
... ]                                                                   # doctest: +SKIP
>>> merge(results)                                                      # doctest: +SKIP
<Status.PASSED: 'passed'>
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec

from harness.errors import ConfigError
from harness.timeline import Event, Sample, Timeline, first_event, time_to_recover

__all__ = [
    "Budget",
    "CheckResult",
    "Status",
    "alert_fired_within",
    "alert_quiet",
    "budget_checks",
    "detected_within",
    "fault_took_effect",
    "fault_window",
    "merge",
    "recovered_within",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
Figure = float | str | None


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    figures: dict[str, Figure] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "figures": dict(self.figures),
        }


def merge(results: Iterable[CheckResult | Status]) -> Status:
    """failed > unknown > passed. No results at all is UNKNOWN: nothing was shown."""
    statuses = {r.status if isinstance(r, CheckResult) else r for r in results}
    if Status.FAILED in statuses:
        return Status.FAILED
    if Status.UNKNOWN in statuses or not statuses:
        return Status.UNKNOWN
    return Status.PASSED


@dataclass(frozen=True)
class Budget:
    """What a scenario must achieve; times are multiplied by ``scale`` (slow machines).

    ``max_ttd``: seconds from injection to detection; ``max_ttr``: seconds from
    revert to recovery; ``must_fire``: alerts that must fire within ``max_ttd``;
    ``must_stay_quiet``: alerts that must not fire.
    """

    max_ttd: float | None = None
    max_ttr: float | None = None
    must_fire: tuple[str, ...] = ()
    must_stay_quiet: tuple[str, ...] = ()
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_ttd", "max_ttr", "scale"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"budget.{name}", f"{value!r}", expected="a positive number")
        overlap = set(self.must_fire) & set(self.must_stay_quiet)
        if overlap:
            raise ConfigError(
                "budget.must_stay_quiet",
                f"{sorted(overlap)} also in must_fire",
                expected="an alert either must fire or must stay quiet",
            )

    @property
    def ttd(self) -> float | None:
        """The scaled time-to-detect budget."""
        return None if self.max_ttd is None else self.max_ttd * self.scale

    @property
    def ttr(self) -> float | None:
        """The scaled time-to-recover budget."""
        return None if self.max_ttr is None else self.max_ttr * self.scale

    def to_dict(self) -> dict[str, object]:
        return {
            "max_ttd": self.max_ttd,
            "max_ttr": self.max_ttr,
            "must_fire": list(self.must_fire),
            "must_stay_quiet": list(self.must_stay_quiet),
            "scale": self.scale,
        }


def _never_raises(name: str) -> Callable[[Callable[P, CheckResult]], Callable[P, CheckResult]]:
    """A crashing check is UNKNOWN with the exception text, never an exception."""

    def wrap(fn: Callable[P, CheckResult]) -> Callable[P, CheckResult]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                log.warning("check %s crashed", name, exc_info=True)
                return CheckResult(name, Status.UNKNOWN, f"check crashed: {err!r}")

        return run

    return wrap


def fault_window(timeline: Timeline, fault: str) -> tuple[float, float | None] | None:
    """(injected, reverted or None) of the first injection of ``fault``; None if never."""
    injected = first_event(timeline, after=-math.inf, kind="fault.injected", name=fault)
    if injected is None:
        return None
    reverted = first_event(timeline, after=injected.t, kind="fault.reverted", name=fault)
    return injected.t, None if reverted is None else reverted.t


def _fmt(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f}s"


@_never_raises("fault_took_effect")
def fault_took_effect(
    timeline: Timeline,
    evidence_event_kind: str,
    *,
    fault: str,
    evidence_name: str | None = None,
    within: float | None = None,
) -> CheckResult:
    """The fault did what it was meant to: evidence (an event of ``evidence_event_kind``,
    optionally named ``evidence_name``) appeared after the injection, before the
    revert and within ``within`` seconds when given.

    Without this, "no alert" could mean "the fault did nothing" as well as "the
    alerting is broken".
    """
    name = f"fault_took_effect:{fault}"
    window = fault_window(timeline, fault)
    if window is None:
        return CheckResult(name, Status.UNKNOWN, f"fault {fault!r} was never injected")
    start, end = window
    limit = end
    if within is not None:
        limit = start + within if end is None else min(end, start + within)
    ev = first_event(
        timeline, after=start, kind=evidence_event_kind, name=evidence_name, before=limit
    )
    what = evidence_event_kind + (f" {evidence_name}" if evidence_name else "")
    if ev is None:
        return CheckResult(
            name,
            Status.FAILED,
            f"no {what} after {fault!r} was injected: the fault had no visible effect",
            {"evidence_after_s": None},
        )
    return CheckResult(
        name,
        Status.PASSED,
        f"{what} {ev.t - start:.2f}s after injection",
        {"evidence_after_s": round(ev.t - start, 3)},
    )


def _detected(
    name: str,
    timeline: Timeline,
    *,
    fault: str,
    kind: str,
    signal: str | None,
    max_seconds: float | None,
) -> CheckResult:
    window = fault_window(timeline, fault)
    if window is None:
        return CheckResult(name, Status.UNKNOWN, f"fault {fault!r} was never injected")
    if max_seconds is None:
        return CheckResult(name, Status.UNKNOWN, "no time-to-detect budget given")
    start = window[0]
    ev = first_event(timeline, after=start, kind=kind, name=signal)
    ttd = None if ev is None else round(ev.t - start, 3)
    figures: dict[str, Figure] = {"ttd_s": ttd, "budget_s": max_seconds, "fault": fault}
    what = kind + (f" {signal}" if signal else "")
    if ttd is None:
        return CheckResult(name, Status.FAILED, f"{what} never came after {fault!r}", figures)
    if ttd > max_seconds:
        return CheckResult(
            name, Status.FAILED, f"{what} after {ttd:.2f}s, over budget {max_seconds:.2f}s", figures
        )
    return CheckResult(
        name, Status.PASSED, f"{what} after {ttd:.2f}s (budget {max_seconds:.2f}s)", figures
    )


@_never_raises("detected_within")
def detected_within(
    timeline: Timeline,
    *,
    fault: str,
    kind: str,
    name: str | None = None,
    budget: Budget | float,
) -> CheckResult:
    """An event of ``kind`` (e.g. ``detector.hit``, named ``name``) came within the
    time-to-detect budget after ``fault`` was injected. Figure ``ttd_s``."""
    max_s = budget.ttd if isinstance(budget, Budget) else float(budget)
    label = f"detected_within:{fault}:{kind}" + (f":{name}" if name else "")
    return _detected(label, timeline, fault=fault, kind=kind, signal=name, max_seconds=max_s)


@_never_raises("alert_fired_within")
def alert_fired_within(
    timeline: Timeline, alert: str, *, fault: str, budget: Budget | float
) -> CheckResult:
    """``alert`` reached firing within the time-to-detect budget after the injection."""
    max_s = budget.ttd if isinstance(budget, Budget) else float(budget)
    return _detected(
        f"alert_fired_within:{alert}",
        timeline,
        fault=fault,
        kind="alert.firing",
        signal=alert,
        max_seconds=max_s,
    )


def _firing_intervals(events: Sequence[Event], alert: str) -> list[tuple[float, float]]:
    """[firing, resolved) intervals of ``alert`` (open ones end at +inf)."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if e.name != alert:
            continue
        if e.kind == "alert.firing" and start is None:
            start = e.t
        elif e.kind == "alert.resolved" and start is not None:
            out.append((start, e.t))
            start = None
    if start is not None:
        out.append((start, math.inf))
    return out


@_never_raises("alert_quiet")
def alert_quiet(timeline: Timeline, alert: str, window: tuple[float, float]) -> CheckResult:
    """``alert`` was not firing at any time in ``window`` (e.g. the baseline, or the
    whole run of the bug-off variant). Pending that never fired does not count."""
    name = f"alert_quiet:{alert}"
    lo, hi = window
    if hi < lo:
        return CheckResult(name, Status.UNKNOWN, f"empty window {window}")
    intervals = _firing_intervals(timeline.events(), alert)
    hits = [(a, b) for a, b in intervals if a <= hi and b >= lo]
    pending = len([e for e in timeline.events("alert.pending", alert) if lo <= e.t <= hi])
    figures: dict[str, Figure] = {"window_s": round(hi - lo, 3), "pending": float(pending)}
    if hits:
        first = max(hits[0][0], lo)
        figures["first_firing_t"] = round(first, 3)
        return CheckResult(
            name,
            Status.FAILED,
            f"{alert} fired at t={first:.2f}s inside the quiet window [{lo:.1f}, {hi:.1f}]",
            figures,
        )
    return CheckResult(
        name, Status.PASSED, f"{alert} quiet for {hi - lo:.1f}s ({pending} pending)", figures
    )


@_never_raises("recovered_within")
def recovered_within(
    series: Sequence[Sample],
    after: float,
    ok: Callable[[float], bool],
    hold: float,
    budget: Budget | float,
    *,
    name: str = "series",
) -> CheckResult:
    """The series became healthy (``ok``) within the time-to-recover budget after
    ``after`` (the revert) and stayed healthy for ``hold`` seconds. Figures ``ttr_s`` and
    ``after_t`` (the report shows it as the SLO-back TTR of the faults reverted by then)."""
    label = f"recovered_within:{name}"
    max_s = budget.ttr if isinstance(budget, Budget) else float(budget)
    if max_s is None:
        return CheckResult(label, Status.UNKNOWN, "no time-to-recover budget given")
    later = [s for s in series if s.t >= after]
    if not later:
        return CheckResult(label, Status.UNKNOWN, f"no samples of {name} after t={after:.1f}s")
    ttr = time_to_recover(list(series), after=after, ok=ok, hold=hold)
    figures: dict[str, Figure] = {
        "ttr_s": None if ttr is None else round(ttr, 3),
        "budget_s": max_s,
        "hold_s": hold,
        "after_t": round(after, 3),  # the revert it counts from: the report pairs them
    }
    if ttr is None:
        span = later[-1].t - after
        return CheckResult(
            label, Status.FAILED, f"{name} not healthy for {hold:.1f}s within {span:.1f}s", figures
        )
    if ttr > max_s:
        return CheckResult(
            label, Status.FAILED, f"{name} recovered after {_fmt(ttr)}, over {max_s:.2f}s", figures
        )
    return CheckResult(
        label, Status.PASSED, f"{name} recovered after {_fmt(ttr)} (budget {max_s:.2f}s)", figures
    )


def budget_checks(
    timeline: Timeline, budget: Budget, *, fault: str, quiet_window: tuple[float, float]
) -> list[CheckResult]:
    """One check per alert of the budget: must_fire within the TTD budget after
    ``fault``; must_stay_quiet throughout ``quiet_window``."""
    results = [
        alert_fired_within(timeline, a, fault=fault, budget=budget) for a in budget.must_fire
    ]
    results += [alert_quiet(timeline, a, quiet_window) for a in budget.must_stay_quiet]
    return results
