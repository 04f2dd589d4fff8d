"""Watch a service's health endpoint: is it answering, from the harness's side?

Writes the per-poll series ``<name>.healthy`` (1 or 0) and, on each change,
the events ``health.failed`` / ``health.passed`` (named after the service)
onto the timeline. The first poll sets the state without an event. A poll
that times out (a frozen process holds the connection) counts as failed.

>>> with HealthWatcher(svc.healthy, run.timeline, "inventoryd"):   # doctest: +SKIP
...     ...
"""

from __future__ import annotations

from collections.abc import Callable

from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["HealthWatcher"]


class HealthWatcher(Poller):
    """Poll ``healthy(timeout)`` every ``interval`` seconds; see the module docstring."""

    def __init__(
        self,
        healthy: Callable[[float], bool],
        timeline: Timeline,
        name: str,
        *,
        interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.healthy = healthy
        self.timeline = timeline
        self.name = name
        self.interval = interval
        self._last: bool | None = None

    def poll(self) -> None:
        ok = self.healthy(self.interval)
        # Stamped when the answer is known: a failed poll is one that timed out.
        at = self.timeline.now()
        self.timeline.sample(f"{self.name}.healthy", 1.0 if ok else 0.0, at=at)
        if self._last is not None and ok != self._last:
            self.timeline.event("health.passed" if ok else "health.failed", self.name, at=at)
        self._last = ok
