"""Watch an etcd cluster's leader: leader changes and quorum loss onto the timeline.

It takes a callable returning the current leader's name, or None when there is
none (``EtcdCluster.leader``), so it does not depend on how the cluster is run.
Events: ``etcd.leader_changed`` (detail: ``from``, ``to``), ``etcd.quorum_lost``
(no leader for longer than an election: writes cannot commit) and
``etcd.quorum_restored``; each timed at the poll that saw it, so late by at most
one interval (0.5 s by default) plus the callable's own time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["LeaderWatcher"]

log = logging.getLogger(__name__)


class LeaderWatcher(Poller):
    """Poll ``leader()``; an exception from it counts as "no leader".

    No leader for ``min_leaderless`` seconds (longer than an election) counts as
    quorum lost; the event is dated to the first leaderless poll.
    """

    def __init__(
        self,
        leader: Callable[[], str | None],
        timeline: Timeline,
        *,
        name: str = "etcd",
        interval: float = 0.5,
        min_leaderless: float = 2.0,
    ) -> None:
        super().__init__()
        self.leader = leader
        self.timeline = timeline
        self.name = name
        self.interval = interval
        self.min_leaderless = min_leaderless
        self._leader: str | None = None
        self._leaderless_since: float | None = None
        self._lost = False
        self._numbers: dict[str, int] = {}

    def poll(self) -> None:
        try:
            current = self.leader()
        except Exception as err:  # noqa: BLE001 - an unreachable cluster has no leader
            log.debug("leader() failed: %r", err)
            current = None
        self.observe(current, self.timeline.now())

    def observe(self, current: str | None, at: float) -> None:
        """Account for one observation of the leader (``poll`` calls this).

        Also samples ``<name>.leader``: 0 without a leader, else the leader's
        number in the order leaders were first seen (1, 2, ...), for the picture.
        """
        number = 0 if current is None else self._numbers.setdefault(current, len(self._numbers) + 1)
        self.timeline.sample(f"{self.name}.leader", number, at=at)
        if current is None:
            if self._leaderless_since is None:
                self._leaderless_since = at
            if not self._lost and at - self._leaderless_since >= self.min_leaderless:
                self._lost = True
                self.timeline.event(
                    "etcd.quorum_lost",
                    self.name,
                    at=self._leaderless_since,
                    last_leader=self._leader,
                )
            return
        if self._lost:
            self.timeline.event("etcd.quorum_restored", self.name, at=at, leader=current)
        self._lost, self._leaderless_since = False, None
        if self._leader is not None and current != self._leader:
            self.timeline.event(
                "etcd.leader_changed", self.name, at=at, **{"from": self._leader, "to": current}
            )
        self._leader = current
