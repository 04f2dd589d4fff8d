"""Bounded write traffic straight from the harness, for scenarios that need no locust.

A :class:`KvWriter` puts one key at a fixed rate through an
:class:`~harness.etcd_client.EtcdClient` and lays each second's outcome onto
the timeline (``<name>.ok``, ``<name>.failed`` per second) plus a
``writes.failing`` / ``writes.ok_again`` event pair around each outage, so
checks can tell when writes stopped and when they came back. It stops by
itself after ``max_duration`` seconds whatever the caller does.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Self

from harness.errors import ConfigError
from harness.etcd_client import EtcdClient, EtcdError
from harness.timeline import Timeline

__all__ = ["KvWriter"]

log = logging.getLogger(__name__)

MAX_RATE = 200.0
MAX_DURATION = 600.0


class KvWriter:
    """Puts ``rate`` keys per second for at most ``max_duration`` seconds (a thread)."""

    def __init__(
        self,
        client: EtcdClient,
        timeline: Timeline,
        *,
        rate: float = 20.0,
        max_duration: float = 120.0,
        name: str = "writes",
    ) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ConfigError("rate", f"{rate}", expected=f"0 < rate <= {MAX_RATE}")
        if not 0 < max_duration <= MAX_DURATION:
            raise ConfigError(
                "max_duration", f"{max_duration}", expected=f"0 < seconds <= {MAX_DURATION}"
            )
        self.client = client
        self.timeline = timeline
        self.rate = rate
        self.max_duration = max_duration
        self.name = name
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kvwriter-{name}", daemon=True)

    def _loop(self) -> None:
        interval = 1.0 / self.rate
        end = time.monotonic() + self.max_duration
        next_at = time.monotonic()
        second, ok_s, failed_s = int(self.timeline.now()), 0, 0
        failing = False
        seq = 0
        while not self._stop.is_set() and time.monotonic() < end:
            seq += 1
            try:
                self.client.put(f"/faultline/{self.name}/{seq % 100}", str(seq))
                good = True
            except EtcdError as err:
                good = False
                last_error = str(err)
            now = self.timeline.now()
            if good:
                self.ok += 1
                ok_s += 1
                if failing:
                    self.timeline.event(f"{self.name}.ok_again", self.name, at=now)
                    failing = False
            else:
                self.failed += 1
                failed_s += 1
                if not failing:
                    self.timeline.event(f"{self.name}.failing", self.name, at=now, error=last_error)
                    failing = True
            if int(now) != second:
                # One sample per second, including the seconds in which a blocked
                # write completed nothing at all.
                for sec in range(second, int(now)):
                    self.timeline.sample(f"{self.name}.ok", ok_s, at=float(sec))
                    self.timeline.sample(f"{self.name}.failed", failed_s, at=float(sec))
                    ok_s, failed_s = 0, 0
                second = int(now)
            # Pace on a fixed schedule; after a slow (failed) call, do not burst to catch up.
            next_at = max(next_at + interval, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.client.timeout + 2)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
