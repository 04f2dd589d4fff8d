"""Prometheus onto the timeline: alert transitions and sampled PromQL series.

:class:`AlertWatcher` polls ``/api/v1/alerts`` (every 0.5 s by default) and writes
``alert.pending``, ``alert.firing`` and ``alert.resolved`` events, named after the
alert, with its labels in ``detail``. Times:

* pending: the alert's ``activeAt`` (Prometheus' own evaluation time, converted
  from wall clock to timeline seconds): exact to the evaluation.
* firing and resolved: the poll that first saw the change. Prometheus changes
  state at an evaluation (every evaluation_interval, 1 s here) and we see it at
  the next poll, so these are late by at most one poll interval plus one HTTP
  round trip (<= 0.5 s + a few ms), and the state itself lags the metric by up
  to one scrape + one evaluation interval.

:class:`SeriesSampler` evaluates named PromQL expressions every second and
samples each onto the timeline series of that name.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["AlertState", "AlertWatcher", "SeriesSampler", "fetch_alerts", "instant_query"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertState:
    name: str
    state: str  # "pending" | "firing"
    labels: Mapping[str, str]
    active_at: float  # wall clock seconds
    value: float | None

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _parse_time(text: str) -> float:
    """RFC 3339 with up to nanoseconds (Go's RFC3339Nano) to epoch seconds."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + tz).timestamp() + float(f"0.{m.group(2) or 0}")


def fetch_alerts(client: httpx.Client, url: str) -> list[AlertState]:
    """The active (pending or firing) alerts of the Prometheus at ``url``."""
    resp = client.get(f"{url}/api/v1/alerts")
    resp.raise_for_status()
    out = []
    for a in resp.json()["data"]["alerts"]:
        labels = dict(a["labels"])
        try:
            value: float | None = float(a["value"])
        except (KeyError, TypeError, ValueError):
            value = None
        out.append(
            AlertState(labels["alertname"], a["state"], labels, _parse_time(a["activeAt"]), value)
        )
    return out


def instant_query(client: httpx.Client, url: str, promql: str) -> float | None:
    """The value of an instant query: a scalar, or the first element of a vector.

    None when the result is empty or NaN (e.g. a ratio over no traffic).
    """
    resp = client.get(f"{url}/api/v1/query", params={"query": promql})
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()["data"]
    result = data["result"]
    if data["resultType"] == "scalar":
        raw = result[1]
    elif data["resultType"] == "vector" and result:
        raw = result[0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


class AlertWatcher(Poller):
    """Poll Prometheus alerts; write their transitions onto ``timeline``.

    >>> with AlertWatcher(prom.url, run.timeline):        # doctest: +SKIP
    ...     run_the_fault()
    """

    def __init__(self, url: str, timeline: Timeline, *, interval: float = 0.5) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.timeline = timeline
        self.interval = interval
        self._client = httpx.Client(timeout=2.0)
        self._active: dict[tuple[tuple[str, str], ...], AlertState] = {}

    def stop(self) -> None:
        """Stop polling after one last poll, so a change just before stop is not lost."""
        super().stop()
        try:
            self.poll()
        except httpx.HTTPError as err:
            log.debug("last alert poll failed: %r", err)
        self._client.close()

    def poll(self) -> None:
        alerts = fetch_alerts(self._client, self.url)
        now = self.timeline.now()
        seen = {}
        for a in alerts:
            seen[a.key] = a
            before = self._active.get(a.key)
            detail = {"labels": dict(a.labels), "value": a.value}
            if before is None or before.active_at != a.active_at:
                # A new episode: pending from its activeAt (also for for: 0 alerts,
                # which are pending for no time at all).
                self.timeline.event(
                    "alert.pending", a.name, at=self.timeline.from_wall(a.active_at), **detail
                )
            if a.state == "firing" and (
                before is None or before.state != "firing" or before.active_at != a.active_at
            ):
                self.timeline.event("alert.firing", a.name, at=now, **detail)
        for key, gone in self._active.items():
            if key not in seen:
                self.timeline.event(
                    "alert.resolved", gone.name, at=now, labels=dict(gone.labels), was=gone.state
                )
        self._active = seen


class SeriesSampler(Poller):
    """Every ``interval`` seconds, sample each named PromQL expression onto the timeline.

    ``exprs`` maps a series name to an expression that yields one value
    (aggregate it: ``sum(...)``, ``max(...)``); an empty result is not sampled.

    >>> p99 = "histogram_quantile(0.99, sum by (le) (rate(orderd_request_seconds_bucket[10s])))"
    >>> SeriesSampler(prom.url, tl, {"p99_s": p99}).start()     # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        timeline: Timeline,
        exprs: Mapping[str, str],
        *,
        interval: float = 1.0,
    ) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.timeline = timeline
        self.exprs = dict(exprs)
        self.interval = interval
        self._client = httpx.Client(timeout=2.0)

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def poll(self) -> None:
        for name, expr in self.exprs.items():
            try:
                value = instant_query(self._client, self.url, expr)
            except (httpx.HTTPError, KeyError, ValueError) as err:
                log.debug("sampling %s failed: %r", name, err)
                continue
            if value is not None:
                self.timeline.sample(name, value)
