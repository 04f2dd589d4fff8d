"""Process faults through LocalBackend on real processes and real cgroups:
CPU throttle, memory limit (OOM), pause, kill, restart; each reverted and verified,
also when the target dies mid-fault and when the harness is interrupted or killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends.base import RestartMode, RestartPolicy, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.faults import (
    CpuThrottle,
    MemoryLimit,
    Partition,
    ProcessKill,
    ProcessPause,
    Restart,
    Scope,
)
from harness.faults.process import workload_cgroup_dirs
from harness.run import Run, clean_runs
from harness.wait import wait_until
from tests.integration.conftest import spawn_harness, wait_reaped

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroup faults need root: run as root"),
    pytest.mark.skipif(
        not Path("/sys/fs/cgroup/cpu").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        reason="no cgroup hierarchy mounted at /sys/fs/cgroup",
    ),
]

# Bounded in time: every workload stops by itself even if nothing else stops it.
SPIN = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
SLEEP = "import time; time.sleep(60)"
# Grows 1 MiB every 10 ms up to 400 MiB (about 4 s), then idles: a limit below that OOMs it.
HOG = (
    "import time\nblocks = []\nfor _ in range(400):\n"
    "    blocks.append(bytearray(1 << 20)); time.sleep(0.01)\ntime.sleep(60)"
)


@pytest.fixture(scope="module")
def env(state_dir: Path) -> Iterator[tuple[Run, LocalBackend]]:
    run = Run.open(state_dir, watchdog=False)
    backend = LocalBackend(run)
    try:
        yield run, backend
    finally:
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


def start(
    backend: LocalBackend,
    name: str,
    code: str,
    policy: RestartMode = RestartMode.NEVER,
    ports: tuple[str, ...] | list[str] = (),
) -> str:
    placement = backend.plan(name, list(ports))
    spec = WorkloadSpec(
        name=name,
        command=(sys.executable, "-c", code),
        placement=placement,
        restart=RestartPolicy(mode=policy, backoff_initial=0.1),
    )
    backend.start(spec)
    cg = backend.cgroup(name)
    assert cg is not None
    # start() returns before the wrapper shell has joined the cgroup and exec'd.
    wait_until(lambda: cg.pids() != [], timeout=10, what=f"{name} in its cgroup")
    return name


def cpu_files(backend: LocalBackend, name: str) -> dict[str, str]:
    dirs = workload_cgroup_dirs(backend, name)
    if "v2" in dirs:
        return {"cpu.max": (dirs["v2"] / "cpu.max").read_text().strip()}
    return {
        f: (dirs["cpu"] / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us")
    }


def frozen(run: Run, name: str) -> bool:
    from harness.faults.process import _stopped_or_frozen

    return any(_stopped_or_frozen(p) for p in cleanup.tagged_pids(run.run_id, name))


def test_cpu_throttle_raises_throttled_periods_and_is_restored(
    env: tuple[Run, LocalBackend],
) -> None:
    run, backend = env
    name = start(backend, "spin", SPIN)
    try:
        before = cpu_files(backend, name)
        with CpuThrottle(
            Scope(run, backend, workloads=[name]), name, cores=0.05, max_duration=30
        ) as f:
            assert cpu_files(backend, name) != before
            wait_until(lambda: f.throttled_periods()[name] > 5, timeout=10, what="throttling")
        assert cpu_files(backend, name) == before
        (rev,) = run.timeline.events("fault.reverted", "cpu_throttle")
        assert rev.detail["throttled_periods"][name] > 5
    finally:
        backend.stop(name)


def test_cpu_throttle_survives_the_target_dying(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    name = start(backend, "spin-dies", SPIN)
    before = cpu_files(backend, name)
    fault = CpuThrottle(
        Scope(run, backend, workloads=[name]), name, cores=0.1, max_duration=30
    ).inject()
    backend.kill(name, signal.SIGKILL)
    wait_until(lambda: not backend.status(name).running, timeout=10)
    fault.revert()
    assert cpu_files(backend, name) == before


def test_memory_limit_oom_kills_and_is_restored(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    name = start(backend, "hog", HOG)
    mem = workload_cgroup_dirs(backend, name)
    limit_file = (
        mem["v2"] / "memory.max" if "v2" in mem else mem["memory"] / "memory.limit_in_bytes"
    )
    before = limit_file.read_text()
    with MemoryLimit(
        Scope(run, backend, workloads=[name]), name, bytes=48 << 20, max_duration=30
    ) as f:
        wait_until(lambda: f.oom_kills()[name] >= 1, timeout=15, what="an OOM kill")
        # The supervisor records the exit (and recognises the OOM kill) shortly after.
        wait_until(lambda: backend.status(name).exit_code is not None, timeout=10)
        assert backend.status(name).oom_killed
    # The target died mid-fault: revert still restores the cgroup's limit, without hanging.
    assert limit_file.read_text() == before
    (rev,) = run.timeline.events("fault.reverted", "memory_limit")
    assert rev.detail["oom_kills"][name] >= 1


def test_pause_freezes_and_resume_thaws(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    name = start(backend, "sleeper", SLEEP)
    try:
        with ProcessPause(Scope(run, backend, workloads=[name]), name, seconds=30):
            assert frozen(run, name)
            assert backend.status(name).paused
        assert not frozen(run, name)
        assert not backend.status(name).paused
    finally:
        backend.stop(name)


def test_a_paused_target_killed_mid_fault_does_not_hang(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    name = start(backend, "sleeper-dies", SLEEP)
    fault = ProcessPause(Scope(run, backend, workloads=[name]), name, seconds=30).inject()
    backend.kill(name, signal.SIGKILL)  # pending until thawed
    fault.revert()
    wait_until(lambda: not backend.status(name).running, timeout=10, what="the kill landing")
    assert cleanup.tagged_pids(run.run_id, name) == []


def test_kill_then_revert_starts_the_target_again(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    name = start(backend, "victim", SLEEP)
    try:
        old = cleanup.tagged_pids(run.run_id, name)
        with ProcessKill(Scope(run, backend, workloads=[name]), name) as f:
            wait_until(lambda: not backend.status(name).running, timeout=10)
            assert f.detail["killed_pids"] == old
        assert backend.status(name).running
        assert cleanup.tagged_pids(run.run_id, name) != old
        with Restart(Scope(run, backend), f"pid:{cleanup.tagged_pids(run.run_id, name)[0]}"):
            pass
        assert backend.status(name).restarts >= 2
        assert backend.status(name).running
    finally:
        backend.stop(name)


def test_a_partitioned_target_dying_mid_fault_leaves_no_rule(env: tuple[Run, LocalBackend]) -> None:
    run, backend = env
    a = start(backend, "island", SLEEP, ports=["p"])
    b = start(backend, "mainland", SLEEP, ports=["p"])
    try:
        fault = Partition(Scope(run, backend, workloads=[a, b]), a, from_=[b], max_duration=30)
        fault.inject()
        (chain,) = fault._chains
        assert chain_present(chain)
        backend.kill(a, signal.SIGKILL)
        wait_until(lambda: backend.status(a).exit_code is not None, timeout=10)
        fault.revert()  # no hang; a dead target is no partition left behind
        assert not chain_present(chain)
    finally:
        backend.stop(b)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from harness.backends.base import WorkloadSpec
    from harness.backends.local import LocalBackend
    from harness.faults import CpuThrottle, MemoryLimit, Partition, ProcessPause, Scope
    from harness.faults.process import workload_cgroup_dirs
    from harness.run import Run
    from harness.wait import wait_until

    kind, code, max_duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
    run = Run.open()
    backend = LocalBackend(run)
    try:
        for name in ("a", "b"):
            spec = WorkloadSpec(name, (sys.executable, "-c", code), backend.plan(name, ["p"]))
            backend.start(spec)
            wait_until(lambda: backend.cgroup(name).pids() != [], timeout=10)
        d = workload_cgroup_dirs(backend, "a")
        v2 = "v2" in d
        scope = Scope(run, backend, workloads=["a", "b"])
        if kind == "cpu":
            probe = {"file": str(d["v2"] / "cpu.max" if v2 else d["cpu"] / "cpu.cfs_quota_us")}
            fault = CpuThrottle(scope, "a", cores=0.05, max_duration=max_duration)
        elif kind == "memory":
            f = d["v2"] / "memory.max" if v2 else d["memory"] / "memory.limit_in_bytes"
            probe = {"file": str(f)}
            fault = MemoryLimit(scope, "a", bytes=256 << 20, max_duration=max_duration)
        elif kind == "pause":
            f = d["v2"] / "cgroup.freeze" if v2 else d["freezer"] / "freezer.state"
            probe = {"file": str(f)}
            fault = ProcessPause(scope, "a", seconds=max_duration)
        else:
            probe = {}
            fault = Partition(scope, "a", from_=["b"], max_duration=max_duration)
        if "file" in probe:
            probe["before"] = open(probe["file"]).read()
        with fault:
            if kind == "partition":
                probe["chain"] = fault._chains[0]
            print(json.dumps({**probe, "run_dir": str(run.dir), "run_id": run.run_id}), flush=True)
            time.sleep(60)
    finally:
        after = open(probe["file"]).read() if "file" in probe else None
        print(json.dumps({"after_revert": after}), flush=True)
        backend.close()
        print(json.dumps({"left": run.close()}), flush=True)
    """
)

KINDS = ["cpu", "memory", "pause", "partition"]


def chain_present(chain: str) -> bool:
    res = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, check=False)
    return res.returncode == 0


def in_place(info: dict[str, str]) -> bool:
    """Whether the child's fault is still in effect, probed on the real state."""
    if "chain" in info:
        return chain_present(info["chain"])
    try:
        return Path(info["file"]).read_text() != info["before"]
    except FileNotFoundError:
        return False  # the cgroup is gone with the run, and its limits with it


def start_child(
    state_dir: Path, kind: str, max_duration: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    child, info = spawn_harness(
        CHILD, kind, SPIN if kind == "cpu" else SLEEP, str(max_duration), state_dir=state_dir
    )
    assert in_place(info)
    return child, info


@pytest.mark.parametrize("kind", KINDS)
def test_sigint_reverts(state_dir: Path, kind: str) -> None:
    child, info = start_child(state_dir, kind, max_duration=60)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    lines = [json.loads(x) for x in out.splitlines()]
    if "file" in info:
        assert {"after_revert": info["before"]} in lines
    assert {"left": []} in lines
    assert not in_place(info)
    assert cleanup.tagged_pids(info["run_id"]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_hung_harness_is_reverted_at_the_deadline(state_dir: Path, kind: str) -> None:
    child, info = start_child(state_dir, kind, max_duration=2)
    try:
        child.send_signal(signal.SIGSTOP)
        # The workloads live on (the harness is only stopped): the watchdog reverts the fault.
        wait_until(lambda: not in_place(info), timeout=2 + 15, what="the watchdog's revert")
        assert cleanup.tagged_pids(info["run_id"], "a") != []
    finally:
        child.kill()
        child.wait()
    # The watchdog itself carries the run's tag until it has exited.
    wait_reaped(info, timeout=15, what="watchdog reaping")


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_is_reaped_by_the_watchdog_without_clean(state_dir: Path, kind: str) -> None:
    child, info = start_child(state_dir, kind, max_duration=5)
    child.kill()
    child.wait()
    wait_reaped(info, timeout=5 + 15, what="watchdog reaping")
    if "chain" in info:
        assert not chain_present(info["chain"])
    else:
        assert not Path(info["file"]).exists(), "the run's cgroups are removed"
    assert clean_runs(state_dir / "children") == []
