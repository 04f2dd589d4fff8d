"""Rate control: phases, their documented maxima, and the per-user pacer.

The harness owns the schedule: it writes the current phase's total rate to a
small JSON control file; every locust process re-reads it and each user paces
itself at ``rate / users`` task runs per second on an absolute schedule (so
sleep overshoot does not accumulate into a lower rate, as it does with
locust's ``constant_throughput``). Pure logic: no locust import.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

__all__ = [
    "MAX_RATE",
    "MAX_SECONDS",
    "MAX_USERS",
    "MAX_WORKERS",
    "Control",
    "Pacer",
    "Phase",
    "default_users",
    "validate_phases",
    "write_control",
]

#: Highest total request rate (req/s) one LoadGenerator may ask for.
MAX_RATE = 10000.0
#: Longest run (sum of phases), in seconds.
MAX_SECONDS = 3600.0
MAX_USERS = 1000
MAX_WORKERS = 16
#: A user idles this long between looks at the control file while the rate is 0.
IDLE_POLL = 0.1
#: Per-user rate used to pick a default number of users. Each user waits for its
#: response (a closed model), so this leaves 100 ms of latency headroom per request
#: before a slowed target lowers the achieved rate; raise ``users`` for more.
RATE_PER_USER = 10.0


@dataclass(frozen=True)
class Phase:
    """``seconds`` of load at ``rate`` requests per second (0: idle)."""

    name: str
    seconds: float
    rate: float


def validate_phases(phases: Sequence[Phase], *, field: str = "phases") -> tuple[Phase, ...]:
    """Refuse empty, negative, non-finite or above-maximum phases with ConfigError."""
    if not phases:
        raise ConfigError(field, "no phase given", expected="at least one (name, seconds, rate)")
    for i, ph in enumerate(phases):
        where = f"{field}[{i}]"
        if not ph.name:
            raise ConfigError(f"{where}.name", "empty", expected="a phase name")
        if not math.isfinite(ph.seconds) or ph.seconds <= 0:
            raise ConfigError(f"{where}.seconds", f"{ph.seconds!r}", expected="> 0")
        if not math.isfinite(ph.rate) or not 0 <= ph.rate <= MAX_RATE:
            raise ConfigError(f"{where}.rate", f"{ph.rate!r} req/s", expected=f"0..{MAX_RATE:g}")
    total = sum(ph.seconds for ph in phases)
    if total > MAX_SECONDS:
        raise ConfigError(field, f"{total:g} s in all", expected=f"at most {MAX_SECONDS:g} s")
    if all(ph.rate == 0 for ph in phases):
        raise ConfigError(field, "every phase has rate 0", expected="some load")
    return tuple(phases)


def default_users(peak_rate: float, workers: int) -> int:
    """Enough users that each paces at about RATE_PER_USER, at least one per worker."""
    return min(MAX_USERS, max(workers, 1, math.ceil(peak_rate / RATE_PER_USER)))


@dataclass(frozen=True)
class Control:
    """What the control file says: the total rate, the users sharing it, the phase."""

    rate: float
    users: int
    phase: str

    @property
    def per_user(self) -> float:
        return self.rate / self.users if self.users else 0.0

    @classmethod
    def read(cls, path: Path) -> Control:
        raw: dict[str, Any] = json.loads(path.read_text())
        return cls(float(raw["rate"]), int(raw["users"]), str(raw["phase"]))


def write_control(path: Path, control: Control) -> None:
    """Replace the control file atomically: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"rate": control.rate, "users": control.users, "phase": control.phase})
    )
    os.replace(tmp, path)


class Pacer:
    """One user's absolute schedule: task starts ``1/rate`` apart.

    ``wait`` returns how long to sleep before the next task. Falling behind by
    more than ``max_lag`` seconds (a slow target) drops the backlog instead of
    bursting to catch up, so the rate never exceeds the target.
    """

    def __init__(self, max_lag: float = 1.0) -> None:
        self.max_lag = max_lag
        self._interval: float | None = None
        self._next_due = 0.0

    def wait(self, now: float, rate: float, offset: float) -> float:
        """Seconds to wait; ``offset`` in [0, 1) spreads users' first starts over an interval."""
        if rate <= 0:
            self._interval = None
            return IDLE_POLL
        interval = 1.0 / rate
        if self._interval != interval:
            # A new rate (or the start): begin a fresh schedule, spread across users.
            self._interval = interval
            self._next_due = now + offset * interval
        elif now - self._next_due > self.max_lag:
            self._next_due = now
        delay = max(0.0, self._next_due - now)
        self._next_due += interval
        return delay
