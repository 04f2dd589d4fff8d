"""Cgroup layout detection and the v1/v2 workload cgroup.

Parsing and naming are pure logic; the rest runs against the host's real
hierarchies (root only) and removes what it made with the ledger's inverses.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends.cgroups import CgroupLayout, WorkloadCgroup, detect_layout, parse_flat_keyed
from harness.errors import BackendUnavailable

HYBRID = """\
sysfs /sys sysfs rw 0 0
tmpfs /sys/fs/cgroup tmpfs rw,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
"""

UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def test_detects_hybrid_v1_with_shared_cpu_mount() -> None:
    layout = detect_layout(HYBRID)
    assert layout.version == "v1"
    assert layout.v1 == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }
    assert layout.v2_root == Path("/sys/fs/cgroup/unified")


def test_detects_unified_v2_and_none() -> None:
    layout = detect_layout(UNIFIED)
    assert (layout.version, layout.v2_root) == ("v2", Path("/sys/fs/cgroup"))
    assert detect_layout("proc /proc proc rw 0 0\n").version == "none"


def test_workload_paths_per_layout() -> None:
    v1 = WorkloadCgroup(detect_layout(HYBRID), "r1", "etcd-0")
    assert v1.paths() == [
        "/sys/fs/cgroup/cpu,cpuacct/faultline/r1/etcd-0",
        "/sys/fs/cgroup/freezer/faultline/r1/etcd-0",
        "/sys/fs/cgroup/memory/faultline/r1/etcd-0",
        "/sys/fs/cgroup/unified/faultline/r1/etcd-0",
    ]
    assert "/sys/fs/cgroup/memory/faultline/r1" in v1.run_paths()
    assert "/sys/fs/cgroup/memory/faultline" in v1.base_paths()
    assert v1.v2_path == "faultline/r1/etcd-0"
    assert v1.freeze_file == Path("/sys/fs/cgroup/freezer/faultline/r1/etcd-0/freezer.state")
    v2 = WorkloadCgroup(CgroupLayout("v2", v2_root=Path("/sys/fs/cgroup")), "r1", "etcd-0")
    assert v2.paths() == ["/sys/fs/cgroup/faultline/r1/etcd-0"]
    assert v2.freeze_file == Path("/sys/fs/cgroup/faultline/r1/etcd-0/cgroup.freeze")
    assert WorkloadCgroup(CgroupLayout("none"), "r1", "x").paths() == []


def test_missing_controllers_say_how_to_get_them() -> None:
    v2 = WorkloadCgroup(CgroupLayout("v2", v2_root=Path("/sys/fs/cgroup")), "r1", "x")
    with pytest.raises(BackendUnavailable, match=r"\+memory"):
        v2.set_memory(1 << 20)
    v1 = WorkloadCgroup(CgroupLayout("v1", v1={"memory": Path("/m")}), "r1", "x")
    with pytest.raises(BackendUnavailable, match="cpu"):
        v1.set_cpu(0.5)
    assert v1.freeze_file is None


def test_parse_flat_keyed() -> None:
    text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    assert parse_flat_keyed(text) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 2}
    assert parse_flat_keyed("frozen 1\npopulated x\n") == {"frozen": 1}


# -- real hierarchies -----------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@contextlib.contextmanager
def _made(layout: CgroupLayout) -> Iterator[WorkloadCgroup]:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root: run the tests as root")
    cg = WorkloadCgroup(layout, f"unittest-{secrets.token_hex(3)}", "w")
    try:
        cg.create()
        yield cg
    finally:
        cleanup.remove_cgroup(cg.paths())
        cleanup.remove_cgroup(cg.run_paths())
        cleanup.remove_empty_cgroups(cg.base_paths())
        assert not any(Path(p).exists() for p in cg.run_paths())


@pytest.fixture
def host_cgroup() -> Iterator[WorkloadCgroup]:
    layout = detect_layout()
    if layout.version == "none":
        pytest.skip("no cgroup hierarchy mounted: mount cgroup2 at /sys/fs/cgroup")
    with _made(layout) as cg:
        yield cg


def _join(cg: WorkloadCgroup, pid: int) -> None:
    for procs in cg.procs_files():
        procs.write_text(str(pid))


def test_limits_are_read_back(host_cgroup: WorkloadCgroup) -> None:
    host_cgroup.set_memory(96 << 20)
    assert host_cgroup.memory_limit() == 96 << 20
    host_cgroup.set_memory(32 << 20)  # shrinking: memsw must follow in the right order
    assert host_cgroup.memory_limit() == 32 << 20
    host_cgroup.set_memory(None)
    assert host_cgroup.memory_limit() is None
    host_cgroup.set_cpu(0.25, 50_000)
    assert host_cgroup.cpu_limit() == (0.25, 50_000)
    host_cgroup.set_cpu(None)
    assert host_cgroup.cpu_limit() == (None, 100_000)


def test_freeze_and_thaw_a_member(
    host_cgroup: WorkloadCgroup, sleeper: subprocess.Popen[bytes]
) -> None:
    _join(host_cgroup, sleeper.pid)
    assert host_cgroup.pids() == [sleeper.pid]
    host_cgroup.freeze()
    assert host_cgroup.frozen() is True
    host_cgroup.thaw()
    assert host_cgroup.frozen() is False


def test_v2_freezer_works_without_controllers(sleeper: subprocess.Popen[bytes]) -> None:
    # The cgroup2 core (membership, cgroup.freeze) needs no controller: a
    # hybrid host's empty unified hierarchy exercises the v2 code path.
    root = detect_layout().v2_root
    if root is None or not (root / "cgroup.procs").exists():
        pytest.skip("no cgroup2 hierarchy mounted")
    with _made(CgroupLayout("v2", v2_root=root)) as cg:
        _join(cg, sleeper.pid)
        cg.freeze()
        assert cg.frozen() is True
        cg.thaw()
        assert cg.frozen() is False
