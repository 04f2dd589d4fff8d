"""Watch a backend's workload status for OOM kills and restarts.

Writes ``oom.killed`` (one per counted OOM kill) and ``workload.restarted`` (one
per counted restart) onto the timeline, timed at the poll that saw the counter
move: at most one poll interval (0.5 s by default) after the fact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from harness.backends.base import Backend
from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["OomWatcher"]

log = logging.getLogger(__name__)


class OomWatcher(Poller):
    """Poll ``backend.status(name)`` of each workload; record OOM kills and restarts."""

    def __init__(
        self,
        backend: Backend,
        timeline: Timeline,
        workloads: Sequence[str],
        *,
        interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.timeline = timeline
        self.workloads = list(workloads)
        self.interval = interval
        self._seen: dict[str, tuple[int, int]] = {}

    def poll(self) -> None:
        for name in self.workloads:
            try:
                st = self.backend.status(name)
            except Exception as err:  # noqa: BLE001 - a gone workload is not our failure
                log.debug("status(%s) failed: %r", name, err)
                continue
            # The first look is the baseline: kills before we watched are not news.
            oom0, restarts0 = self._seen.get(name, (st.oom_kills, st.restarts))
            for n in range(oom0 + 1, st.oom_kills + 1):
                self.timeline.event("oom.killed", name, oom_kills=n, exit_code=st.exit_code)
            for n in range(restarts0 + 1, st.restarts + 1):
                self.timeline.event(
                    "workload.restarted", name, restarts=n, oom_killed=st.oom_killed
                )
            self._seen[name] = (st.oom_kills, st.restarts)
