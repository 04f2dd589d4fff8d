"""One monotonic clock for a run: events and per-second series.

Every observer (alert poller, load stats, detectors, fault injectors) writes
onto the same :class:`Timeline`, so faults line up with their symptoms. Times
are seconds since the timeline's origin (``time.monotonic()`` at creation).
Time-to-detect and time-to-recover are pure functions of a timeline.

>>> tl = Timeline()
>>> tl.event("fault.injected", "kill-leader", at=10.0)
>>> tl.event("alert.firing", "EtcdNoLeader", at=13.5)
>>> time_to_detect(tl, after=10.0, kind="alert.firing", name="EtcdNoLeader")
3.5
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "Sample",
    "Timeline",
    "first_event",
    "time_to_detect",
    "time_to_recover",
]


@dataclass(frozen=True)
class Event:
    """Something that happened at ``t`` seconds after the origin."""

    t: float
    kind: str  # e.g. "fault.injected", "alert.firing", "detector.hit", "slo.restored"
    name: str  # what: the fault, the alert, the detector
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    t: float
    value: float


class Timeline:
    """Thread-safe event log and series store on one monotonic clock."""

    def __init__(self, origin: float | None = None, wall_origin: float | None = None) -> None:
        self.origin = time.monotonic() if origin is None else origin
        self.wall_origin = time.time() if wall_origin is None else wall_origin
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._series: dict[str, list[Sample]] = {}

    def now(self) -> float:
        """Seconds since the origin."""
        return time.monotonic() - self.origin

    def from_wall(self, wall: float) -> float:
        """Convert a wall-clock timestamp (e.g. from Prometheus) to timeline seconds."""
        return wall - self.wall_origin

    def event(self, kind: str, name: str, *, at: float | None = None, **detail: Any) -> Event:
        ev = Event(self.now() if at is None else at, kind, name, dict(detail))
        with self._lock:
            self._events.append(ev)
        return ev

    def sample(self, series: str, value: float, *, at: float | None = None) -> None:
        s = Sample(self.now() if at is None else at, float(value))
        with self._lock:
            self._series.setdefault(series, []).append(s)

    def events(self, kind: str | None = None, name: str | None = None) -> list[Event]:
        """Events in time order, optionally filtered by kind and name."""
        with self._lock:
            evs = list(self._events)
        evs.sort(key=lambda e: e.t)
        return [
            e for e in evs if (kind is None or e.kind == kind) and (name is None or e.name == name)
        ]

    def series(self, name: str) -> list[Sample]:
        with self._lock:
            return sorted(self._series.get(name, []), key=lambda s: s.t)

    def series_names(self) -> list[str]:
        with self._lock:
            return sorted(self._series)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (used by reports)."""
        return {
            "wall_origin": self.wall_origin,
            "events": [
                {"t": round(e.t, 3), "kind": e.kind, "name": e.name, "detail": e.detail}
                for e in self.events()
            ],
            "series": {
                n: [[round(s.t, 3), s.value] for s in self.series(n)] for n in self.series_names()
            },
        }


def first_event(
    timeline: Timeline,
    *,
    after: float,
    kind: str,
    name: str | None = None,
    before: float | None = None,
) -> Event | None:
    """The first event of ``kind`` (and ``name``) at or after ``after``."""
    for e in timeline.events(kind, name):
        if e.t >= after and (before is None or e.t <= before):
            return e
    return None


def time_to_detect(
    timeline: Timeline, *, after: float, kind: str, name: str | None = None
) -> float | None:
    """Seconds from ``after`` (the injection) to the first matching event, or None."""
    ev = first_event(timeline, after=after, kind=kind, name=name)
    return None if ev is None else ev.t - after


def time_to_recover(
    samples: list[Sample],
    *,
    after: float,
    ok: Callable[[float], bool],
    hold: float = 0.0,
) -> float | None:
    """Seconds from ``after`` until the series is healthy and stays so for ``hold`` s.

    ``ok`` says whether one sample is healthy. Returns None when the series
    never becomes healthy for long enough (or the hold runs past the data).
    """
    start: float | None = None
    last_t: float | None = None
    for s in samples:
        t, good = s.t, ok(s.value)
        if t < after:
            continue
        last_t = t
        if good:
            if start is None:
                start = t
            if t - start >= hold:
                return start - after
        else:
            start = None
    if start is not None and last_t is not None and last_t - start >= hold:
        return start - after
    return None
