"""LoadGenerator: locust in a subprocess, paced by phases, streaming per-second stats.

>>> with Run.open() as run:                                         # doctest: +SKIP
...     load = LoadGenerator(run, locustfile="orderd_http", host="http://127.0.0.1:8080",
...                          phases=[Phase("baseline", 30, 200), Phase("fault", 20, 200),
...                                  Phase("recovery", 30, 200)])
...     with load:
...         load.wait()          # returns when the phases are over
...     run.timeline.series("load.success_ratio")
...     load.summary()["total"]["p99_ms"]

Locust is never imported here (it gevent-patches the whole process): it runs
as ``python -m locust -f locust_side.py,<locustfile>``, standalone or as a
master plus ``workers`` worker processes, each in its own session, tagged with
``run.child_env(name)`` and recorded in the ledger (``kill_tagged``, with a
deadline the watchdog enforces) before it is started. Three bounds stop it by
themselves: locust's ``--run-time``, a harness-side kill ``KILL_GRACE``
seconds after the phases end, and the ledger deadline if the harness dies.

Timeline: events ``load.started``, ``load.phase`` (at each phase start, with
the rate), ``load.stopped``; per-second series (at the end of each one-second
window) ``load.rps``, ``load.failures_per_s``, ``load.fail_ratio``,
``load.success_ratio``, ``load.p50_ms``, ``load.p95_ms``, ``load.p99_ms``,
``load.target_rps``, and the same per endpoint as ``load.<endpoint>.*``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from harness import safety
from harness.components.base import Component, log_tail
from harness.errors import ComponentStartError, ConfigError
from harness.load.pacing import (
    MAX_USERS,
    MAX_WORKERS,
    Control,
    Phase,
    default_users,
    validate_phases,
    write_control,
)
from harness.load.stats import (
    EndpointWindow,
    SecondStats,
    Totals,
    WindowMerger,
    parse_line,
    series_for,
)
from harness.run import Run
from harness.wait import WaitTimeout, wait_until

__all__ = ["BUILTIN_LOCUSTFILES", "LoadGenerator", "resolve_locustfile"]

log = logging.getLogger(__name__)

#: The plugin locust loads before the locustfile (see harness.load.locust_side).
LOCUST_SIDE = Path(__file__).with_name("locust_side.py")
LOCUSTFILE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "locust"
BUILTIN_LOCUSTFILES = ("orderd_http", "orderd_grpc", "etcd_kv")
#: Seconds after the last phase's end before the harness kills locust itself.
KILL_GRACE = 10.0
#: Seconds locust gets to quit on SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
TAIL_INTERVAL = 0.25


def resolve_locustfile(locustfile: str | Path, *, field: str = "load.locustfile") -> Path:
    """A built-in name (``orderd_http``...) or the path of the user's own locustfile."""
    if isinstance(locustfile, str) and locustfile in BUILTIN_LOCUSTFILES:
        return LOCUSTFILE_DIR / f"{locustfile}.py"
    path = Path(locustfile)
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(
            field,
            f"{str(locustfile)!r} is neither a built-in locustfile nor a .py file",
            expected=f"one of {', '.join(BUILTIN_LOCUSTFILES)} or a path to a locustfile",
        )
    return path.resolve()


def _check_target(host: str, field: str) -> str:
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(field, f"{host!r}", expected="http(s)://host:port or host:port")
        safety.check_host(parts.hostname, field=field)
    else:
        safety.check_hostport(host, field=field)
    return host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LoadGenerator(Component):
    """Locust load against a loopback (or own) target, at a paced rate, in phases.

    Give either ``rate`` and ``duration`` or ``phases``. ``users`` defaults to
    one per 10 req/s of the peak rate; ``workers`` > 0 runs a locust master
    and that many worker processes. ``env`` is passed to the locustfile (e.g.
    the etcd client cert paths). The rate counts task runs: the built-in
    locustfiles make one request per task.
    """

    def __init__(
        self,
        run: Run,
        *,
        locustfile: str | Path,
        host: str,
        rate: float | None = None,
        duration: float | None = None,
        phases: Sequence[Phase] | None = None,
        users: int | None = None,
        workers: int = 0,
        env: Mapping[str, str] | None = None,
        name: str = "load",
        start_timeout: float = 60.0,
    ) -> None:
        self.run = run
        self.name = name
        self.locustfile = resolve_locustfile(locustfile)
        self.host = _check_target(host, "load.host")
        if phases is None:
            if rate is None or duration is None:
                raise ConfigError("load.phases", "neither phases nor rate and duration given")
            phases = [Phase("steady", duration, rate)]
        elif rate is not None or duration is not None:
            raise ConfigError("load.rate", "given together with phases", expected="one or other")
        self.phases = validate_phases(phases, field="load.phases")
        if not 0 <= workers <= MAX_WORKERS:
            raise ConfigError("load.workers", f"{workers}", expected=f"0..{MAX_WORKERS}")
        self.workers = workers
        peak = max(ph.rate for ph in self.phases)
        self.users = default_users(peak, workers) if users is None else users
        if not max(1, workers) <= self.users <= MAX_USERS:
            raise ConfigError(
                "load.users", f"{self.users}", expected=f"{max(1, workers)}..{MAX_USERS}"
            )
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.duration = sum(ph.seconds for ph in self.phases)

        self._procs: list[subprocess.Popen[bytes]] = []
        self._seq: int | None = None
        self._lock = threading.Lock()  # process handling: stop() vs the supervisor
        self._stats_lock = threading.Lock()  # totals: summary() vs the supervisor
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._merger = WindowMerger()
        self._totals = Totals()
        # Every request by the wall-clock second it completed in, all endpoints merged.
        self._seconds: dict[int, EndpointWindow] = {}
        self._sources_started: set[str] = set()
        self._offsets: dict[Path, tuple[int, bytes]] = {}
        # (wall-clock start, rate) of each phase begun; for load.target_rps.
        self._phase_starts: list[tuple[float, float]] = []
        self._exit_code: int | None = None
        self._dir: Path | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self._workdir / "locust.log"

    @property
    def _workdir(self) -> Path:
        if self._dir is None:
            self._dir = self.run.subdir(self.name)
        return self._dir

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        if self._procs:
            return self
        workdir = self._workdir
        stats_dir = workdir / "stats"
        stats_dir.mkdir(exist_ok=True)
        control = workdir / "control.json"
        first = self.phases[0]
        write_control(control, Control(first.rate, self.users, first.name))
        env = {
            **os.environ,
            **self.env,
            **self.run.child_env(self.name),
            "FAULTLINE_LOAD_CONTROL": str(control),
            "FAULTLINE_LOAD_STATS_DIR": str(stats_dir),
        }
        files = f"{LOCUST_SIDE},{self.locustfile}"
        # Locust's own timer, a little longer than the phases: the harness ends
        # the test itself at the last phase's end; this is the first backstop.
        run_time = math.ceil(self.duration + 2)
        common = ["-f", files, "--loglevel", "INFO"]
        lead = [
            "--headless",
            "--only-summary",
            "--host",
            self.host,
            "-u",
            str(self.users),
            "-r",
            str(self.users),
            "--run-time",
            f"{run_time}s",
            "--exit-code-on-error",
            "0",
        ]
        commands = []
        if self.workers:
            port = _free_port()
            lead += [
                "--master",
                "--expect-workers",
                str(self.workers),
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
            ]
            worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            commands.append(common + lead)
            commands += [common + worker] * self.workers
        else:
            commands.append(common + lead)

        deadline = time.time() + self.start_timeout + self.duration + KILL_GRACE
        self._seq = self.run.ledger.record(
            f"start locust {self.name} against {self.host}",
            {"op": "kill_tagged", "run_id": self.run.run_id, "workload": self.name},
            deadline=deadline,
        )
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - the children keep it
        try:
            for args in commands:
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "locust", *args],
                        cwd=workdir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=logfile,
                        stderr=subprocess.STDOUT,
                        # Own session: a Ctrl-C to the harness's terminal reaches the
                        # harness, which stops locust in order, not locust directly.
                        start_new_session=True,
                    )
                )
        finally:
            logfile.close()
        self.run.ledger.applied(self._seq, pids=[p.pid for p in self._procs])
        log.info(
            "locust %s: pids %s, log %s", self.name, [p.pid for p in self._procs], self.log_path
        )

        expected = max(1, self.workers)
        try:
            wait_until(
                lambda: self._poll_files(stats_dir) >= expected or self._exited(),
                timeout=self.start_timeout,
                what=f"locust {self.name} starting its test",
            )
        except WaitTimeout as err:
            raise self._start_error(f"locust {self.name} did not start its test") from err
        if len(self._sources_started) < expected:
            raise self._start_error(f"locust {self.name} exited during start")
        self.run.timeline.event("load.started", self.name, host=self.host, users=self.users)
        self._thread = threading.Thread(
            target=self._supervise, args=(stats_dir, control), name=f"load-{self.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def _start_error(self, message: str) -> ComponentStartError:
        err = ComponentStartError(message)
        err.add_note(f"locust log {self.log_path}:\n{log_tail(self.log_path)}")
        return err

    def _exited(self) -> bool:
        return bool(self._procs) and self._procs[0].poll() is not None

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the phases are over and locust has exited; return :meth:`summary`."""
        if self._thread is not None:
            limit = self.duration + KILL_GRACE + STOP_TIMEOUT + 5 if timeout is None else timeout
            self._thread.join(limit)
            if self._thread.is_alive():
                raise TimeoutError(f"locust {self.name} still running after {limit:.0f}s")
        return self.summary()

    def stop(self) -> None:
        """End the load (SIGTERM, then SIGKILL) and reap every locust process; idempotent."""
        self._done.set()
        self._terminate()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._seq is not None:
                # kill_tagged also finds any process locust itself forked.
                self.run.ledger.revert(self._seq)
                self._seq = None
                self.run.timeline.event("load.stopped", self.name, exit_code=self._exit_code)

    def _terminate(self) -> None:
        with self._lock:
            procs = [p for p in self._procs if p.poll() is None]
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            end = time.monotonic() + STOP_TIMEOUT
            for p in procs:
                try:
                    p.wait(max(0.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("locust %s pid %d ignored SIGTERM: killing", self.name, p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            if self._procs and self._exit_code is None:
                self._exit_code = self._procs[0].returncode

    # -- the supervisor thread: phases, stats, the hard bound ---------------------

    def _supervise(self, stats_dir: Path, control: Path) -> None:
        t0 = time.monotonic()
        hard_end = t0 + self.duration + KILL_GRACE
        boundaries = []
        acc = 0.0
        for ph in self.phases:
            boundaries.append((t0 + acc, ph))
            acc += ph.seconds
        phase_end = t0 + acc
        next_phase = 0
        try:
            while True:
                now = time.monotonic()
                while next_phase < len(boundaries) and boundaries[next_phase][0] <= now:
                    ph = boundaries[next_phase][1]
                    write_control(control, Control(ph.rate, self.users, ph.name))
                    self._phase_starts.append((time.time(), ph.rate))
                    self.run.timeline.event("load.phase", ph.name, rate=ph.rate)
                    next_phase += 1
                self._poll_files(stats_dir)
                for second in self._merger.release(time.time()):
                    self._lay(second)
                if self._exited():
                    break
                if now >= phase_end or self._done.is_set():
                    # The phases are over (or stop() was called): end the test now.
                    self._terminate()
                    break
                if now >= hard_end:
                    log.error("locust %s outlived its phases: killing it", self.name)
                    self._terminate()
                    break
                time.sleep(TAIL_INTERVAL)
        finally:
            self._poll_files(stats_dir)
            for second in self._merger.drain():
                self._lay(second)
            with self._lock:
                if self._procs and self._exit_code is None:
                    self._exit_code = self._procs[0].poll()

    def _poll_files(self, stats_dir: Path) -> int:
        """Read new complete lines from every stats file; return the sources seen starting."""
        for path in sorted(stats_dir.glob("*.jsonl")):
            offset, partial = self._offsets.get(path, (0, b""))
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            lines = (partial + data).split(b"\n")
            self._offsets[path] = (offset + len(data), lines.pop())
            for raw in lines:
                rec = parse_line(raw.decode(errors="replace"))
                if rec is None:
                    continue
                if rec["kind"] == "start":
                    self._sources_started.add(str(rec.get("source")))
                late = self._merger.add(rec)
                if late is not None:
                    self._count(late)
        return len(self._sources_started)

    def _target_at(self, wall: float) -> float | None:
        rate = None
        for start, r in self._phase_starts:
            if start <= wall:
                rate = r
        return rate

    def _count(self, second: SecondStats) -> None:
        with self._stats_lock:
            self._totals.add(second)
            self._seconds.setdefault(second.second, EndpointWindow()).add(second.total)

    def _lay(self, second: SecondStats) -> None:
        self._count(second)
        at = self.run.timeline.from_wall(second.second + 1)
        for series, value in series_for(second).items():
            self.run.timeline.sample(series, value, at=at)
        target = self._target_at(second.second + 0.5)
        if target is not None:
            self.run.timeline.sample("load.target_rps", target, at=at)

    def total(self) -> EndpointWindow:
        """Every request so far, all endpoints merged: count, failures and the bucketed
        response-time histogram (ms), e.g. to pool several runs before a percentile."""
        out = EndpointWindow()
        with self._stats_lock:
            for ep in self._totals.endpoints.values():
                out.add(ep)
        return out

    def window(self, start: int, end: int) -> EndpointWindow:
        """The requests that completed in the wall-clock seconds ``start`` .. ``end - 1``
        (epoch seconds), all endpoints merged: a measured window inside a longer load."""
        out = EndpointWindow()
        with self._stats_lock:
            for second in range(start, end):
                if second in self._seconds:
                    out.add(self._seconds[second])
        return out

    def summary(self) -> dict[str, Any]:
        """Totals over the run so far: requests, failures, rps, p50/p95/p99, per endpoint."""
        with self._stats_lock:
            out = self._totals.summary()
        out.update(
            name=self.name,
            host=self.host,
            users=self.users,
            workers=self.workers,
            exit_code=self._exit_code,
            late_windows=self._merger.late,
            sources=len(self._sources_started),
        )
        return out

    def __repr__(self) -> str:
        return f"LoadGenerator({self.name!r}, {self.locustfile.name}, host={self.host!r})"
