"""Per-second load statistics: the wire format between locust and the harness.

Every locust process that runs users (the single standalone process, or each
worker in distributed mode) writes one JSON line per wall-clock second to its
own file in the stats directory::

    {"kind": "window", "source": "w-1234", "second": 1700000000, "span": 1.0,
     "endpoints": {"create_order": {"n": 98, "fail": 0, "hist": {"3": 40, "4": 58}}}}

``second`` is the whole wall-clock second the window covers (requests are
counted in the second they completed), ``span`` the part of it the process
was running (less than 1 for the first and last window), and ``hist`` the
response times in milliseconds, bucketed as locust does, so windows from
several workers merge exactly before percentiles are taken. A
``{"kind": "start", ...}`` line says a source began its test.

Everything here is pure logic, shared by the locust side
(:mod:`harness.load.locust_side`) and the harness side
(:class:`~harness.load.generator.LoadGenerator`); it never imports locust.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EndpointWindow",
    "SecondStats",
    "Totals",
    "WindowMerger",
    "bucket_ms",
    "parse_line",
    "percentile",
    "series_for",
    "slug",
]

PERCENTILES = (0.5, 0.95, 0.99)
#: Windows shorter than this (seconds) count in the totals but yield no series.
MIN_SPAN = 0.25


def bucket_ms(ms: float) -> int:
    """Round a response time the way locust's histogram does (2-3 significant digits).

    Exact below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, then to 1 s:
    small and bounded histograms whose percentiles stay within ~5 %.
    """
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0 < q <= 1) of a bucketed histogram; None if empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))  # unreachable: seen reaches total


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(name: str) -> str:
    """A request name as a series component: ``"GET /orders/[id]"`` -> ``get_orders_id``."""
    return _SLUG.sub("_", name.lower()).strip("_") or "unnamed"


@dataclass
class EndpointWindow:
    """Requests of one endpoint in one window (or merged over several)."""

    n: int = 0
    fail: int = 0
    hist: Counter[int] = field(default_factory=Counter)

    def add(self, other: EndpointWindow) -> None:
        self.n += other.n
        self.fail += other.fail
        self.hist.update(other.hist)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "fail": self.fail, "hist": {str(k): v for k, v in self.hist.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EndpointWindow:
        hist = Counter({int(k): int(v) for k, v in raw.get("hist", {}).items()})
        return cls(n=int(raw["n"]), fail=int(raw["fail"]), hist=hist)


def parse_line(line: str) -> dict[str, Any] | None:
    """One JSON line from a stats file, or None for a torn or foreign line."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or rec.get("kind") not in ("window", "start"):
        return None
    return rec


@dataclass(frozen=True)
class SecondStats:
    """All sources' requests completed in one wall-clock second, merged."""

    second: int
    span: float
    endpoints: dict[str, EndpointWindow]

    @property
    def total(self) -> EndpointWindow:
        out = EndpointWindow()
        for ep in self.endpoints.values():
            out.add(ep)
        return out


def series_for(stats: SecondStats) -> dict[str, float]:
    """The timeline series one merged second yields (name -> value).

    Rates are per second of ``span`` (nothing at all for a span under
    ``MIN_SPAN``); ratios and percentiles exist only for a second in which some
    request completed (a second without any is a gap in ``load.fail_ratio``
    and 0 in ``load.rps``: read both).
    """
    if stats.span < MIN_SPAN:
        # A sliver of a second (the test's first or last) says nothing about rates.
        return {}
    span = stats.span
    out: dict[str, float] = {}
    parts = [("load", stats.total)] + [
        (f"load.{slug(name)}", ep) for name, ep in sorted(stats.endpoints.items())
    ]
    for prefix, ep in parts:
        out[f"{prefix}.rps"] = ep.n / span
        out[f"{prefix}.failures_per_s"] = ep.fail / span
        if ep.n:
            out[f"{prefix}.fail_ratio"] = ep.fail / ep.n
            out[f"{prefix}.success_ratio"] = 1.0 - ep.fail / ep.n
        for q in PERCENTILES:
            value = percentile(ep.hist, q)
            if value is not None:
                out[f"{prefix}.p{round(q * 100)}_ms"] = value
    return out


class WindowMerger:
    """Merges windows from several sources by second; releases seconds once complete.

    A second is released when it is ``grace`` seconds old (every source has
    flushed it by then) or on :meth:`drain`. A window arriving for a second
    already released is counted in ``late`` and in the totals only.
    """

    def __init__(self, grace: float = 2.0) -> None:
        self.grace = grace
        self.late = 0
        self.sources: set[str] = set()
        self._pending: dict[int, SecondStats] = {}
        self._released_upto: int | None = None

    def add(self, rec: Mapping[str, Any]) -> SecondStats | None:
        """Take one parsed record; return it as stats if it arrived too late to merge."""
        self.sources.add(str(rec.get("source", "?")))
        if rec.get("kind") != "window":
            return None
        second = int(rec["second"])
        eps = {name: EndpointWindow.from_json(raw) for name, raw in rec["endpoints"].items()}
        if self._released_upto is not None and second <= self._released_upto:
            self.late += 1
            return SecondStats(second, 0.0, eps)
        slot = self._pending.setdefault(second, SecondStats(second, 0.0, {}))
        for name, ep in eps.items():
            slot.endpoints.setdefault(name, EndpointWindow()).add(ep)
        # Sources run side by side: the second's span is the longest any covered.
        self._pending[second] = SecondStats(
            second, max(slot.span, float(rec.get("span", 1.0))), slot.endpoints
        )
        return None

    def release(self, now_wall: float) -> list[SecondStats]:
        """Seconds old enough that every source has written them, oldest first."""
        ready = [s for s in self._pending if s + 1 + self.grace <= now_wall]
        return self._pop(ready)

    def drain(self) -> list[SecondStats]:
        """Everything still pending (the sources have exited)."""
        return self._pop(list(self._pending))

    def _pop(self, seconds: Iterable[int]) -> list[SecondStats]:
        out = [self._pending.pop(s) for s in sorted(seconds)]
        if out:
            self._released_upto = max(out[-1].second, self._released_upto or out[-1].second)
        return out


@dataclass
class Totals:
    """Accumulated over a whole run: what :meth:`LoadGenerator.summary` reports."""

    first_second: int | None = None
    last_second: int | None = None
    active_seconds: float = 0.0
    endpoints: dict[str, EndpointWindow] = field(default_factory=dict)

    def add(self, stats: SecondStats) -> None:
        if self.first_second is None or stats.second < self.first_second:
            self.first_second = stats.second
        if self.last_second is None or stats.second > self.last_second:
            self.last_second = stats.second
        self.active_seconds += stats.span
        for name, ep in stats.endpoints.items():
            self.endpoints.setdefault(name, EndpointWindow()).add(ep)

    def summary(self) -> dict[str, Any]:
        """Totals and percentiles over the run, overall and per endpoint."""

        def one(ep: EndpointWindow) -> dict[str, Any]:
            secs = self.active_seconds
            return {
                "requests": ep.n,
                "failures": ep.fail,
                "fail_ratio": ep.fail / ep.n if ep.n else None,
                "rps": ep.n / secs if secs else None,
                **{f"p{round(q * 100)}_ms": percentile(ep.hist, q) for q in PERCENTILES},
            }

        total = EndpointWindow()
        for ep in self.endpoints.values():
            total.add(ep)
        return {
            "seconds": self.active_seconds,
            "total": one(total),
            "endpoints": {name: one(ep) for name, ep in sorted(self.endpoints.items())},
        }
