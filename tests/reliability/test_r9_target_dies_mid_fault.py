"""R9: a target that dies (or is restarted by its policy) mid-fault causes no hang and
no leftover.

For each fault type this machine can run, the target is SIGKILLed from outside
the harness while the fault is in place, with restart policy ``never`` (it
stays dead) and ``always`` (a new process appears under the fault). The
fault then reverts on leaving its ``with``; pytest-timeout bounds every case,
and afterwards the host is searched for anything of the run.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.backends.base import Probe, ProbeKind, RestartMode, RestartPolicy, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.faults import (
    CpuThrottle,
    Fault,
    MemoryLimit,
    Partition,
    ProcessKill,
    ProcessPause,
    Restart,
    Scope,
)
from harness.run import Run
from harness.wait import wait_until
from tests.reliability.conftest import leftovers, require_local

MAKERS: dict[str, Callable[[Scope], Fault]] = {
    "pause": lambda s: ProcessPause(s, "t", seconds=60),
    "cpu": lambda s: CpuThrottle(s, "t", cores=0.2, max_duration=60),
    "memory": lambda s: MemoryLimit(s, "t", bytes=64 << 20, max_duration=60),
    "partition": lambda s: Partition(s, "t", from_=["peer"], max_duration=60),
    "kill": lambda s: ProcessKill(s, "t", signal=signal.SIGSTOP, max_duration=60),
    "restart": lambda s: Restart(s, "t", max_duration=60),
}


def _kill_from_outside(backend: LocalBackend, name: str) -> None:
    pid = backend.pid(name)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # a frozen task dies of SIGKILL once thawed by the reaper
    wait_until(lambda: backend.pid(name) != pid, timeout=15, what=f"{name} gone or replaced")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", [RestartMode.NEVER, RestartMode.ALWAYS], ids=lambda m: m.value)
@pytest.mark.parametrize("fault", list(MAKERS))
def test_r9_target_killed_mid_fault(fault: str, policy: RestartMode, state_root: Path) -> None:
    require_local()
    run = Run.open()
    backend = LocalBackend(run)
    try:
        t = backend.plan("t", ["http"])
        backend.start(
            WorkloadSpec(
                "t",
                (sys.executable, "-m", "http.server", str(t.port("http")), "--bind", "127.0.0.1"),
                t,
                readiness=Probe(ProbeKind.TCP, "http", interval=0.05),
                restart=RestartPolicy(policy, backoff_initial=0.1),
            )
        )
        peer = backend.plan("peer", ["p"])
        backend.start(WorkloadSpec("peer", ("sleep", "600"), peer))
        backend.wait_ready("t", timeout=30)
        scope = Scope(run, backend, workloads=["t", "peer"])
        with MAKERS[fault](scope):
            if fault == "pause":
                # Frozen, it cannot die yet: it dies when the revert thaws it. No hang allowed.
                pid = backend.pid("t")
                assert pid is not None
                os.killpg(pid, signal.SIGKILL)
            else:
                _kill_from_outside(backend, "t")
        if fault == "pause":
            wait_until(lambda: backend.pid("t") != pid, timeout=15, what="t gone or replaced")
        if policy is RestartMode.ALWAYS:
            wait_until(lambda: backend.pid("t") is not None, timeout=15, what="t restarted")
    finally:
        backend.close()
        left = run.close()
    assert left == []
    assert not leftovers(run.run_id, state_root)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["cert", "storm"])
def test_r9_etcd_member_killed_mid_fault(fault: str, state_root: Path) -> None:
    require_local()
    from harness.components.etcd import EtcdCluster
    from harness.faults import CertFault, TlsStorm
    from harness.pki import Pki

    run = Run.open()
    backend = LocalBackend(run)
    try:
        with EtcdCluster(backend, run, Pki.create(run), size=1) as etcd:
            scope = Scope(run, backend, cluster=etcd)
            made: Fault = (
                CertFault(scope, "etcd-0", kind="expired", which="server", max_duration=60)
                if fault == "cert"
                else TlsStorm(scope, "etcd-0", rate=200, concurrency=4, duration=30)
            )
            why = made.available(backend)
            if why is not None:
                pytest.skip(why)
            with made:
                _kill_from_outside(backend, "etcd-0")
            # The cert fault's revert starts the member again; the storm's leaves it down.
            if fault == "cert":
                assert backend.status("etcd-0").running
    finally:
        backend.close()
        left = run.close()
    assert left == []
    assert not leftovers(run.run_id, state_root)


def _ignored_signals(pid: int) -> set[int]:
    """Signals ``pid`` ignores, from ``SigIgn`` in /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return set()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["kill", "restart"])
def test_r9_a_target_started_again_by_a_revert_still_stops_on_sigterm(
    fault: str, state_root: Path
) -> None:
    # A revert defers SIGINT/SIGTERM; a process it spawns must not inherit that,
    # or every later graceful stop of it waits out the timeout and SIGKILLs it.
    require_local()
    run = Run.open()
    backend = LocalBackend(run)
    try:
        t = backend.plan("t", [])
        backend.start(WorkloadSpec("t", ("sleep", "600"), t))
        wait_until(lambda: backend.pid("t") is not None, timeout=10)
        scope = Scope(run, backend, workloads=["t"])
        with MAKERS[fault](scope):
            if fault == "kill":
                _kill_from_outside(backend, "t")
        pid = backend.pid("t")
        assert pid is not None
        assert not {signal.SIGINT, signal.SIGTERM} & _ignored_signals(pid)
    finally:
        backend.close()
        left = run.close()
    assert left == []
    assert not leftovers(run.run_id, state_root)
