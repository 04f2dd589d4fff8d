"""A TLS handshake storm: the Go ``tlsstorm`` binary run as a tagged process of the run.

Targets are etcd members picked by a selector (their ``client`` or ``peer``
port) or literal ``host:port`` strings, loopback only. Per-second progress
goes onto the timeline as the series ``storm.handshakes_per_s``; the final
summary (achieved rate, errors, latency) becomes the fault's detail. The
ledger inverse is ``kill_tagged`` of the storm's workload tag; the binary
also stops by itself after ``duration``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from harness import cleanup, safety
from harness.errors import ConfigError, FaultError, MissingDependency
from harness.faults.base import Fault, Scope, check_positive
from harness.faults.selectors import ROLE_SELECTORS, resolve
from harness.gobuild import build

if TYPE_CHECKING:
    from harness.pki import CertPaths

__all__ = ["SERIES", "TlsStorm"]

log = logging.getLogger(__name__)

SERIES = "storm.handshakes_per_s"
MAX_STORM_SECONDS = 600.0  # the binary's own ceiling
_PORTS = ("client", "peer")


class TlsStorm(Fault):
    """Floods ``target`` with full TLS handshakes at up to ``rate`` per second.

    >>> with TlsStorm(scope, "leader", port="peer", rate=2000, duration=20):  # doctest: +SKIP
    ...     ...
    >>> storm.detail["handshakes_per_s"]     # achieved, from the summary
    """

    kind = "tls_storm"

    def __init__(
        self,
        scope: Scope,
        target: str | Sequence[str],
        *,
        port: str = "client",
        rate: float,
        concurrency: int = 16,
        duration: float,
        tls: str = "1.3",
        client_cert: CertPaths | None = None,
        max_duration: float | None = None,
        name: str | None = None,
    ) -> None:
        duration = check_positive(
            f"{name or self.kind}.duration", duration, upper=MAX_STORM_SECONDS
        )
        super().__init__(scope, max_duration=max_duration or duration + 10, name=name)
        self.target = [target] if isinstance(target, str) else list(target)
        if not self.target:
            raise ConfigError(
                f"{self.name}.target", "no target", expected="a selector or host:port"
            )
        if port not in _PORTS:
            raise ConfigError(f"{self.name}.port", f"{port!r}", expected="client or peer")
        if tls not in ("1.2", "1.3"):
            raise ConfigError(f"{self.name}.tls", f"{tls!r}", expected="1.2 or 1.3")
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or not (1 <= concurrency <= 4096)
        ):
            raise ConfigError(f"{self.name}.concurrency", f"{concurrency!r}", expected="1..4096")
        self.port = port
        self.rate = check_positive(f"{self.name}.rate", rate, upper=1_000_000)
        self.concurrency = concurrency
        self.duration = duration
        self.tls = tls
        self.client_cert = client_cert
        self.workload = f"{self.name}-{os.urandom(3).hex()}"
        self.addresses: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.progress: list[dict[str, Any]] = []  # the per-second lines so far
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._binary = "tlsstorm"  # resolved by available()

    def available(self, backend: object) -> str | None:
        try:
            self._binary = str(build("tlsstorm"))
        except MissingDependency as err:
            return f"{err}"
        return None

    def knobs(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "rate": self.rate,
            "concurrency": self.concurrency,
            "duration": self.duration,
            "tls": self.tls,
            "addresses": self.addresses,
        }

    def _prepare(self) -> None:
        field = f"{self.name}.target"
        self.addresses = []
        cluster = self.scope.cluster
        for t in self.target:
            if ":" in t and not t.startswith("pid:"):
                host, port = safety.check_hostport(t, field=field)
                self.addresses.append(f"{host}:{port}")
                self.targets.append(t)
                continue
            if cluster is None or (
                t not in ROLE_SELECTORS
                and t not in [getattr(m, "name", m) for m in cluster.members()]
            ):
                raise ConfigError(
                    field,
                    f"unknown selector {t!r}",
                    expected="host:port, or a selector of the scope's etcd cluster",
                )
            for name in resolve(
                t, field=field, cluster=cluster, run_id=self.scope.run.run_id, rng=self.scope.rng
            ):
                member = cluster.member(name)  # type: ignore[attr-defined]
                if self.port == "client":
                    netloc = urlsplit(member.client_url).netloc
                else:
                    # The storm runs on the host: the peer port as published on 127.0.0.1
                    # (peer_url is how members dial each other: a container name on docker).
                    phost, pport = cluster.placement(name).external("peer")  # type: ignore[attr-defined]
                    netloc = f"{phost}:{pport}"
                host, port = safety.check_hostport(netloc, field=field)
                self.addresses.append(f"{host}:{port}")
                self.targets.append(name)

    def _command(self) -> list[str]:
        cmd = [
            self._binary,
            "--rate",
            f"{self.rate:g}",
            "--concurrency",
            str(self.concurrency),
            "--duration",
            f"{self.duration:g}s",
            "--tls",
            self.tls,
            "--progress",
        ]
        for a in self.addresses:
            cmd += ["--target", a]
        if self.client_cert is not None:
            cmd += ["--cert", str(self.client_cert.cert), "--key", str(self.client_cert.key)]
        return cmd

    def _apply(self) -> None:
        run = self.scope.run
        cmd = self._command()
        inverse = {"op": "kill_tagged", "run_id": run.run_id, "workload": self.workload}
        self._step(f"start storm {self.workload}", inverse, lambda: self._start(cmd))

    def _start(self, cmd: list[str]) -> None:
        run = self.scope.run
        logf = open(run.dir / f"{self.workload}.log", "ab")  # noqa: SIM115 - child keeps it
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=logf,
                env={**os.environ, **run.child_env(self.workload)},
                # Own session: a Ctrl-C to the harness reaches us, and we stop it in revert.
                start_new_session=True,
            )
        finally:
            logf.close()
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name=self.workload, daemon=True
        )
        self._reader.start()

    def _read(self, out: IO[bytes]) -> None:
        timeline = self.scope.run.timeline
        for raw in out:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("event") == "progress":
                self.progress.append(line)
                timeline.sample(SERIES, float(line.get("rate_last_s", 0.0)))
            else:
                self.summary = line

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the storm to end by itself (its ``duration``); return the summary."""
        if self._proc is None:
            raise FaultError(f"{self.name}: not started")
        self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        if self.summary is None:
            raise FaultError(
                f"{self.name}: tlsstorm exited {self._proc.returncode} without "
                f"a summary (see {self.workload}.log in the run directory)"
            )
        return self.summary

    def _before_undo(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # SIGINT makes it stop early and still print its summary.
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            return  # the kill_tagged inverse ends it
        if self._reader is not None:
            self._reader.join(5)
        # No summary when it was stopped before its signal handler was in place.
        self.detail["exit_code"] = self._proc.returncode
        if self.summary is not None:
            for key in ("handshakes_per_s", "handshakes", "errors_total", "elapsed_s"):
                if key in self.summary:
                    self.detail[key] = self.summary[key]

    def _after_undo(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)  # reap it: no zombie left in our table

    def _leftovers(self) -> list[str]:
        pids = cleanup.tagged_pids(self.scope.run.run_id, self.workload)
        return [f"tlsstorm processes {pids}"] if pids else []
