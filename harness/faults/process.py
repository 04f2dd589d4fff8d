"""Faults on a workload's process: kill, pause, restart, CPU and memory squeeze, partition.

They act through the backend (so one scenario runs on every backend) and
record inverses that any process can run (the watchdog, ``faultline clean``):
``resume_tagged`` for a pause, the saved cgroup values (``write_file``, local)
or container limits (``docker_update_limits`` on docker, ``kube_set_limits`` on
kubernetes) for limits, ``remove_iptables_chain`` for a partition. Reverts are
verified on the real state: the process is running and not stopped or frozen,
the cgroup files (or the container's limits as its backend reads them back)
hold their original values, the partition chain is gone.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import shutil
import signal as _signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harness import cleanup
from harness.errors import ConfigError, FaultError, UnsafeTargetError
from harness.faults.base import MAX_FAULT_SECONDS, Fault, Scope, check_positive
from harness.faults.selectors import ROLE_SELECTORS, member_name, resolve
from harness.wait import WaitTimeout, wait_for, wait_until

if TYPE_CHECKING:
    from harness.backends.base import Backend

__all__ = [
    "CpuThrottle",
    "MemoryLimit",
    "Partition",
    "ProcessKill",
    "ProcessPause",
    "Restart",
    "WorkloadFault",
    "cgroup_dirs",
    "workload_cgroup_dirs",
]

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
RESTART_TIMEOUT = 30.0


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """The cgroup directory of ``pid`` per v1 controller (``cpu``, ``memory``, ...) or ``v2``."""
    out: dict[str, Path] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    pure_v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            if pure_v2:
                out["v2"] = CGROUP_ROOT / path.lstrip("/")
            continue
        for c in controllers.split(","):
            out[c] = CGROUP_ROOT / controllers / path.lstrip("/")
    return out


def workload_cgroup_dirs(backend: object, workload: str) -> dict[str, Path]:
    """Like :func:`cgroup_dirs`, from the local backend's record of the workload's cgroup.

    Not read from /proc: a just-started process may not have joined its cgroup yet.
    """
    get = getattr(backend, "cgroup", None)
    cg = get(workload) if get is not None else None
    if cg is None:
        raise FaultError(f"{workload}: has no cgroup (needs the local backend, run as root)")
    dirs: dict[str, Path] = dict(cg.dirs)
    unified = dirs.pop("unified", None)
    if cg.layout.version == "v2" and unified is not None:
        return {"v2": unified}
    return dirs


def _stopped_or_frozen(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("T", "t"):
        return True
    dirs = cgroup_dirs(pid)
    with contextlib.suppress(OSError):
        freezer = dirs.get("freezer")
        if freezer and (freezer / "freezer.state").read_text().strip() != "THAWED":
            return True
    with contextlib.suppress(OSError):
        if "v2" in dirs and (dirs["v2"] / "cgroup.freeze").read_text().strip() == "1":
            return True
    return False


def _cpu_limit(backend: object, workload: str) -> tuple[float | None, int | None]:
    """(cores or None, period) the workload's cgroup has now."""
    dirs = workload_cgroup_dirs(backend, workload)
    if "v2" in dirs:
        quota, period = (dirs["v2"] / "cpu.max").read_text().split()
        return (None if quota == "max" else int(quota) / int(period)), int(period)
    if "cpu" in dirs:
        q = int((dirs["cpu"] / "cpu.cfs_quota_us").read_text())
        p = int((dirs["cpu"] / "cpu.cfs_period_us").read_text())
        return (None if q < 0 else q / p), p
    raise FaultError(f"{workload}: no cpu cgroup to read the current limit from")


class WorkloadFault(Fault):
    """A fault on the workload(s) a selector picks: ``leader``, ``minority``, a name..."""

    def __init__(
        self, scope: Scope, target: str, *, max_duration: float, name: str | None = None
    ) -> None:
        super().__init__(scope, max_duration=max_duration, name=name)
        self.target = target

    def available(self, backend: object) -> str | None:
        if backend is None:
            return "this fault acts through a backend: give the Scope one"
        return None

    def _prepare(self) -> None:
        field = f"{self.name}.target"
        cluster = self.scope.cluster
        if cluster is not None and self.target in ROLE_SELECTORS:
            # Right after an election there may briefly be no leader to pick from.
            try:
                wait_for(cluster.leader, timeout=10, interval=0.1, what="a leader")
            except WaitTimeout as err:
                raise FaultError(
                    f"{self.name}: the cluster has no leader to select from: {err}"
                ) from err
        self.targets = resolve(
            self.target,
            field=field,
            cluster=cluster,
            workloads=self.scope.workloads,
            run_id=self.scope.run.run_id,
            rng=self.scope.rng,
        )

    def _pids(self, workload: str) -> list[int]:
        return cleanup.tagged_pids(self.scope.run.run_id, workload)

    def _running_leftovers(self) -> list[str]:
        """Each target running, not stopped and not frozen (else: what is left)."""
        backend = self.scope.need_backend(self.name)
        left = []
        for w in self.targets:
            status = backend.status(w)
            if not status.running:
                left.append(f"{w} not running (exit {status.exit_code})")
            elif status.paused or any(_stopped_or_frozen(p) for p in self._pids(w)):
                left.append(f"{w} still paused")
        return left

    def _bring_back(self, workload: str) -> None:
        """Start a target that is down again (a cluster member rejoins as one)."""
        backend = self.scope.need_backend(self.name)
        if backend.status(workload).running:
            return
        cluster = self.scope.cluster
        start_member = getattr(cluster, "start_member", None)
        members = [member_name(m) for m in cluster.members()] if cluster is not None else []
        if start_member is not None and workload in members:
            start_member(workload)
        else:
            backend.restart(workload)
        wait_until(
            lambda: backend.status(workload).running,
            timeout=RESTART_TIMEOUT,
            what=f"{workload} running again",
        )


class ProcessKill(WorkloadFault):
    """Sends ``signal`` (default SIGKILL); revert starts the target again if it stayed down."""

    kind = "process_kill"

    def __init__(
        self,
        scope: Scope,
        target: str,
        *,
        signal: int = _signal.SIGKILL,
        max_duration: float = 60.0,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, target, max_duration=max_duration, name=name)
        try:
            self.signal = _signal.Signals(signal)
        except ValueError as err:
            raise ConfigError(f"{self.name}.signal", f"{signal!r}", expected="a signal") from err

    def knobs(self) -> dict[str, Any]:
        return {"signal": self.signal.name}

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        for w in self.targets:
            self.detail.setdefault("killed_pids", []).extend(self._pids(w))
            inverse = {"op": "nothing_to_undo", "reason": f"{self.signal.name} to {w}"}
            self._step(
                f"{self.signal.name} to {w}", inverse, partial(backend.kill, w, int(self.signal))
            )

    def _after_undo(self) -> None:
        for w in self.targets:
            self._bring_back(w)

    def _leftovers(self) -> list[str]:
        return self._running_leftovers()


class Restart(ProcessKill):
    """Stops and starts the target (a counted restart); revert checks it runs."""

    kind = "restart"

    def knobs(self) -> dict[str, Any]:
        return {}

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        for w in self.targets:
            inverse = {"op": "nothing_to_undo", "reason": f"restart of {w}"}
            self._step(f"restart {w}", inverse, partial(backend.restart, w))


class ProcessPause(WorkloadFault):
    """Freezes the target (freezer cgroup or SIGSTOP, per backend) for ``seconds``.

    ``seconds`` is also the deadline: if the harness dies, the watchdog thaws it then.
    """

    kind = "process_pause"

    def __init__(
        self, scope: Scope, target: str, *, seconds: float, name: str | None = None
    ) -> None:
        # Name the knob the caller gave: `seconds` becomes max_duration below.
        seconds = check_positive(f"{name or self.kind}.seconds", seconds, upper=MAX_FAULT_SECONDS)
        super().__init__(scope, target, max_duration=seconds, name=name)
        self.seconds = self.max_duration

    def knobs(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        for w in self.targets:
            inverse = {"op": "resume_tagged", "run_id": self.scope.run.run_id, "workload": w}
            self._step(
                f"pause {w}", inverse, partial(backend.pause, w), undo=partial(backend.resume, w)
            )

    def _leftovers(self) -> list[str]:
        backend = self.scope.need_backend(self.name)
        # A target that died while paused is not a pause left behind.
        return [
            f"{w} still paused"
            for w in self.targets
            if backend.status(w).paused or any(_stopped_or_frozen(p) for p in self._pids(w))
        ]


@dataclass(frozen=True)
class _Saved:
    path: Path
    value: str  # as read before the fault, compared after revert

    @property
    def restore(self) -> str:
        """What to write back: v1 reads "unlimited" as a huge number some kernels refuse."""
        if self.path.name.endswith("limit_in_bytes") and int(self.value) >= 1 << 62:
            return "-1"
        return self.value


@runtime_checkable
class _ContainerLimits(Protocol):
    """A backend whose limits live on containers it reads back (docker, kubernetes)."""

    def limits(self, name: str) -> tuple[float | None, int, int | None]: ...

    def limits_inverse(
        self, name: str, saved: tuple[float | None, int, int | None]
    ) -> dict[str, Any]:
        """The ledger inverse that sets ``name`` back to ``saved`` (from ``limits``)."""
        ...


# (cores or None, CFS period in us, memory bytes or None) of a container.
_Limits = tuple[float | None, int, int | None]


class _LimitFault(WorkloadFault):
    """Saves the target's limits, changes them via the backend, restores them.

    Local backend: the cgroup files are saved and written back (``write_file``).
    Docker and kubernetes: the container's limits as the backend reads them
    back are saved, the revert sets them again through the backend (the
    inverse for the watchdog and ``faultline clean`` is the backend's
    ``limits_inverse``), and what the backend reads afterwards is compared
    with the saved one.
    """

    def available(self, backend: object) -> str | None:
        if isinstance(backend, _ContainerLimits) or getattr(backend, "name", "") == "local":
            return None
        return (
            "limits are restored from saved cgroup files or container limits: needs the "
            "local, docker or kubernetes backend (run with --backend local)"
        )

    @abc.abstractmethod
    def _files(self, dirs: dict[str, Path]) -> list[Path]:
        """The cgroup files this fault changes (saved before, restored after)."""

    def _prepare(self) -> None:
        super()._prepare()
        self._saved: dict[str, list[_Saved]] = {}
        self._saved_container: dict[str, _Limits] = {}
        backend = self.scope.need_backend(self.name)
        if isinstance(backend, _ContainerLimits):
            # Only this run's containers can be targets (resolve + the backend's names).
            self._saved_container = {w: backend.limits(w) for w in self.targets}
            return
        for w in self.targets:
            files = self._files(workload_cgroup_dirs(backend, w))
            for f in files:
                if "faultline" not in f.as_posix():
                    raise UnsafeTargetError(
                        f"{self.name}.target",
                        f"{w} is in cgroup {f.parent}, not one faultline made",
                    )
            self._saved[w] = [_Saved(f, f.read_text().strip()) for f in files]

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        ledger = self.scope.run.ledger
        if isinstance(backend, _ContainerLimits):
            for w in self.targets:
                cores, period, memory = self._saved_container[w]
                inverse = backend.limits_inverse(w, self._saved_container[w])
                undo = partial(
                    backend.set_limits, w, cpu=cores, memory=memory, cpu_period_us=period
                )
                self._step(f"limits of {w}", inverse, partial(self._set, backend, w), undo=undo)
            return
        for w in self.targets:
            seqs = [
                self._record(
                    f"limit {s.path.name} of {w}",
                    {"op": "write_file", "path": str(s.path), "value": s.restore},
                )
                for s in self._saved[w]
            ]
            self._set(backend, w)
            for seq in seqs:
                ledger.applied(seq)

    @abc.abstractmethod
    def _set(self, backend: Backend, workload: str) -> None:
        """Change the limit through the backend."""

    def _leftovers(self) -> list[str]:
        left = []
        backend = self.scope.need_backend(self.name)
        for w, was in self._saved_container.items():
            if not isinstance(backend, _ContainerLimits):
                break
            try:
                current = backend.limits(w)
            except Exception as err:  # noqa: BLE001 - a removed container holds no limit
                log.debug("limits of %s after revert: %r", w, err)
                continue
            if current != was:
                left.append(f"{w} has limits {_show(current)}, had {_show(was)}")
        for saved in self._saved.values():
            for s in saved:
                with contextlib.suppress(FileNotFoundError):  # cgroup gone: nothing left
                    now = s.path.read_text().strip()
                    if now != s.value:
                        left.append(f"{s.path} is {now}, was {s.value}")
        return left


def _show(limits: _Limits) -> str:
    cores, period, memory = limits
    return f"cpu={cores} per {period} us, memory={memory}"


class CpuThrottle(_LimitFault):
    """Caps the target at ``cores`` CPUs per ``period_us`` (CFS quota).

    Effect: ``throttled_periods()`` (the rise of the cgroup's throttled-period
    count since inject) goes up while the target wants more CPU than allowed.
    """

    kind = "cpu_throttle"

    def __init__(
        self,
        scope: Scope,
        target: str,
        *,
        cores: float,
        period_us: int = 100_000,
        max_duration: float,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, target, max_duration=max_duration, name=name)
        self.cores = check_positive(f"{self.name}.cores", cores, upper=1024)
        if (
            isinstance(period_us, bool)
            or not isinstance(period_us, int)
            or not (1_000 <= period_us <= 1_000_000)
        ):
            raise ConfigError(
                f"{self.name}.period_us", f"{period_us!r}", expected="1000..1000000 microseconds"
            )
        if self.cores * period_us < 1_000:
            raise ConfigError(
                f"{self.name}.cores",
                f"{cores} cores of a {period_us} us period "
                "is below the kernel's 1 ms minimum quota",
                expected=f">= {1_000 / period_us:g}",
            )
        self.period_us = period_us
        self._baseline: dict[str, int] = {}

    def knobs(self) -> dict[str, Any]:
        return {"cores": self.cores, "period_us": self.period_us}

    def _files(self, dirs: dict[str, Path]) -> list[Path]:
        if "v2" in dirs:
            return [dirs["v2"] / "cpu.max"]
        if "cpu" not in dirs:
            raise FaultError(f"{self.name}: no cpu cgroup controller for the target")
        return [dirs["cpu"] / "cpu.cfs_period_us", dirs["cpu"] / "cpu.cfs_quota_us"]

    def _set(self, backend: Backend, workload: str) -> None:
        stats = backend.stats(workload)
        self._baseline[workload] = stats.throttled_periods
        # set_limits sets both: pass the memory limit on unchanged.
        backend.set_limits(
            workload, cpu=self.cores, cpu_period_us=self.period_us, memory=stats.memory_limit
        )

    def throttled_periods(self) -> dict[str, int]:
        """Per target: periods throttled since inject (read from the cgroup now)."""
        backend = self.scope.need_backend(self.name)
        return {w: backend.stats(w).throttled_periods - base for w, base in self._baseline.items()}

    def _before_undo(self) -> None:
        self.detail["throttled_periods"] = self.throttled_periods()


class MemoryLimit(_LimitFault):
    """Lowers the target's memory limit to ``bytes`` at run time.

    Effect: OOM kills, counted from ``backend.status(...).oom_kills`` (see
    ``oom_kills()``); a target with a restart policy comes back under the lower
    limit until revert.
    """

    kind = "memory_limit"

    def __init__(
        self, scope: Scope, target: str, *, bytes: int, max_duration: float, name: str | None = None
    ) -> None:
        super().__init__(scope, target, max_duration=max_duration, name=name)
        if isinstance(bytes, bool) or not isinstance(bytes, int) or bytes < 1 << 20:
            raise ConfigError(f"{self.name}.bytes", f"{bytes!r}", expected=">= 1 MiB")
        self.bytes = bytes
        self._baseline: dict[str, int] = {}

    def knobs(self) -> dict[str, Any]:
        return {"bytes": self.bytes}

    def _files(self, dirs: dict[str, Path]) -> list[Path]:
        # The backend caps swap with memory, so the swap limit is saved too.
        if "v2" in dirs:
            return [
                f for f in (dirs["v2"] / "memory.max", dirs["v2"] / "memory.swap.max") if f.exists()
            ]
        if "memory" not in dirs:
            raise FaultError(f"{self.name}: no memory cgroup controller for the target")
        mem = dirs["memory"] / "memory.limit_in_bytes"
        memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
        if not memsw.exists():
            return [mem]
        # Restored newest first, and memsw must stay >= mem at every step: when
        # lowering, memsw is restored (raised) before mem, and the other way round.
        return [mem, memsw] if self.bytes < int(mem.read_text()) else [memsw, mem]

    def _set(self, backend: Backend, workload: str) -> None:
        self._baseline[workload] = backend.status(workload).oom_kills
        # set_limits sets both: pass the CPU limit on unchanged.
        cores: float | None
        period: int | None
        if isinstance(backend, _ContainerLimits):
            cores, period, _ = self._saved_container[workload]
        else:
            cores, period = _cpu_limit(backend, workload)
        backend.set_limits(workload, memory=self.bytes, cpu=cores, cpu_period_us=period)

    def oom_kills(self) -> dict[str, int]:
        """Per target: OOM kills since inject."""
        backend = self.scope.need_backend(self.name)
        return {w: backend.status(w).oom_kills - base for w, base in self._baseline.items()}

    def _before_undo(self) -> None:
        self.detail["oom_kills"] = self.oom_kills()


def _chain_present(chain: str) -> bool:
    res = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, check=False)
    return res.returncode == 0


class Partition(WorkloadFault):
    """Cuts the target off from ``from_`` (``"peers"``: the other cluster members).

    Local backend: an iptables chain faultline owns (``FL-...``), matched by
    cgroup path. The backend records the chain's inverse before creating it;
    this fault adds the same inverse with the fault's deadline right after, so
    the watchdog heals it at ``max_duration``. Verified: the chain is gone.
    """

    kind = "partition"

    def __init__(
        self,
        scope: Scope,
        target: str,
        *,
        from_: str | Sequence[str] = "peers",
        max_duration: float,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, target, max_duration=max_duration, name=name)
        self.from_ = from_
        self.peers: dict[str, list[str]] = {}
        self._chains: list[str] = []

    def available(self, backend: object) -> str | None:
        if backend is None:
            return "a partition acts through a backend: give the Scope one"
        if getattr(backend, "name", "") == "local" and shutil.which("iptables") is None:
            return "apt-get install -y iptables (and run as root)"
        return None

    def knobs(self) -> dict[str, Any]:
        return {"from": self.from_ if isinstance(self.from_, str) else list(self.from_)}

    def _prepare(self) -> None:
        super()._prepare()
        field = f"{self.name}.from_"
        cluster = self.scope.cluster
        for w in self.targets:
            if self.from_ == "peers":
                if cluster is None:
                    raise ConfigError(
                        field, "'peers' needs a cluster", expected="a list of workload names"
                    )
                peers = [member_name(m) for m in cluster.members() if member_name(m) != w]
            else:
                names = [self.from_] if isinstance(self.from_, str) else list(self.from_)
                peers = [
                    p
                    for n in names
                    for p in resolve(
                        n,
                        field=field,
                        cluster=cluster,
                        workloads=self.scope.workloads,
                        run_id=self.scope.run.run_id,
                        rng=self.scope.rng,
                    )
                ]
            if not peers:
                raise ConfigError(field, f"nothing to cut {w} off from")
            self.peers[w] = peers

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        ledger = self.scope.run.ledger
        for w, peers in self.peers.items():
            backend.isolate(w, peers)
            mine = [
                e
                for e in ledger.entries()
                if e.inverse.get("op") == "remove_iptables_chain"
                and not e.reverted
                and e.action.startswith(f"isolate {w} ")
            ]
            if mine:
                inverse = mine[-1].inverse
                self._chains.append(str(inverse["chain"]))
                seq = self._record(f"heal {w}", inverse, undo=partial(backend.heal, w))
            else:  # a backend without iptables (docker, kubernetes) heals in-process only
                seq = self._record(
                    f"heal {w}",
                    {"op": "nothing_to_undo", "reason": f"{backend.name} heals {w}"},
                    undo=partial(backend.heal, w),
                )
            ledger.applied(seq)

    def _leftovers(self) -> list[str]:
        return [f"iptables chain {c}" for c in self._chains if _chain_present(c)]
