"""The locust-side plugin: pacing from the harness, and per-second stats back to it.

Loaded INSIDE the locust subprocess only (``locust -f locust_side.py,<locustfile>``
as :class:`~harness.load.generator.LoadGenerator` runs it): importing locust
gevent-patches the whole process, so the harness never imports this module.

On ``init`` it replaces every user class's ``wait_time`` with the harness's
pacer (so the harness's rate bound holds for any locustfile, the user's own
too), and in every process that runs users it records each request into the
current one-second window and writes the window as one JSON line per second
(format: :mod:`harness.load.stats`).

Settings come from the environment the harness sets:
``FAULTLINE_LOAD_CONTROL`` (control file), ``FAULTLINE_LOAD_STATS_DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner

from harness.load.pacing import Control, Pacer
from harness.load.stats import EndpointWindow, bucket_ms

__all__: list[str] = []

log = logging.getLogger(__name__)

CONTROL_ENV = "FAULTLINE_LOAD_CONTROL"
STATS_DIR_ENV = "FAULTLINE_LOAD_STATS_DIR"
#: Re-read the control file at most this often per process.
CONTROL_TTL = 0.2


class _ControlCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = Control(0.0, 1, "?")
        self._read_at = -1.0

    def get(self) -> Control:
        now = time.monotonic()
        if now - self._read_at >= CONTROL_TTL:
            self._read_at = now
            try:
                self.value = Control.read(self.path)
            except (OSError, ValueError, KeyError) as err:
                # Keep the last good value: the harness replaces the file atomically,
                # so this is a vanished run directory, and --run-time ends us anyway.
                log.warning("control file %s unreadable: %s", self.path, err)
        return self.value


_control = _ControlCache(Path(os.environ.get(CONTROL_ENV, "/nonexistent")))


def _paced_wait(user: Any) -> float:
    pacer: Pacer | None = getattr(user, "_faultline_pacer", None)
    if pacer is None:
        pacer = user._faultline_pacer = Pacer()
    return pacer.wait(time.monotonic(), _control.get().per_user, random.random())


class _Recorder:
    """Requests bucketed by the wall-clock second they completed in."""

    def __init__(self, out: Path, source: str) -> None:
        self.out = out
        self.source = source
        self.started = time.time()
        self.windows: dict[int, dict[str, EndpointWindow]] = {}
        self._fh = open(out, "a", buffering=1)  # noqa: SIM115 - open for the whole test

    def on_request(self, name: str, response_time: float, exception: Any, **_: Any) -> None:
        second = int(time.time())
        ep = self.windows.setdefault(second, {}).setdefault(name, EndpointWindow())
        ep.n += 1
        if exception is not None:
            ep.fail += 1
        ep.hist[bucket_ms(response_time or 0.0)] += 1

    def write(self, rec: dict[str, Any]) -> None:
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def flush(self, *, final: bool = False) -> None:
        """Write every finished second (and, when final, the current one too)."""
        now = time.time()
        current = int(now)
        seconds = range(int(self.started), current + (1 if final else 0))
        for second in seconds:
            eps = self.windows.pop(second, {})
            span = min(second + 1, now) - max(second, self.started)
            self.write(
                {
                    "kind": "window",
                    "source": self.source,
                    "second": second,
                    "span": round(max(span, 0.0), 3),
                    "endpoints": {n: ep.to_json() for n, ep in eps.items()},
                }
            )
        self.started = float(current + (1 if final else 0))

    def loop(self) -> None:
        while True:
            # Wake just after each second boundary, so the last second is complete.
            gevent.sleep(1.02 - time.time() % 1.0)
            self.flush()

    def close(self) -> None:
        self.flush(final=True)
        self._fh.close()


def _on_init(environment: Environment, **_: Any) -> None:
    for user_class in environment.user_classes:
        user_class.wait_time = _paced_wait
    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no users: the workers report
    stats_dir = Path(os.environ[STATS_DIR_ENV])
    source = f"p{os.getpid()}"
    state: dict[str, Any] = {}

    def on_test_start(**_: Any) -> None:
        rec = _Recorder(stats_dir / f"{source}.jsonl", source)
        rec.write({"kind": "start", "source": source, "t": rec.started})
        environment.events.request.add_listener(rec.on_request)  # type: ignore[no-untyped-call]
        state["rec"], state["loop"] = rec, gevent.spawn(rec.loop)

    def on_test_stop(**_: Any) -> None:
        rec: _Recorder | None = state.pop("rec", None)
        if rec is None:
            return
        state.pop("loop").kill()
        environment.events.request.remove_listener(rec.on_request)  # type: ignore[no-untyped-call]
        rec.close()

    # locust's EventHook is untyped.
    environment.events.test_start.add_listener(on_test_start)  # type: ignore[no-untyped-call]
    environment.events.test_stop.add_listener(on_test_stop)  # type: ignore[no-untyped-call]


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
