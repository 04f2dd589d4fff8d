"""Per-workload cgroups on v1 and v2 hierarchies, behind one small interface.

Each workload of a run gets a cgroup named with ``faultline`` and the run id:

* v1: ``<mount of controller>/faultline/<run_id>/<name>`` for memory, cpu,
  cpuacct, pids and freezer (whichever are mounted; ``cpu,cpuacct`` may share
  a mount). On a hybrid host the process also joins the same path in the
  cgroup2 hierarchy (``/sys/fs/cgroup/unified``): no controllers there, but
  iptables' ``-m cgroup --path`` matches sockets by their cgroup2 path, which
  is how :meth:`LocalBackend.isolate` tells workloads apart on 127.0.0.1.
* v2: ``/sys/fs/cgroup/faultline/<run_id>/<name>``, with the controllers the
  root offers enabled in ``faultline/`` and ``<run_id>/``'s subtree_control.
  The root's own subtree_control is never written (that is the host's);
  whatever it does not offer is missing, and using it raises
  :class:`BackendUnavailable` saying how to enable it.

>>> cg = WorkloadCgroup(detect_layout(), run_id, "etcd-0")   # doctest: +SKIP
>>> ledger.record("cgroup etcd-0", {"op": "remove_cgroup", "paths": cg.paths()})
>>> cg.create(); cg.set_memory(256 << 20); cg.set_cpu(0.5)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.base import ResourceStats
from harness.errors import BackendUnavailable
from harness.wait import wait_until

__all__ = [
    "V1_CONTROLLERS",
    "V2_CONTROLLERS",
    "CgroupLayout",
    "WorkloadCgroup",
    "detect_layout",
    "parse_flat_keyed",
]

log = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
BASE = "faultline"
DEFAULT_CPU_PERIOD_US = 100_000
# v1 reports "unlimited" as a page-rounded LONG_MAX; anything this large is no limit.
_V1_UNLIMITED = 1 << 62
_UNIFIED = "unified"  # key of the cgroup2 directory among a v1 workload's dirs


@dataclass(frozen=True)
class CgroupLayout:
    """Which hierarchies this host has and where they are mounted.

    ``version`` is "v1" when v1 controllers are mounted (hybrid hosts too),
    "v2" on a unified host, "none" when no usable hierarchy exists.
    """

    version: str
    v1: Mapping[str, Path] = field(default_factory=dict)  # controller -> mount point
    v2_root: Path | None = None
    v2_controllers: frozenset[str] = frozenset()  # offered to children by the v2 root


def detect_layout(mounts: str | None = None) -> CgroupLayout:
    """Read the cgroup mounts (``/proc/self/mounts`` unless given as text)."""
    if mounts is None:
        mounts = Path("/proc/self/mounts").read_text()
    v1: dict[str, Path] = {}
    v2_root: Path | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mountpoint, fstype, options = Path(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup2" and v2_root is None:
            v2_root = mountpoint
        elif fstype == "cgroup":
            for controller in V1_CONTROLLERS:
                if controller in options:
                    v1.setdefault(controller, mountpoint)
    offered: frozenset[str] = frozenset()
    if v2_root is not None:
        with contextlib.suppress(OSError):
            offered = frozenset((v2_root / "cgroup.subtree_control").read_text().split())
    if v1:
        return CgroupLayout("v1", v1, v2_root, offered)
    if v2_root is not None:
        return CgroupLayout("v2", {}, v2_root, offered)
    return CgroupLayout("none")


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse ``key value`` lines (cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value.strip())
    return out


def _read(path: Path) -> str:
    return path.read_text().strip()


def _mkdir(path: Path) -> None:
    # Another run may rmdir the shared "faultline" parent between our mkdirs
    # (it removes it when it looks empty): retry until the whole path exists.
    for _ in range(20):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            time.sleep(0.01)
    path.mkdir(parents=True, exist_ok=True)


class WorkloadCgroup:
    """The cgroup(s) of one workload; creation is recorded by the caller first."""

    def __init__(self, layout: CgroupLayout, run_id: str, name: str) -> None:
        self.layout = layout
        self.rel = Path(BASE, run_id, name)
        self.dirs: dict[str, Path] = {}
        if layout.version == "v1":
            for controller, mount in layout.v1.items():
                self.dirs[controller] = mount / self.rel
            if layout.v2_root is not None:
                self.dirs[_UNIFIED] = layout.v2_root / self.rel
        elif layout.version == "v2" and layout.v2_root is not None:
            self.dirs[_UNIFIED] = layout.v2_root / self.rel

    # -- where things are --------------------------------------------------

    def paths(self) -> list[str]:
        """The leaf directories, for the ``remove_cgroup`` inverse."""
        return sorted({str(p) for p in self.dirs.values()})

    def run_paths(self) -> list[str]:
        """The ``faultline/<run_id>`` directories above the leaves."""
        return sorted({str(p.parent) for p in self.dirs.values()})

    def base_paths(self) -> list[str]:
        """The shared ``faultline`` directories (removed only once empty)."""
        return sorted({str(p.parent.parent) for p in self.dirs.values()})

    def procs_files(self) -> list[Path]:
        """Files a process writes its pid to, to join every hierarchy."""
        return sorted({p / "cgroup.procs" for p in self.dirs.values()})

    @property
    def v2_path(self) -> str | None:
        """Path relative to the cgroup2 root (for ``iptables -m cgroup --path``)."""
        return str(self.rel) if _UNIFIED in self.dirs else None

    def _v2(self) -> bool:
        return self.layout.version == "v2"

    def _dir(self, controller: str) -> Path:
        if self._v2():
            if controller not in self.layout.v2_controllers:
                raise BackendUnavailable(
                    f"cgroup v2 {controller} controller",
                    f"enable it for children of the root: "
                    f"echo +{controller} > {self.layout.v2_root}/cgroup.subtree_control",
                )
            return self.dirs[_UNIFIED]
        if controller not in self.dirs:
            raise BackendUnavailable(
                f"cgroup v1 {controller} controller",
                f"mount it: mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}",
            )
        return self.dirs[controller]

    # -- lifecycle -----------------------------------------------------------

    def create(self) -> None:
        """Make the directories (and on v2 enable controllers down the tree)."""
        if not self.dirs:
            raise BackendUnavailable(
                "cgroups", "mount cgroup2 at /sys/fs/cgroup or the v1 controllers"
            )
        for path in self.dirs.values():
            _mkdir(path)
        if self._v2():
            wanted = " ".join(f"+{c}" for c in V2_CONTROLLERS if c in self.layout.v2_controllers)
            leaf = self.dirs[_UNIFIED]
            for parent in (leaf.parent.parent, leaf.parent):
                if wanted:
                    (parent / "cgroup.subtree_control").write_text(wanted)
            missing = set(V2_CONTROLLERS) - self.layout.v2_controllers
            if missing:
                log.warning(
                    "cgroup v2 root offers no %s controller(s): limits on them are unavailable",
                    ", ".join(sorted(missing)),
                )
        elif "memory" in self.dirs:
            # Limits should OOM-kill, not push the workload into swap.
            with contextlib.suppress(OSError):
                (self.dirs["memory"] / "memory.swappiness").write_text("0")

    def pids(self) -> list[int]:
        out: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError):
                out.update(int(x) for x in procs.read_text().split())
        return sorted(out)

    # -- limits --------------------------------------------------------------

    def set_memory(self, limit: int | None) -> None:
        """Memory limit in bytes (None: unlimited); swap is capped to it as well."""
        d = self._dir("memory")
        if self._v2():
            (d / "memory.max").write_text("max" if limit is None else str(limit))
            swap = d / "memory.swap.max"
            if swap.exists():
                swap.write_text("max" if limit is None else "0")
            return
        mem, memsw = d / "memory.limit_in_bytes", d / "memory.memsw.limit_in_bytes"
        value = "-1" if limit is None else str(limit)
        # memsw must stay >= mem: raise memsw first when growing, mem first when shrinking.
        current = int(_read(mem))
        growing = limit is None or limit >= current
        order = [memsw, mem] if growing else [mem, memsw]
        for f in order:
            if f is mem or f.exists():
                f.write_text(value)

    def set_cpu(self, cores: float | None, period_us: int | None = None) -> None:
        """CPU quota in cores per period (None: unlimited)."""
        d = self._dir("cpu")
        period = period_us or DEFAULT_CPU_PERIOD_US
        quota = None if cores is None else max(1000, int(cores * period))
        if self._v2():
            (d / "cpu.max").write_text(f"{'max' if quota is None else quota} {period}")
            return
        # Lift the quota first: a new period shorter than the old quota is refused.
        (d / "cpu.cfs_quota_us").write_text("-1")
        (d / "cpu.cfs_period_us").write_text(str(period))
        if quota is not None:
            (d / "cpu.cfs_quota_us").write_text(str(quota))

    def memory_limit(self) -> int | None:
        d = self._dir("memory")
        if self._v2():
            raw = _read(d / "memory.max")
            return None if raw == "max" else int(raw)
        value = int(_read(d / "memory.limit_in_bytes"))
        return None if value >= _V1_UNLIMITED else value

    def cpu_limit(self) -> tuple[float | None, int]:
        """(cores or None, period in microseconds)."""
        d = self._dir("cpu")
        if self._v2():
            quota, period = _read(d / "cpu.max").split()
            return (None if quota == "max" else int(quota) / int(period)), int(period)
        q = int(_read(d / "cpu.cfs_quota_us"))
        p = int(_read(d / "cpu.cfs_period_us"))
        return (None if q < 0 else q / p), p

    # -- freezing ------------------------------------------------------------

    @property
    def freeze_file(self) -> Path | None:
        """The file that freezes the group, None when there is no freezer."""
        if self._v2():
            return self.dirs[_UNIFIED] / "cgroup.freeze"
        if "freezer" in self.dirs:
            return self.dirs["freezer"] / "freezer.state"
        return None

    @property
    def thaw_value(self) -> str:
        return "0" if self._v2() else "THAWED"

    def freeze(self, timeout: float = 5.0) -> None:
        f = self.freeze_file
        if f is None:
            raise BackendUnavailable("cgroup freezer", "mount the v1 freezer or use cgroup v2")
        f.write_text("1" if self._v2() else "FROZEN")
        wait_until(lambda: self.frozen() is True, timeout=timeout, interval=0.01, what="freeze")

    def thaw(self, timeout: float = 5.0) -> None:
        f = self.freeze_file
        if f is None:
            return
        f.write_text(self.thaw_value)
        wait_until(lambda: self.frozen() is False, timeout=timeout, interval=0.01, what="thaw")

    def frozen(self) -> bool | None:
        """True when fully frozen, False when thawed or freezing, None without a freezer."""
        f = self.freeze_file
        if f is None:
            return None
        try:
            if self._v2():
                return parse_flat_keyed((f.parent / "cgroup.events").read_text())["frozen"] == 1
            return _read(f) == "FROZEN"
        except (OSError, KeyError):
            return None

    # -- accounting ----------------------------------------------------------

    def oom_kills(self) -> int:
        """OOM kills in this cgroup since it was made (0 when the kernel has no counter)."""
        try:
            d = self._dir("memory")
            name = "memory.events" if self._v2() else "memory.oom_control"
            return parse_flat_keyed((d / name).read_text()).get("oom_kill", 0)
        except (OSError, BackendUnavailable):
            return 0

    def stats(self) -> ResourceStats:
        memory = limit = None
        cpu_seconds, throttled, throttled_s = 0.0, 0, 0.0
        with contextlib.suppress(BackendUnavailable):
            d = self._dir("memory")
            memory = int(_read(d / ("memory.current" if self._v2() else "memory.usage_in_bytes")))
            limit = self.memory_limit()
        with contextlib.suppress(BackendUnavailable):
            stat = parse_flat_keyed((self._dir("cpu") / "cpu.stat").read_text())
            throttled = stat.get("nr_throttled", 0)
            if self._v2():
                cpu_seconds = stat.get("usage_usec", 0) / 1e6
                throttled_s = stat.get("throttled_usec", 0) / 1e6
            else:
                throttled_s = stat.get("throttled_time", 0) / 1e9
        if not self._v2():
            with contextlib.suppress(BackendUnavailable):
                cpu_seconds = int(_read(self._dir("cpuacct") / "cpuacct.usage")) / 1e9
        return ResourceStats(
            memory_bytes=memory or 0,
            memory_limit=limit,
            cpu_seconds=cpu_seconds,
            throttled_periods=throttled,
            throttled_seconds=throttled_s,
            oom_kills=self.oom_kills(),
        )
