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

Every call goes through :class:`PromApi`: prometheus-api-client's
``PrometheusConnect`` for PromQL, and the same requests session for the two
endpoints it has no method for (``/api/v1/alerts``, ``/api/v1/rules``).
``bench/bench_prom_client.py`` measured its cost against a bare httpx client
at 1.4 ms of CPU per call against 1.0 ms: 0.4 % of one core at the watchers'
rates, no reason to keep a client of our own. It does not retry (the next poll
is the retry; the library's default backs off for seconds while a target is
down, which is what a scenario watches).

At start, :class:`AlertWatcher` records the alerting rules Prometheus loaded
(``alert.rules_loaded``, detail ``rules``): the report's alert coverage.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["RULES_EVENT", "AlertState", "AlertWatcher", "PromApi", "PromError", "SeriesSampler"]

log = logging.getLogger(__name__)

# The timeline event that lists the alerting rules a Prometheus loaded.
RULES_EVENT = "alert.rules_loaded"
# What a failed call to Prometheus raises: unreachable, or a non-200 answer.
PromError = (requests.RequestException, PrometheusApiClientException, KeyError, ValueError)


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


class PromApi:
    """The HTTP API of one Prometheus: ``PrometheusConnect`` and its requests session.

    >>> with PromApi(prom.url) as api:                       # doctest: +SKIP
    ...     api.query('sum(up{job="etcd"})'), [a.name for a in api.alerts()]
    (3.0, [])
    """

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.connect = PrometheusConnect(
            self.url, session=self.session, timeout=timeout, retry=Retry(total=0)
        )

    def close(self) -> None:
        self.connect.close()

    def __enter__(self) -> PromApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        resp = self.session.get(f"{self.url}{path}", timeout=self.timeout)
        resp.raise_for_status()
        return resp.json()["data"]

    def query(self, promql: str) -> float | None:
        """The value of an instant query: a scalar, or the first element of a vector.

        None when the result is empty or NaN (e.g. a ratio over no traffic).
        """
        result = self.connect.custom_query(promql)
        if not result:
            return None
        # custom_query returns data.result: [t, "v"] for a scalar, [{metric, value}] for a vector
        raw = result[0]["value"][1] if isinstance(result[0], dict) else result[1]
        value = float(raw)
        return None if math.isnan(value) else value

    def alerts(self) -> list[AlertState]:
        """The active (pending or firing) alerts."""
        out = []
        for a in self._get("/api/v1/alerts")["alerts"]:
            labels = dict(a["labels"])
            try:
                value: float | None = float(a["value"])
            except (KeyError, TypeError, ValueError):
                value = None
            out.append(
                AlertState(
                    labels["alertname"], a["state"], labels, _parse_time(a["activeAt"]), value
                )
            )
        return out

    def alerting_rules(self) -> list[str]:
        """The names of every alerting rule loaded (recording rules left out)."""
        groups = self._get("/api/v1/rules?type=alert")["groups"]
        return sorted(
            {r["name"] for g in groups for r in g["rules"] if r.get("type") == "alerting"}
        )

    def active_targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets``' active targets, as Prometheus gives them."""
        targets: list[dict[str, Any]] = self.connect.get_targets(state="active")["activeTargets"]
        return targets


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
        self._api = PromApi(self.url)
        self._active: dict[tuple[tuple[str, str], ...], AlertState] = {}
        self._rules_seen = False

    def stop(self) -> None:
        """Stop polling after one last poll, so a change just before stop is not lost."""
        super().stop()
        try:
            self.poll()
        except PromError as err:
            log.debug("last alert poll failed: %r", err)
        self._api.close()

    def _record_rules(self) -> None:
        # Once per watcher, at the first poll that reaches Prometheus.
        rules = self._api.alerting_rules()
        self.timeline.event(RULES_EVENT, "prometheus", url=self.url, rules=rules)
        self._rules_seen = True

    def poll(self) -> None:
        if not self._rules_seen:
            self._record_rules()
        alerts = self._api.alerts()
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
        self._api = PromApi(self.url)

    def stop(self) -> None:
        super().stop()
        self._api.close()

    def poll(self) -> None:
        for name, expr in self.exprs.items():
            try:
                value = self._api.query(expr)
            except PromError as err:
                log.debug("sampling %s failed: %r", name, err)
                continue
            if value is not None:
                self.timeline.sample(name, value)
