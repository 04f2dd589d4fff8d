"""The Docker backend: workloads as containers, started with testcontainers.

Each run gets two bridge networks, both labelled ``faultline=1`` and
``faultline.run=<run_id>`` and covered by one ledger entry (inverse
``remove_docker_run``) written before either exists:

* ``faultline-<run_id>``: the peer network. Workloads reach each other by
  their alias (the workload name). :meth:`DockerBackend.isolate` disconnects a
  container from it, which cuts it off from *all* peers at once (Docker has no
  per-peer disconnect; ``peers`` is accepted for the protocol and not used).
* ``faultline-<run_id>-ports``: only carries the ports published on
  127.0.0.1, with inter-container traffic disabled (``enable_icc=false``), so
  an isolated container stays reachable from the harness and from nothing else.

Ryuk, testcontainers' reaper, cannot be pulled here, so it is disabled and
reaping rests on the labels and the ledger (see :data:`REAPING`).

Mapping details worth knowing:

* ports: the container port is a free 127.0.0.1 port number picked on the
  host, published on 127.0.0.1 under the same number, so ``--listen`` flags
  are identical inside and out; the harness always dials 127.0.0.1 (never
  ``get_container_host_ip()``, which may answer the bridge gateway).
* restart policy: applied by the harness, as on the local backend (a
  supervisor thread per workload waits for the container to exit and starts it
  again after ``min(backoff_initial * 2**n, backoff_max)``, from the start
  again once a run lasted longer than ``backoff_max``); the container's own
  Docker policy is ``no``. Docker's policy would apply its fixed backoff
  (100 ms doubling), and scenarios check the CrashLoopBackOff they asked for.
  Like the local supervisor, it ends with the harness: a reaped run restarts
  nothing.
* :meth:`DockerBackend.kill` signals the container's main process from the
  host, like a crash, so the restart policy applies.
* CPU limits use ``cpu_period``/``cpu_quota`` (not ``nano_cpus``: Docker
  refuses to update a quota on a container created with NanoCpus), memory
  uses ``mem_limit`` with ``memswap_limit`` equal, so exceeding it OOM-kills
  instead of swapping. Docker cannot remove a memory limit, so "unlimited"
  is the host's RAM.
* files: ``spec.files`` are bind-mounted read-only under ``/faultline/files``;
  the run directory is bind-mounted read-write *at its host path*, so a path
  under ``run.dir`` (an etcd data dir, a file a workload writes for the test
  to read) means the same file on the host and in every container, as on the
  local backend.
* exits and OOM kills: the engine's ``start``/``die``/``oom`` events are
  recorded as they happen by one stream per backend (the engine keeps only
  the last 256 events of the whole host, and State forgets the last exit on a
  restart). When the OOM-killed process is the container's PID 1, the ``oom``
  event can come *after* the ``die`` (140 ms later, 1 run of 20 here), and
  State.OOMKilled is then False too; so an oom event counts for the run it
  falls in (up to the next start), and an unexplained exit 137 is checked
  against the kernel log (``/dev/kmsg``: ``oom-kill:... task_memcg=...<id>``
  within that run's lifetime). Without a readable ``/dev/kmsg`` (not root, a
  remote engine) only the late event is left to close the gap.
* TCP probes: Docker's userland proxy accepts on a published port even when
  nothing listens inside, then closes; a connection closed at once without a
  byte counts as a failed probe.
* pause of a workload that is not running is a :class:`ConfigError`; kill of
  a paused one signals it and then unpauses it; kill of an exited one does
  nothing (all as on the local backend).
* health: a Docker healthcheck built from the liveness probe when the image
  has ``/bin/sh``; otherwise (scratch images) the harness probes the published
  port itself, as the local backend does. Docker never restarts an unhealthy
  container, so a watcher thread signals the main process (SIGKILL) after
  ``failure_threshold`` failed liveness checks and the restart policy applies,
  as on the local backend and Kubernetes.

Differences from the local backend that the compliance suite states:
:meth:`DockerBackend.isolate` cuts the workload off from every peer, not
only ``peers``.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from harness.backends.base import (
    Placement,
    Probe,
    ProbeKind,
    ResourceStats,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
    WorkloadStatus,
)
from harness.backends.cgroups import parse_flat_keyed
from harness.backends.images import SHELL_LABEL, image_for_binary, registry_reachable
from harness.backends.ports import PortAllocator, RecordedLease, allocate_recorded
from harness.components.base import log_tail
from harness.errors import BackendUnavailable, ComponentStartError, ConfigError, FaultError
from harness.run import Run, state_root
from harness.wait import WaitTimeout, wait_until

__all__ = ["FILES_DIR", "REAPING", "DockerBackend", "Event", "kernel_oom_kills", "last_exit"]

log = logging.getLogger(__name__)

FILES_DIR = "/faultline/files"
REAPING = (
    "Ryuk disabled (its image cannot be pulled here; TESTCONTAINERS_RYUK_DISABLED=true): "
    "containers and networks carry the labels faultline=1 and faultline.run=<run_id>, and the "
    "run's ledger records remove_docker_run before anything is created, so run.close(), "
    "the run's watchdog and `faultline clean` remove them, also after a SIGKILL."
)
ENGINE_FIX = (
    "apt-get install -y docker.io, then start the engine: `dockerd >/tmp/dockerd.log 2>&1 &` "
    "and wait for /var/run/docker.sock (or set DOCKER_HOST)"
)
_CPU_PERIOD_US = 100_000
_NEVER_FINISHED = "0001-01-01T00:00:00Z"


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _rfc3339_ns(ts: str) -> int:
    """Nanoseconds since the epoch of a Docker RFC3339Nano timestamp (UTC, ``Z``)."""
    base, _, frac = ts.rstrip("Z").partition(".")
    dt = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or "0")


def kernel_oom_kills(container_id: str) -> list[int]:
    """Wall-clock times (ns) of the kernel's OOM kills in the container's memory cgroup.

    Read from ``/dev/kmsg`` (the kernel log ring, root only); empty when it
    cannot be read. The kernel writes the line before it kills, so it is there
    by the time the engine reports the exit.
    """
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    # Kernel log stamps are CLOCK_MONOTONIC microseconds.
    offset_ns = time.time_ns() - time.monotonic_ns()
    needle = container_id.encode()
    found = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: records were overwritten while reading; go on
                continue
            header, _, message = record.partition(b";")
            if not message.startswith(b"oom-kill:"):
                continue
            fields = message.rstrip().split(b",")
            if any(f.startswith(b"task_memcg=") and needle in f for f in fields):
                found.append(int(header.split(b",")[2]) * 1000 + offset_ns)
    finally:
        os.close(fd)
    return found


_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_usage(pid: int, container_id: str) -> tuple[int, float, int, float] | None:
    """(memory bytes, cpu seconds, throttled periods, throttled seconds) from the cgroup files.

    The engine's stats API takes about 1 s a call (it waits for a second CPU
    sample even with ``one_shot``); samplers polling every 250 ms need the
    files. None when the container's main process is not on this host (a
    remote engine) or is gone, so the caller asks the engine instead.
    Memory leaves out inactive page cache, as ``docker stats`` does.
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    if container_id not in text:
        return None
    dirs: dict[str, Path] = {}
    for line in text.splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers:
            for c in controllers.split(","):
                dirs[c] = _CGROUP_ROOT / controllers / rel.lstrip("/")
        elif (_CGROUP_ROOT / "cgroup.controllers").exists():  # pure v2 host
            dirs["v2"] = _CGROUP_ROOT / rel.lstrip("/")
    try:
        if "v2" in dirs:
            d = dirs["v2"]
            inactive = parse_flat_keyed((d / "memory.stat").read_text()).get("inactive_file", 0)
            memory = int((d / "memory.current").read_text()) - inactive
            cpu = parse_flat_keyed((d / "cpu.stat").read_text())
            return (
                max(0, memory),
                cpu.get("usage_usec", 0) / 1e6,
                cpu.get("nr_throttled", 0),
                cpu.get("throttled_usec", 0) / 1e6,
            )
        mem = parse_flat_keyed((dirs["memory"] / "memory.stat").read_text())
        memory = int((dirs["memory"] / "memory.usage_in_bytes").read_text())
        cpu = parse_flat_keyed((dirs["cpu"] / "cpu.stat").read_text())
        return (
            max(0, memory - mem.get("total_inactive_file", 0)),
            int((dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9,
            cpu.get("nr_throttled", 0),
            cpu.get("throttled_time", 0) / 1e9,
        )
    except (OSError, KeyError, ValueError):
        return None


def _tcp_alive(host: str, port: int, timeout: float) -> bool:
    """Whether a published port leads to a listener in the container.

    Docker's userland proxy accepts on the published port even when nothing
    listens inside, then closes the connection once its own dial fails; so a
    connection closed at once without a byte counts as nothing listening.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(min(timeout, 0.2))
            try:
                return sock.recv(1) != b""
            except TimeoutError:
                return True  # held open: a listener that waits for the client to speak
    except OSError:
        return False


# (action, engine time in ns, exit code of a "die") of one container.
Event = tuple[str, int, int | None]


def _runs_with(times: Sequence[int], starts: Sequence[int]) -> int:
    """How many of the container's runs (each from a start to the next) hold one of
    ``times``: one process dies once, however many OOM events the engine or the
    kernel reported for it (the engine's cgroup notification can fire twice)."""
    bounds = sorted(starts)
    return len({bisect.bisect_right(bounds, t) for t in times})


def last_exit(
    events: Sequence[Event], state: Mapping[str, Any], kernel_kills: Callable[[], list[int]]
) -> tuple[int, int | None, bool]:
    """(OOM kills, last exit code, whether that exit was an OOM kill) of one container.

    OOM kills are counted per run (start to next start), not per event.

    ``events`` are its start/die/oom events, oldest first; ``state`` its
    inspected State; ``kernel_kills`` the kernel's OOM kill times in it (ns),
    asked only for an exit 137 that State and the events do not explain.
    """
    ooms = [t for action, t, _ in events if action == "oom"]
    starts = [t for action, t, _ in events if action == "start"]
    dies = [(t, code) for action, t, code in events if action == "die"]
    code: int | None = None
    oom = False
    began = ended = 0
    if not state["Running"] and state["FinishedAt"] != _NEVER_FINISHED:
        code, oom = int(state["ExitCode"]), bool(state["OOMKilled"])
        began, ended = _rfc3339_ns(state["StartedAt"]), _rfc3339_ns(state["FinishedAt"])
    elif dies:  # running again after an exit: State has forgotten it
        ended, code = dies[-1]
        began = max((t for t in starts if t <= ended), default=0)
    kills = _runs_with(ooms, starts)
    if code is not None and not oom:
        # The run's own oom event may come after its die, never after the next start.
        until = min((t for t in starts if t > ended), default=2**63)
        oom = any(began <= t < until for t in ooms)
    if code == 128 + signal.SIGKILL and not oom:
        kernel = kernel_kills()
        kills = max(kills, _runs_with(kernel, starts))
        slack = 100_000_000  # 100 ms: the kernel's and the engine's clocks differ a little
        oom = any(began - slack <= t <= ended + slack for t in kernel)
    return max(kills, int(oom)), code, oom


class _EventLog(threading.Thread):
    """Records the ``start``/``die``/``oom`` events of the run's containers as they come."""

    def __init__(self, client: Any, run_id: str) -> None:
        super().__init__(name=f"docker-events-{run_id[:8]}", daemon=True)
        self.stream = client.events(
            since=int(time.time()) - 1,
            filters={
                "type": "container",
                "label": f"faultline.run={run_id}",
                "event": ["start", "die", "oom"],
            },
            decode=True,
        )
        self._events: dict[str, list[Event]] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        from docker.errors import DockerException

        with contextlib.suppress(DockerException, OSError, ValueError, AttributeError):
            for ev in self.stream:
                actor = ev.get("Actor", {})
                code = actor.get("Attributes", {}).get("exitCode")
                with self._lock:
                    self._events.setdefault(actor.get("ID", ""), []).append(
                        (
                            ev.get("Action", ""),
                            int(ev["timeNano"]),
                            None if code is None else int(code),
                        )
                    )

    def of(self, container_id: str) -> list[Event]:
        """(action, time in ns, exit code of a die) of one container, oldest first."""
        with self._lock:
            return list(self._events.get(container_id, ()))

    def close(self) -> None:
        # Closing the response ends the iteration in run() (it suppresses the error).
        with contextlib.suppress(Exception):
            self.stream.close()
        self.join(timeout=5)


def _ts_key(ts: bytes) -> tuple[bytes, int]:
    """Order Docker's RFC3339Nano timestamps (trailing zeros are trimmed, so no string order)."""
    base, _, frac = ts.rstrip(b"Z").partition(b".")
    return base, int(frac.ljust(9, b"0")[:9] or b"0")


class _LogFollower(threading.Thread):
    """Copies a container's output to a host file, across restarts, until stopped.

    A ``follow`` stream ends whenever the container stops; it is reopened (from
    the second of the last line seen, lines already written skipped by
    timestamp) when the container runs again, which a changed ``StartedAt``
    shows even when a fast restart has already ended by the next poll.
    """

    def __init__(self, container: Any, path: Path) -> None:
        super().__init__(name=f"logs-{path.stem}", daemon=True)
        self.container = container
        self.path = path
        self.done = threading.Event()

    def run(self) -> None:
        from docker.errors import DockerException, NotFound

        last: tuple[bytes, int] = (b"", -1)
        with open(self.path, "ab", buffering=0) as out:
            while not self.done.is_set():
                since, started = None, ""
                if last[0]:
                    dt = datetime.datetime.fromisoformat(last[0].decode())
                    since = int(dt.replace(tzinfo=datetime.UTC).timestamp())
                try:
                    self.container.reload()
                    started = self.container.attrs["State"]["StartedAt"]
                    stream = self.container.logs(
                        stream=True, follow=True, timestamps=True, since=since
                    )
                    pending = b""
                    for chunk in stream:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            ts, _, text = line.partition(b" ")
                            key = _ts_key(ts)
                            if key <= last:
                                continue
                            last = key
                            out.write(text + b"\n")
                except NotFound:
                    return
                except DockerException as err:
                    log.debug("log stream of %s: %s", self.path.stem, err)
                # Stopped or exited: wait for a restart (by policy or by hand) or for close().
                while not self.done.wait(0.25):
                    try:
                        self.container.reload()
                    except NotFound:
                        return
                    except DockerException:
                        continue
                    state = self.container.attrs["State"]
                    if state["StartedAt"] != started or state["Running"]:
                        break


@dataclass
class _Workload:
    spec: WorkloadSpec
    container: Any  # testcontainers DockerContainer
    healthcheck: bool
    memory: int | None
    cpu: float | None
    started: float
    follower: _LogFollower
    manual_restarts: int = 0
    policy_restarts: int = 0  # by the supervisor, against max_restarts
    crashes: int = 0  # consecutive quick exits: the backoff's exponent
    want_running: bool = True  # False once stopped by hand: no restart by policy
    lock: threading.Lock = field(default_factory=threading.Lock)
    halt: threading.Event = field(default_factory=threading.Event)  # wakes a backoff wait
    supervisor: threading.Thread | None = None
    pause_seq: int | None = None
    isolate_seq: int | None = None
    healthy: bool | None = None  # the liveness watcher's verdict, without a healthcheck
    watcher: threading.Thread | None = None

    @property
    def raw(self) -> Any:
        """The docker SDK Container."""
        return self.container.get_wrapped_container()


class DockerBackend:
    """Workloads as containers on per-run networks; everything reaped by label.

    >>> with Run.open() as run:                                   # doctest: +SKIP
    ...     backend = DockerBackend(run)
    ...     p = backend.plan("etcd", ["client"])
    ...     backend.start(WorkloadSpec("etcd", ("etcd", f"--listen-client-urls="
    ...                   f"http://{p.bind_host}:{p.port('client')}"), p))
    ...     backend.close()
    """

    name = "docker"
    reaping = REAPING

    def __init__(self, run: Run) -> None:
        try:
            import docker
            from docker.errors import DockerException
            from testcontainers.core.config import testcontainers_config
        except ImportError as err:
            raise BackendUnavailable(
                "docker SDK / testcontainers", "pip install faultline"
            ) from err
        try:
            self.client = docker.from_env(timeout=60)
            self.client.ping()
        except DockerException as err:
            raise BackendUnavailable("Docker engine", ENGINE_FIX) from err
        # Ryuk's image cannot be pulled; the ledger and labels do its job (REAPING).
        testcontainers_config.ryuk_disabled = True
        self.run = run
        self.labels = {"faultline": "1", "faultline.run": run.run_id}
        self.network_name = f"faultline-{run.run_id}"
        self.ports_network_name = f"faultline-{run.run_id}-ports"
        self._networks: list[Any] = []
        self._net_seq: int | None = None
        self._workloads: dict[str, _Workload] = {}
        self._placements: dict[str, Placement] = {}
        # Same allocator as the local backend: parallel runs never share a port number.
        self._ports = PortAllocator(state_root() / "ports", run.run_id)
        self._leases: list[RecordedLease] = []
        self._shell: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._events: _EventLog | None = None

    # --- planning and starting -------------------------------------------------------

    def plan(self, name: str, ports: Sequence[str], files: Sequence[str] = ()) -> Placement:
        numbers = {}
        for port_name in ports:
            lease = allocate_recorded(
                self._ports, self.run.ledger, run_id=self.run.run_id, what=name
            )
            self._leases.append(lease)
            numbers[port_name] = lease.port
        placement = Placement(
            name=name,
            bind_host="0.0.0.0",  # inside the container; published on 127.0.0.1 only
            ports=numbers,
            internal_host=name,
            external_ports=dict(numbers),
            files={f: f"{FILES_DIR}/{f}" for f in files},
        )
        self._placements[name] = placement
        return placement

    def _ensure_networks(self) -> None:
        from testcontainers.core.network import Network

        with self._lock:
            if self._net_seq is not None:
                return
            # Before the first container, so that none of its events is missed.
            self._events = _EventLog(self.client, self.run.run_id)
            self._events.start()
            self._net_seq = self.run.ledger.record(
                f"docker networks {self.network_name} (+ every container of the run)",
                {"op": "remove_docker_run", "run_id": self.run.run_id},
            )
            for net_name, options in (
                (self.network_name, {}),
                # Publishing only: containers on it cannot reach one another.
                (self.ports_network_name, {"com.docker.network.bridge.enable_icc": "false"}),
            ):
                net = Network(docker_network_kw={"labels": self.labels, "options": options})
                net.name = net_name
                self._networks.append(net.create())
            self.run.ledger.applied(self._net_seq, networks=[n.name for n in self._networks])

    def _image(self, spec: WorkloadSpec) -> str:
        from docker.errors import APIError, ImageNotFound

        if spec.image is None:
            return image_for_binary(self.client, spec.command[0])
        with contextlib.suppress(ImageNotFound):
            self.client.images.get(spec.image)
            return spec.image
        if registry_reachable(spec.image):
            try:
                self.client.images.pull(spec.image)
                return spec.image
            except APIError as err:
                log.info("pull of %s failed: %s", spec.image, err)
        raise BackendUnavailable(
            f"image {spec.image}",
            "no registry is reachable: leave WorkloadSpec.image unset to build one from the host "
            "binary, or `docker load` the image",
        )

    def _has_shell(self, image: str) -> bool:
        from docker.errors import NotFound

        if image not in self._shell:
            labels = self.client.images.get(image).labels or {}
            if SHELL_LABEL in labels:
                self._shell[image] = labels[SHELL_LABEL] == "true"
            else:
                # Foreign image: look for /bin/sh in a created, never started container.
                probe = self.client.containers.create(image, labels=self.labels)
                try:
                    probe.get_archive("/bin/sh")
                    self._shell[image] = True
                except NotFound:
                    self._shell[image] = False
                finally:
                    probe.remove(force=True)
        return self._shell[image]

    def _healthcheck(self, spec: WorkloadSpec, probe: Probe) -> dict[str, Any]:
        port = spec.placement.port(probe.port)
        t = max(1, int(probe.timeout))
        if probe.kind is ProbeKind.TCP:
            test = f"nc -w {t} 127.0.0.1 {port} </dev/null"
        else:
            scheme = probe.kind.value
            url = f"{scheme}://127.0.0.1:{port}{probe.path}"
            # Health, not authentication: skip the server name check (-k), keep client certs.
            curl = ["curl", "-fsS", "-k", "-o", "/dev/null", "-m", str(t)]
            if probe.cert_file and probe.key_file:
                curl += ["--cert", spec.placement.path(probe.cert_file)]
                curl += ["--key", spec.placement.path(probe.key_file)]
            wget = f"wget -q -O /dev/null -T {t} --no-check-certificate {url}"
            test = f"{' '.join(curl)} {url} || {wget}"
        return {
            "test": ["CMD-SHELL", test],
            "interval": int(probe.interval * 1e9),
            "timeout": int(probe.timeout * 1e9),
            "retries": probe.failure_threshold,
        }

    def start(self, spec: WorkloadSpec) -> None:
        from docker.types import Mount
        from testcontainers.core.container import DockerContainer

        if not spec.command:
            raise ConfigError(f"workload {spec.name}.command", "is empty", expected="a binary")
        old = self._workloads.pop(spec.name, None)
        if old is not None:
            old.want_running = False
            old.halt.set()
            old.follower.done.set()
            with contextlib.suppress(Exception):
                old.raw.remove(force=True)
        self._ensure_networks()
        image = self._image(spec)
        healthcheck = spec.liveness is not None and self._has_shell(image)
        memory = spec.memory_limit
        kwargs: dict[str, Any] = {
            "entrypoint": [spec.command[0]],
            "labels": {**self.labels, "faultline.workload": spec.name},
            # The harness applies the spec's policy (see _supervise), with its backoff.
            "restart_policy": {"Name": "no"},
            "stop_signal": signal.Signals(spec.stop_signal).name,
            "mem_limit": memory or _host_memory(),
            "memswap_limit": memory or _host_memory(),
            "cpu_period": _CPU_PERIOD_US,
            # Mounts, not testcontainers' volumes: those are keyed by host path, so two
            # names for one host file (a CA that is both kinds of CA) kept only one.
            "mounts": [
                Mount(
                    f"{FILES_DIR}/{fname}", str(Path(host).resolve()), type="bind", read_only=True
                )
                for fname, host in spec.files.items()
            ],
        }
        if spec.cpu_limit is not None:
            kwargs["cpu_quota"] = int(spec.cpu_limit * _CPU_PERIOD_US)
        if healthcheck:
            assert spec.liveness is not None
            kwargs["healthcheck"] = self._healthcheck(spec, spec.liveness)
        run_net, ports_net = self._networks
        tc = (
            DockerContainer(image)
            .with_name(f"faultline-{self.run.run_id}-{spec.name}")
            .with_command(list(spec.command[1:]))
            .with_envs(**{**spec.env, **self.run.child_env(spec.name)})
            .with_network(run_net)
            .with_network_aliases(spec.name)
            .with_kwargs(**kwargs)
        )
        for port in spec.placement.external_ports.values():
            # testcontainers types host ports as int; the SDK also takes (host_ip, port),
            # which is how the port stays on 127.0.0.1.
            cast(dict[str, Any], tc.ports)[f"{port}/tcp"] = ("127.0.0.1", port)
        # Same path inside: data dirs and files under the run dir need no translation.
        run_dir = str(self.run.dir.resolve())
        tc.with_volume_mapping(run_dir, run_dir, "rw")
        tc.start()
        # Connected after start: the published ports keep working through this network
        # while the container is disconnected from the peer network by isolate().
        ports_net.connect(tc.get_container_id())
        path = self._log_file(spec.name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        follower = _LogFollower(tc.get_wrapped_container(), path)
        follower.start()
        w = self._workloads[spec.name] = _Workload(
            spec=spec,
            container=tc,
            healthcheck=healthcheck,
            memory=memory,
            cpu=spec.cpu_limit,
            started=time.time(),
            follower=follower,
        )
        if spec.liveness is not None:
            w.watcher = threading.Thread(
                target=self._watch_liveness, args=(w, spec.liveness), daemon=True
            )
            w.watcher.start()
        self._supervise_if_restartable(w)
        log.info("started %s (%s) as %s", spec.name, image, tc.get_container_id()[:12])

    def _supervise_if_restartable(self, w: _Workload) -> None:
        if w.spec.restart.mode is RestartMode.NEVER:
            return
        if w.supervisor is None or not w.supervisor.is_alive():
            w.supervisor = threading.Thread(
                target=self._supervise, args=(w,), name=f"supervise-{w.spec.name}", daemon=True
            )
            w.supervisor.start()

    def _supervise(self, w: _Workload) -> None:
        """Start the container again after each exit its restart policy covers, with backoff."""
        from docker.errors import DockerException, NotFound

        policy = w.spec.restart
        while True:
            try:
                code = int(w.raw.wait()["StatusCode"])
            except NotFound:
                return
            except DockerException as err:
                log.debug("wait on %s: %s", w.spec.name, err)
                if w.halt.wait(0.5):
                    return
                continue
            with w.lock:
                if not w.want_running:
                    return
                try:
                    w.raw.reload()
                except DockerException:
                    return  # removed: nothing to restart
                if w.raw.attrs["State"]["Running"]:
                    continue  # started again meanwhile (a restart by hand)
                restart = policy.mode is RestartMode.ALWAYS or code != 0
                if restart and self._policy_exhausted(w):
                    log.info("%s: max_restarts=%s reached", w.spec.name, policy.max_restarts)
                    restart = False
                if not restart:
                    w.want_running = False
                    return
                state = w.raw.attrs["State"]
                finished = _rfc3339_ns(state["FinishedAt"])
                if finished - _rfc3339_ns(state["StartedAt"]) > policy.backoff_max * 1e9:
                    w.crashes = 0  # it ran well for a while: back off from the start again
                delay = policy.waits(w.crashes + 1)[-1]
                w.crashes += 1
            # The backoff counts from the exit, not from when the engine reported it
            # (0.2 s or more later on a busy host); the start itself then takes ~0.3 s.
            left = min(delay, max(0.0, delay - (time.time_ns() - finished) / 1e9))
            log.info("%s exited with %d; restarting in %.2fs", w.spec.name, code, left)
            if w.halt.wait(left):
                return
            with w.lock:
                if not w.want_running:
                    return
                try:
                    w.raw.reload()
                    if w.raw.attrs["State"]["Running"]:
                        continue  # restarted by hand during the backoff
                    w.raw.start()
                except DockerException as err:
                    log.warning("restart of %s failed: %s", w.spec.name, err)
                    w.want_running = False
                    return
                w.policy_restarts += 1

    def _get(self, name: str) -> _Workload:
        try:
            return self._workloads[name]
        except KeyError:
            raise ConfigError("workload", f"{name!r} was not started by this backend") from None

    # --- health and readiness ---------------------------------------------------------

    def _probe_ok(self, spec: WorkloadSpec, probe: Probe) -> bool:
        host, port = spec.placement.external(probe.port)
        if probe.kind is ProbeKind.TCP:
            return _tcp_alive(host, port, timeout=probe.timeout)
        verify: ssl.SSLContext | bool = False
        cert: tuple[str, str] | None = None
        if probe.kind is ProbeKind.HTTPS:
            ctx = ssl.create_default_context(
                cafile=str(spec.files[probe.ca_file]) if probe.ca_file else None
            )
            # Health, not authentication: the server name differs per backend.
            ctx.check_hostname = False
            if probe.cert_file and probe.key_file:
                cert = (str(spec.files[probe.cert_file]), str(spec.files[probe.key_file]))
                ctx.load_cert_chain(*cert)
            verify = ctx
        url = spec.placement.external_url(probe.port, probe.kind.value, probe.path)
        try:
            resp = httpx.get(url, timeout=probe.timeout, verify=verify)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 400

    def _watch_liveness(self, w: _Workload, probe: Probe) -> None:
        """Kill the main process after ``failure_threshold`` failed checks (Docker never does)."""
        from docker.errors import DockerException, NotFound

        failures, killed_run = 0, ""
        while not w.follower.done.wait(probe.interval):
            try:
                w.raw.reload()
            except NotFound:
                return
            except DockerException:
                continue
            state = w.raw.attrs["State"]
            if not state["Running"] or state["Paused"] or state["StartedAt"] == killed_run:
                continue  # a paused or exited workload is not probed; a killed one is dying
            if w.healthcheck:
                # Docker has counted its retries already: "unhealthy" is the verdict.
                ok = state.get("Health", {}).get("Status") != "unhealthy"
                failures = 0 if ok else probe.failure_threshold
            else:
                ok = self._probe_ok(w.spec, probe)
                failures = 0 if ok else failures + 1
            if ok or failures >= probe.failure_threshold:
                w.healthy = ok
            if failures >= probe.failure_threshold:
                log.info("%s: liveness failed %d times: killing", w.spec.name, failures)
                with contextlib.suppress(DockerException, OSError):
                    self._signal(w, signal.SIGKILL)
                failures, killed_run = 0, state["StartedAt"]

    def _dead(self, w: _Workload) -> bool:
        """Exited for good: not running and not going to be restarted by the policy."""
        w.raw.reload()
        state = w.raw.attrs["State"]
        return (
            w.raw.status == "exited"
            and not state.get("Restarting", False)
            and (
                not w.want_running
                or w.spec.restart.mode is RestartMode.NEVER
                or (
                    w.spec.restart.mode is RestartMode.ON_FAILURE
                    and (state["ExitCode"] == 0 or self._policy_exhausted(w))
                )
            )
        )

    def _policy_exhausted(self, w: _Workload) -> bool:
        limit = w.spec.restart.max_restarts
        return limit is not None and w.policy_restarts >= limit

    def wait_ready(self, name: str, timeout: float) -> None:
        w = self._get(name)
        probe = w.spec.readiness or w.spec.liveness

        def ready() -> bool:
            if self._dead(w):
                return True  # decided below; no point waiting any longer
            if probe is None:
                return bool(w.raw.status == "running")
            return w.raw.status == "running" and self._probe_ok(w.spec, probe)

        try:
            wait_until(ready, timeout=timeout, interval=0.2, what=f"{name} ready")
            if self._dead(w):
                code = w.raw.attrs["State"]["ExitCode"]
                raise ComponentStartError(f"{name} exited with code {code} before it was ready")
        except (WaitTimeout, ComponentStartError) as err:
            wrapped = (
                err
                if isinstance(err, ComponentStartError)
                else ComponentStartError(f"{name} not ready: {err}")
            )
            tail = w.raw.logs(tail=40).decode(errors="replace")
            wrapped.add_note(f"last log lines of {name}:\n{tail or log_tail(self.log_path(name))}")
            if wrapped is err:
                raise
            raise wrapped from err

    # --- lifecycle operations ---------------------------------------------------------

    def stop(self, name: str, timeout: float = 10.0) -> None:
        from docker.errors import NotFound

        w = self._get(name)
        with w.lock:
            w.want_running = False  # the supervisor does not bring it back
            w.halt.set()
        with contextlib.suppress(NotFound):
            w.raw.reload()
            if w.raw.status == "paused":
                self.resume(name)  # a frozen process cannot act on the stop signal
            if w.raw.status in ("running", "paused", "restarting"):
                w.raw.stop(timeout=max(0, round(timeout)))

    def kill(self, name: str, signum: int = 9) -> None:
        """Signal the main process; a paused workload is thawed after, so it acts on it.

        An exited workload is left alone (as on the local backend).
        """
        w = self._get(name)
        w.raw.reload()
        state = w.raw.attrs["State"]
        if not state["Running"] or int(state["Pid"]) <= 0:
            log.info("kill %s: not running (%s)", name, w.raw.status)
            return
        self._signal(w, signum)
        if state["Paused"] and signum not in (signal.SIGSTOP, signal.SIGCONT):
            self.resume(name)

    def _signal(self, w: _Workload, signum: int) -> None:
        pid = int(w.raw.attrs["State"]["Pid"])
        try:
            own = w.raw.id in Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            own = False  # a remote engine (or one in a VM): its pids are not ours to see
        if own:
            # From the host, like a crash: `docker kill` would disable the restart policy.
            os.kill(pid, signum)
        else:
            w.raw.kill(signal=signum)

    def pause(self, name: str) -> None:
        from docker.errors import APIError

        w = self._get(name)
        if w.pause_seq is not None:
            return
        w.raw.reload()
        if w.raw.status != "running":
            raise ConfigError(f"workload {name!r}", f"is {w.raw.status}: cannot pause it")
        seq = self.run.ledger.record(
            f"pause container of {name}",
            {"op": "docker_unpause", "run_id": self.run.run_id, "container": w.raw.id},
        )
        try:
            w.raw.pause()
        except APIError as err:
            self.run.ledger.revert(seq)  # nothing paused: unpause finds nothing to do
            if err.status_code == 409:  # exited between the check and the pause
                raise ConfigError(f"workload {name!r}", f"cannot pause it: {err}") from err
            raise FaultError(f"cannot pause {name}") from err
        w.pause_seq = seq
        self.run.ledger.applied(seq)

    def resume(self, name: str) -> None:
        w = self._get(name)
        if w.pause_seq is not None:
            self.run.ledger.revert(w.pause_seq)
            w.pause_seq = None

    def restart(self, name: str) -> None:
        w = self._get(name)
        # Under the lock: the supervisor sees the exit this causes only once it runs again.
        with w.lock:
            w.raw.restart(timeout=10)
            w.manual_restarts += 1
            w.want_running = True
            w.halt.clear()
        self._supervise_if_restartable(w)

    def _exits(self, w: _Workload) -> tuple[int, int | None, bool]:
        """:func:`last_exit` of a workload; reloads ``w``.

        Events are read before State: a death between the two reads then shows
        as an exit with State's code, never as "running, with an exit code".
        """
        events = self._events.of(w.raw.id) if self._events is not None else []
        w.raw.reload()
        return last_exit(events, w.raw.attrs["State"], lambda: kernel_oom_kills(w.raw.id))

    def pid(self, name: str) -> int | None:
        """Host PID of the container's main process while it runs (from the engine)."""
        from docker.errors import DockerException

        w = self._get(name)
        try:
            w.raw.reload()
        except DockerException:
            return None
        pid = int(w.raw.attrs["State"].get("Pid") or 0)
        return pid if pid > 0 else None

    def restart_waits(self, policy: RestartPolicy, count: int) -> list[float]:
        return policy.waits(count)

    def status(self, name: str) -> WorkloadStatus:
        w = self._get(name)
        ooms, last_code, last_oom = self._exits(w)
        state = w.raw.attrs["State"]
        healthy: bool | None = None
        if w.healthcheck:
            health = state.get("Health", {}).get("Status")
            healthy = {"healthy": True, "unhealthy": False}.get(health)
        elif w.spec.liveness is not None:
            healthy = w.healthy
        return WorkloadStatus(
            running=bool(state["Running"]),
            paused=bool(state["Paused"]),
            exit_code=last_code,
            oom_killed=last_oom,
            oom_kills=ooms,
            restarts=w.policy_restarts + w.manual_restarts,
            healthy=healthy,
        )

    def stats(self, name: str) -> ResourceStats:
        w = self._get(name)
        oom_kills = self._exits(w)[0]  # reloads: State.Pid is the current process
        usage = _cgroup_usage(int(w.raw.attrs["State"]["Pid"]), w.raw.id)
        if usage is not None:
            memory, cpu_seconds, periods, throttled = usage
            return ResourceStats(memory, w.memory, cpu_seconds, periods, throttled, oom_kills)
        s = w.raw.stats(stream=False, one_shot=True)
        mem = s.get("memory_stats", {})
        inner = mem.get("stats", {})
        # As `docker stats` does: page cache that can be dropped is not usage.
        inactive = inner.get("total_inactive_file", inner.get("inactive_file", 0))
        cpu = s.get("cpu_stats", {})
        throttling = cpu.get("throttling_data", {})
        return ResourceStats(
            memory_bytes=max(0, int(mem.get("usage", 0)) - int(inactive)),
            memory_limit=w.memory,
            cpu_seconds=int(cpu.get("cpu_usage", {}).get("total_usage", 0)) / 1e9,
            throttled_periods=int(throttling.get("throttled_periods", 0)),
            throttled_seconds=int(throttling.get("throttled_time", 0)) / 1e9,
            oom_kills=oom_kills,
        )

    def set_limits(
        self,
        name: str,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        cpu_period_us: int | None = None,
    ) -> None:
        from docker.errors import APIError

        w = self._get(name)
        period = cpu_period_us or _CPU_PERIOD_US
        mem = memory or _host_memory()
        try:
            w.raw.update(
                cpu_period=period,
                cpu_quota=int(cpu * period) if cpu is not None else -1,
                mem_limit=mem,
                memswap_limit=mem,
            )
        except APIError as err:
            raise FaultError(f"cannot set limits of {name} (cpu={cpu}, memory={memory})") from err
        w.cpu, w.memory = cpu, memory

    def limits(self, name: str) -> tuple[float | None, int, int | None]:
        """(cores or None, CFS period in us, memory bytes or None) the container has now.

        Read back from the engine (``HostConfig``), not from what was asked:
        what a limit fault saves before and verifies after its revert. Memory
        equal to the host's RAM is this backend's "unlimited" (None).
        """
        w = self._get(name)
        w.raw.reload()
        host = w.raw.attrs["HostConfig"]
        period = int(host.get("CpuPeriod") or _CPU_PERIOD_US)
        quota = int(host.get("CpuQuota") or 0)
        memory = int(host.get("Memory") or 0)
        return (
            quota / period if quota > 0 else None,
            period,
            None if memory <= 0 or memory >= _host_memory() else memory,
        )

    def limits_inverse(
        self, name: str, saved: tuple[float | None, int, int | None]
    ) -> dict[str, Any]:
        """The ledger inverse that sets the container back to ``saved`` (from :meth:`limits`)."""
        cores, period, memory = saved
        return {
            "op": "docker_update_limits",
            "run_id": self.run.run_id,
            "container": self.container_id(name),
            "cpu_period": period,
            "cpu_quota": -1 if cores is None else round(cores * period),
            "memory": memory,
        }

    def isolate(self, name: str, peers: Sequence[str]) -> None:
        """Disconnect ``name`` from the run's peer network: cut off from every peer.

        Docker cannot drop only some peers, so ``peers`` is not used. Published
        ports stay reachable from the harness (they ride the ports network).
        """
        w = self._get(name)
        for peer in peers:
            self._get(peer)
        if name in peers:
            raise ConfigError("peers", f"{name!r} cannot be isolated from itself")
        if w.isolate_seq is not None:
            return
        run_net = self._networks[0]
        w.isolate_seq = self.run.ledger.record(
            f"disconnect {name} from {run_net.name}",
            {
                "op": "docker_network_connect",
                "run_id": self.run.run_id,
                "container": w.raw.id,
                "network": run_net.name,
                "aliases": [name],
            },
        )
        run_net._unwrap_network.disconnect(w.raw.id)
        self.run.ledger.applied(w.isolate_seq)

    def heal(self, name: str) -> None:
        w = self._get(name)
        if w.isolate_seq is not None:
            self.run.ledger.revert(w.isolate_seq)
            w.isolate_seq = None

    def log_path(self, name: str) -> Path:
        self._get(name)
        return self._log_file(name)

    def _log_file(self, name: str) -> Path:
        return self.run.dir / "logs" / f"{name}.log"

    def host_path(self, name: str, file: str) -> Path:
        """The host file behind a workload's planned ``file`` (bind-mounted read-only).

        Rewriting it in place (same inode) changes what the container reads:
        how a certificate fault swaps a member's certificate.
        """
        try:
            return Path(self._get(name).spec.files[file]).resolve()
        except KeyError:
            raise ConfigError(f"{name}.files", f"{file!r} is not a file of {name}") from None

    def internal_address(self, address: str) -> str:
        """Map ``127.0.0.1:<published port>`` of a workload of this run to ``<name>:<port>``.

        What another container (Prometheus) must dial: inside a container,
        127.0.0.1 is the container itself. Published port numbers are unique
        per host (the port allocator), so the mapping is unambiguous.
        """
        host, _, port_text = address.rpartition(":")
        if host in ("127.0.0.1", "localhost", "[::1]") and port_text.isdigit():
            port = int(port_text)
            for placement in self._placements.values():
                for port_name, published in placement.external_ports.items():
                    if published == port:
                        return placement.internal(port_name)
        raise ConfigError(
            "address",
            f"{address} is not a published port of a workload of run {self.run.run_id}: "
            "a container cannot reach it",
            expected="127.0.0.1:<port> of a workload this backend planned",
        )

    def container_id(self, name: str) -> str:
        """The Docker id of a workload's container (for tests and diagnostics)."""
        return str(self._get(name).raw.id)

    def close(self) -> None:
        """Remove every container and network of the run (by label); idempotent."""
        from docker.errors import DockerException

        for w in self._workloads.values():
            w.want_running = False
            w.halt.set()
            w.follower.done.set()
            # Ended here, the log streams deliver the last lines before the removal.
            with contextlib.suppress(DockerException):
                w.raw.reload()
                if w.raw.status in ("running", "paused", "restarting"):
                    w.raw.kill()
        for w in self._workloads.values():
            w.follower.join(timeout=5)
            for thread in (w.watcher, w.supervisor):
                if thread is not None:
                    thread.join(timeout=5)
        if self._net_seq is not None:
            self.run.ledger.revert(self._net_seq)
            # The containers are gone, and with them any pause or isolation.
            for w in self._workloads.values():
                for seq in (w.pause_seq, w.isolate_seq):
                    if seq is not None:
                        self.run.ledger.mark_reverted(seq)
                w.pause_seq = w.isolate_seq = None
        for w in self._workloads.values():
            w.container.get_docker_client().client.close()
        self._workloads.clear()
        for lease in self._leases:
            lease.release(self.run.ledger)
        self._leases.clear()
        self._networks.clear()
        self._net_seq = None
        if self._events is not None:
            self._events.close()
            self._events = None
        self.client.close()
