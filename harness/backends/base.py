"""The ``Backend`` protocol: one interface over processes, containers and pods.

A component (an etcd cluster, orderd, Prometheus...) never starts anything
itself. It asks the backend to :meth:`Backend.plan` a workload (reserve its
ports and say where its files will be), builds a :class:`WorkloadSpec` from
that :class:`Placement`, and :meth:`Backend.start`\\ s it. Faults act through
the same protocol (limits, signals, pause, isolation), so one scenario runs on
every backend.

How each operation maps per backend:

==================  ==========================  ===========================  ===============================
operation           local                       docker (testcontainers)      kubernetes
==================  ==========================  ===========================  ===============================
plan                free 127.0.0.1 port, lock   port published on 127.0.0.1  hostNetwork Pod: a 127.0.0.1
                    file against parallel runs  (container port = same no.)  port planned as on local
start               process in own pgroup +     container on the run's       Pod (+ Service) in the run's
                    cgroup, tagged env          network, labels              namespace, labels
restart policy      supervisor thread with      harness thread: waits for    ``restartPolicy`` + kubelet's
                    exponential backoff         the exit, backs off,         CrashLoopBackOff (harness
                                                ``start`` (Docker's: ``no``) deletes at max_restarts)
probes              polled by the supervisor    ``healthcheck``              liveness/readinessProbe
stop / kill(sig)    signal the process group    ``stop`` / ``kill(signal)``  delete Pod / signal host pid
pause / resume      freezer cgroup (v1 or v2)   ``pause`` / ``unpause``      container's freezer cgroup
set_limits          cgroup cpu quota, memory    ``docker update``            in-place resize (``resize``)
status.oom_killed   cgroup oom_kill counter     ``State.OOMKilled``          ``lastState.terminated.reason``
isolate / heal      iptables chain FL-<run>     ``network disconnect``       iptables chain (no CNI policy)
logs                file in the run directory   container logs -> file       CRI log files -> file
==================  ==========================  ===========================  ===============================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "AddressMapper",
    "Backend",
    "Placement",
    "Probe",
    "ProbeKind",
    "ResourceStats",
    "RestartMode",
    "RestartPolicy",
    "WorkloadSpec",
    "WorkloadStatus",
]


class RestartMode(enum.Enum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


@dataclass(frozen=True)
class RestartPolicy:
    """When a workload that exited is started again, with exponential backoff.

    The local analogue of Kubernetes' CrashLoopBackOff: the n-th restart waits
    ``min(backoff_initial * 2**n, backoff_max)`` seconds.
    """

    mode: RestartMode = RestartMode.NEVER
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    max_restarts: int | None = None

    def waits(self, count: int) -> list[float]:
        """The waits before the first ``count`` restarts of a crash loop."""
        return [min(self.backoff_initial * 2**n, self.backoff_max) for n in range(count)]


class ProbeKind(enum.Enum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"


@dataclass(frozen=True)
class Probe:
    """A health probe against one of the workload's named ports."""

    kind: ProbeKind
    port: str
    path: str = "/"
    interval: float = 1.0
    timeout: float = 1.0
    failure_threshold: int = 3
    # For HTTPS probes with client-cert auth: file names from the spec's ``files``.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where a planned workload listens and finds its files, per backend.

    ``bind_host`` is what the workload listens on; ``internal`` is how other
    workloads of the run reach a port; ``external`` is how the harness
    (Prometheus, load, probes) reaches it, always on 127.0.0.1.
    """

    name: str
    bind_host: str
    ports: Mapping[str, int]
    internal_host: str
    external_ports: Mapping[str, int]
    files: Mapping[str, str]  # file name -> path as the workload sees it

    def port(self, name: str) -> int:
        return self.ports[name]

    def internal(self, port: str) -> str:
        return f"{self.internal_host}:{self.ports[port]}"

    def external(self, port: str) -> tuple[str, int]:
        return "127.0.0.1", self.external_ports[port]

    def external_url(self, port: str, scheme: str = "http", path: str = "") -> str:
        host, p = self.external(port)
        return f"{scheme}://{host}:{p}{path}"

    def path(self, file: str) -> str:
        return self.files[file]


@dataclass(frozen=True)
class WorkloadSpec:
    """What to run; each backend maps it to its native primitives.

    ``command[0]`` is a binary on PATH or an absolute path (local), and the
    entrypoint (docker, kubernetes) of ``image``; when ``image`` is None the
    docker and kubernetes backends build one from the host binary.
    """

    name: str
    command: tuple[str, ...]
    placement: Placement
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)  # name -> host path
    cpu_limit: float | None = None  # cores
    memory_limit: int | None = None  # bytes
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    liveness: Probe | None = None
    readiness: Probe | None = None
    stop_signal: int = 15


@dataclass(frozen=True)
class WorkloadStatus:
    running: bool
    paused: bool
    exit_code: int | None  # of the last exit, None while it has never exited
    oom_killed: bool  # the last exit was an OOM kill
    oom_kills: int  # total OOM kills since start
    restarts: int
    healthy: bool | None  # liveness verdict; None without a probe


@dataclass(frozen=True)
class ResourceStats:
    memory_bytes: int
    memory_limit: int | None
    cpu_seconds: float
    throttled_periods: int
    throttled_seconds: float
    oom_kills: int


@runtime_checkable
class Backend(Protocol):
    """Starts and manipulates workloads; everything it makes is in the run's ledger."""

    name: str

    def plan(self, name: str, ports: Sequence[str], files: Sequence[str] = ()) -> Placement:
        """Reserve ports and file locations for a workload about to be specified."""
        ...

    def start(self, spec: WorkloadSpec) -> None:
        """Start the workload; return once it is running (not necessarily ready)."""
        ...

    def wait_ready(self, name: str, timeout: float) -> None:
        """Block until the readiness probe passes; ComponentStartError with logs if not."""
        ...

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stop gracefully (stop_signal, then SIGKILL after ``timeout``); idempotent.
        A stopped workload is not restarted by its policy."""
        ...

    def kill(self, name: str, signum: int = 9) -> None:
        """Send a signal; the restart policy then applies as to any exit."""
        ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def restart(self, name: str) -> None:
        """Stop and start again with the same spec (a counted restart)."""
        ...

    def status(self, name: str) -> WorkloadStatus: ...

    def pid(self, name: str) -> int | None:
        """Host PID of the workload's main process while it runs: which process it is
        (a restart makes another), None when none runs."""
        ...

    def restart_waits(self, policy: RestartPolicy, count: int) -> list[float]:
        """The waits before the first ``count`` restarts of a crash loop under
        ``policy``, as this backend applies it (the harness's, or kubelet's own)."""
        ...

    def stats(self, name: str) -> ResourceStats: ...

    def set_limits(
        self,
        name: str,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        cpu_period_us: int | None = None,
    ) -> None:
        """Change CPU (cores) and memory (bytes) limits at run time; None = unlimited."""
        ...

    def isolate(self, name: str, peers: Sequence[str]) -> None:
        """Cut the workload off from ``peers`` (both directions) until :meth:`heal`."""
        ...

    def heal(self, name: str) -> None: ...

    def log_path(self, name: str) -> Path:
        """The file the workload's stdout and stderr go to (on the host)."""
        ...

    def close(self) -> None:
        """Stop every workload and remove everything this backend made; idempotent."""
        ...


@runtime_checkable
class AddressMapper(Protocol):
    """A backend whose workloads cannot dial the harness's 127.0.0.1 addresses (docker).

    Inside a container, 127.0.0.1 is the container itself: a workload that
    dials another (Prometheus scraping, Toxiproxy's upstream, orderd through a
    proxy) needs the address on the run's network instead.
    """

    def internal_address(self, address: str) -> str:
        """``127.0.0.1:<published port>`` of a workload of this run, as workloads dial it."""
        ...


def dial_address(backend: object, address: str) -> str:
    """``address`` as another workload of ``backend`` dials it (unchanged on local)."""
    return backend.internal_address(address) if isinstance(backend, AddressMapper) else address
