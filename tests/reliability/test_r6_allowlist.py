# ruff: noqa: E501 - the case table reads one case per line
"""R6: the allowlist is checked before any mutation.

Each case goes through a public API (faults, the load generator, the etcd
client, the safety checks, the inverse ops) against a target faultline must
not touch: PID 1, a foreign process, a process of another run, this very
pytest process, addresses outside loopback. Each must be refused with its
specific error, the run's ledger must stay empty (no ``do`` entry), and the
foreign processes must still be running and not stopped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cleanup, safety
from harness.backends.local import LocalBackend
from harness.components.toxiproxy import Proxy
from harness.errors import UnsafeTargetError
from harness.etcd_client import EtcdClient
from harness.faults import (
    BugSwitch,
    CpuThrottle,
    Latency,
    MemoryLimit,
    Partition,
    ProcessKill,
    ProcessPause,
    Restart,
    Scope,
    TlsStorm,
)
from harness.load import LoadGenerator
from harness.run import Run
from tests.reliability.conftest import require_local


@dataclass
class World:
    run: Run
    scope: Scope
    foreign: int  # an untagged process
    other: int  # a process tagged with another run's id
    me: int  # this pytest process


@pytest.fixture
def world(state_root: Path) -> Iterator[World]:
    require_local()
    foreign = subprocess.Popen(["sleep", "600"])
    other = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, cleanup.RUN_TAG: "20000101-000000-0ther0"}
    )
    run = Run.open(watchdog=False)
    backend = LocalBackend(run)
    try:
        yield World(run, Scope(run, backend), foreign.pid, other.pid, os.getpid())
    finally:
        backend.close()
        assert run.close() == []
        for p in (foreign, other):
            p.kill()
            p.wait()


def _proxy(api: str = "http://127.0.0.1:8474", upstream: str = "127.0.0.1:2379") -> Proxy:
    return Proxy(api=api, name="faultline-etcd", listen="127.0.0.1:1", upstream=upstream)


Case = Callable[[World], object]
UNSAFE = UnsafeTargetError
CASES: dict[str, tuple[Case, type[Exception], str]] = {
    "check_pid 1": (lambda w: safety.check_pid(1, w.run.run_id), UNSAFE, "never a valid"),
    "check_pid 0": (lambda w: safety.check_pid(0, w.run.run_id), UNSAFE, "never a valid"),
    "check_pid own pytest": (lambda w: safety.check_pid(w.me, w.run.run_id), UNSAFE, "not started"),
    "check_pid foreign": (lambda w: safety.check_pid(w.foreign, w.run.run_id), UNSAFE, "not started"),
    "check_pid other run": (lambda w: safety.check_pid(w.other, w.run.run_id), UNSAFE, "not started"),
    "kill pid 1": (lambda w: ProcessKill(w.scope, "pid:1").inject(), UNSAFE, "never a valid"),
    "kill own pytest": (lambda w: ProcessKill(w.scope, f"pid:{w.me}").inject(), UNSAFE, "not started"),
    "pause foreign": (
        lambda w: ProcessPause(w.scope, f"pid:{w.foreign}", seconds=5).inject(), UNSAFE, "not started"),
    "restart other run": (lambda w: Restart(w.scope, f"pid:{w.other}").inject(), UNSAFE, "not started"),
    "cpu throttle pid 1": (
        lambda w: CpuThrottle(w.scope, "pid:1", cores=0.1, max_duration=5).inject(), UNSAFE, "never"),
    "memory limit own pytest": (
        lambda w: MemoryLimit(w.scope, f"pid:{w.me}", bytes=1 << 26, max_duration=5).inject(),
        UNSAFE, "not started"),
    "partition foreign": (
        lambda w: Partition(w.scope, f"pid:{w.foreign}", from_=["x"], max_duration=5).inject(),
        UNSAFE, "not started"),
    "storm 10/8": (
        lambda w: TlsStorm(w.scope, "10.1.2.3:2379", rate=10, duration=1).inject(), UNSAFE, "outside"),
    "storm metadata address": (
        lambda w: TlsStorm(w.scope, "169.254.169.254:443", rate=10, duration=1).inject(),
        UNSAFE, "outside"),
    "storm ipv6 documentation": (
        lambda w: TlsStorm(w.scope, "[2001:db8::1]:443", rate=10, duration=1).inject(),
        UNSAFE, "outside"),
    "storm 0.0.0.0": (
        lambda w: TlsStorm(w.scope, "0.0.0.0:2379", rate=10, duration=1).inject(), UNSAFE, "outside"),
    "bug switch remote admin": (
        lambda w: BugSwitch(w.scope, "http://192.0.2.10:8081", "map_race", max_duration=5).inject(),
        UNSAFE, "outside"),
    "toxic remote upstream": (
        lambda w: Latency(w.scope, _proxy(upstream="198.51.100.7:2379"), ms=100, max_duration=5
                          ).inject(), UNSAFE, "outside"),
    "toxic remote api": (
        lambda w: Latency(w.scope, _proxy(api="http://203.0.113.5:8474"), ms=100, max_duration=5
                          ).inject(), UNSAFE, "outside"),
    "load remote url": (
        lambda w: LoadGenerator(w.run, locustfile="etcd_kv", host="http://198.51.100.7:2379",
                                rate=1, duration=1), UNSAFE, "outside"),
    "load remote hostport": (
        lambda w: LoadGenerator(w.run, locustfile="etcd_kv", host="10.0.0.1:2379", rate=1,
                                duration=1), UNSAFE, "outside"),
    "etcd client remote": (lambda w: EtcdClient(["https://10.0.0.5:2379"]), UNSAFE, "outside"),
    "etcd client one remote of two": (
        lambda w: EtcdClient(["https://127.0.0.1:2379", "https://203.0.113.9:2379"]),
        UNSAFE, "outside"),
    "inverse: host cgroup file": (
        lambda w: cleanup.run_inverse(
            {"op": "write_file", "path": "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "value": "1000"}),
        ValueError, "refusing"),
    "inverse: host chain": (
        lambda w: cleanup.run_inverse(
            {"op": "remove_iptables_chain", "chain": "INPUT", "parents": []}), ValueError, "refusing"),
    "inverse: host netns": (
        lambda w: cleanup.run_inverse({"op": "remove_netns", "name": "default"}),
        ValueError, "refusing"),
    "inverse: host cgroup": (
        lambda w: cleanup.run_inverse(
            {"op": "remove_cgroup", "paths": ["/sys/fs/cgroup/cpu/system.slice"]}),
        ValueError, "refusing"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_r6_refused_before_any_mutation(case: str, world: World) -> None:
    fn, error, words = CASES[case]
    with pytest.raises(error, match=words) as info:
        fn(world)
    if isinstance(info.value, UnsafeTargetError):
        assert info.value.field, "the refusal must name the field"
    assert world.run.ledger.entries() == [], "a refused target left an entry in the ledger"
    for pid in (world.foreign, world.other):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state in ("S", "R"), f"pid {pid} is in state {state}"


def test_r6_there_are_at_least_20_cases() -> None:
    assert len(CASES) >= 20
