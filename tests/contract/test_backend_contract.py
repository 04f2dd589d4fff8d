"""The backend compliance suite: every backend must pass these with real processes.

Every workload is a mode of ``go_targets/cmd/workload`` (fixture ``wl``), so the
commands are identical on every backend. Files a workload writes go under the
run directory, which every backend shows to the workload at the same path.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.backends.base import (
    Backend,
    Probe,
    ProbeKind,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
)
from harness.errors import ComponentStartError, ConfigError
from harness.faults.base import Scope
from harness.faults.process import CpuThrottle, MemoryLimit
from harness.run import Run, clean_runs
from harness.wait import wait_until
from tests.contract.conftest import BACKENDS, leftovers

PY = sys.executable

# Whether isolate(name, peers) also cuts ``name`` off from workloads not in ``peers``.
# Docker can only disconnect a container from the run's network, so from every peer.
CUTS_EVERY_PEER = {"local": False, "docker": True, "kubernetes": False}
# The least waits before restarts 1, 2, 3 of a backend that applies its own doubling backoff
# instead of RestartPolicy.backoff_initial/backoff_max (None: the policy's are honoured).
# Kubelet's CrashLoopBackOff restarts at once the first time, then after 10 s, 20 s...
OWN_BACKOFF: dict[str, tuple[float, float, float] | None] = {
    "local": None,
    "docker": (0.1, 0.2, 0.4),
    "kubernetes": (0.0, 10.0, 20.0),
}


@pytest.fixture
def wl(workload_bin: str) -> str:
    return workload_bin


def start(
    backend: Backend, name: str, command: Sequence[str], ports: Sequence[str] = (), **kw: Any
) -> WorkloadSpec:
    placement = backend.plan(name, ports)
    spec = WorkloadSpec(name=name, command=tuple(command), placement=placement, **kw)
    backend.start(spec)
    return spec


def log_lines(backend: Backend, name: str) -> list[str]:
    text = backend.log_path(name).read_text(errors="replace")
    return [line for line in text.splitlines() if not line.startswith("[faultline")]


def read_counter(path: Path) -> int:
    """The value ``workload counter`` last wrote; -1 before its first write."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return -1


def test_start_and_stop(backend: Backend, wl: str) -> None:
    start(backend, "graceful", [wl, "sleep"])
    assert backend.status("graceful").running
    wait_until(lambda: "up" in log_lines(backend, "graceful"), timeout=10)
    backend.stop("graceful", timeout=5)
    st = backend.status("graceful")
    assert not st.running
    assert st.exit_code == 0
    wait_until(lambda: "got TERM" in log_lines(backend, "graceful"), timeout=5)
    backend.stop("graceful")  # idempotent


def test_stop_escalates_to_sigkill(backend: Backend, wl: str) -> None:
    start(backend, "stubborn", [wl, "sleep", "-ignore-term", "-banner", "ignoring"])
    wait_until(lambda: "ignoring" in log_lines(backend, "stubborn"), timeout=10)
    backend.stop("stubborn", timeout=0.5)
    assert backend.status("stubborn").exit_code == 128 + signal.SIGKILL


def test_kill_is_an_exit_under_the_policy(backend: Backend, wl: str) -> None:
    start(backend, "victim", [wl, "sleep"])
    backend.kill("victim", signal.SIGKILL)
    # An exit is settled once its code is known (running may turn False a moment before).
    wait_until(lambda: backend.status("victim").exit_code is not None, timeout=5)
    st = backend.status("victim")
    assert st.exit_code == 137
    assert not st.oom_killed
    assert st.restarts == 0


def test_kill_of_a_paused_workload_signals_then_thaws(backend: Backend, wl: str) -> None:
    start(backend, "frozen", [wl, "sleep"])
    wait_until(lambda: "up" in log_lines(backend, "frozen"), timeout=10)
    backend.pause("frozen")
    backend.kill("frozen", signal.SIGTERM)
    wait_until(lambda: backend.status("frozen").exit_code is not None, timeout=10, what="exit")
    st = backend.status("frozen")
    assert not st.paused
    assert st.exit_code == 0  # the TERM handler ran: the signal reached a thawed process
    wait_until(lambda: "got TERM" in log_lines(backend, "frozen"), timeout=5)


def test_exited_workload_cannot_be_paused_and_kill_is_a_no_op(backend: Backend, wl: str) -> None:
    start(backend, "done", [wl, "crash", "0s", "0"])
    wait_until(lambda: backend.status("done").exit_code == 0, timeout=10)
    with pytest.raises(ConfigError, match="done"):
        backend.pause("done")
    backend.kill("done", signal.SIGKILL)
    st = backend.status("done")
    assert (st.running, st.paused, st.exit_code) == (False, False, 0)


def test_pause_stops_progress_and_resume_restores_it(backend: Backend, wl: str, run: Run) -> None:
    counter = run.subdir("work") / "counter"
    start(backend, "counter", [wl, "counter", str(counter)])
    wait_until(lambda: read_counter(counter) >= 2, timeout=10, what="counting")
    backend.pause("counter")
    assert backend.status("counter").paused
    frozen_at = read_counter(counter)
    time.sleep(0.6)  # twelve counter periods: a running counter would have moved
    assert read_counter(counter) == frozen_at
    backend.resume("counter")
    assert not backend.status("counter").paused
    wait_until(lambda: read_counter(counter) > frozen_at + 2, timeout=5, what="counting again")


def test_cpu_quota_throttles_a_busy_loop(backend: Backend, wl: str) -> None:
    start(backend, "spinner", [wl, "busy"])
    backend.set_limits("spinner", cpu=0.1, cpu_period_us=100_000)
    before = backend.stats("spinner").throttled_periods
    wait_until(lambda: backend.stats("spinner").throttled_periods >= before + 5, timeout=10)
    st = backend.stats("spinner")
    assert st.throttled_seconds > 0
    assert st.cpu_seconds > 0


def test_a_cpu_throttle_of_its_own_period_throttles_and_is_reverted(
    backend: Backend, wl: str, run: Run
) -> None:
    start(backend, "spinner", [wl, "busy"])
    scope = Scope(run, backend, workloads=["spinner"])
    # 0.1 core per 1 s: 100 ms of CPU, then a 900 ms stall, once a second.
    throttle = CpuThrottle(scope, "spinner", cores=0.1, period_us=1_000_000, max_duration=30)
    with throttle:
        time.sleep(1.0)  # past the first period
        before, periods = backend.stats("spinner"), throttle.throttled_periods()["spinner"]
        time.sleep(2.0)
        after = backend.stats("spinner")
        used = after.cpu_seconds - before.cpu_seconds
        throttled = throttle.throttled_periods()["spinner"] - periods
    # Two 1 s periods: at most 0.1 s each (plus the edges of the window); a
    # 100 ms period would be throttled ~20 times in 2 s, this one 1 to 3 times.
    assert used <= 0.35, f"{used:.3f} s of CPU in 2 s under 0.1 core per 1 s"
    assert 1 <= throttled <= 4, f"{throttled} throttled periods in 2 s"
    # Leaving the block reverted the throttle and verified the saved limits are back.


def test_the_ledger_inverse_of_container_limits_restores_them(
    backend: Backend, wl: str, run: Run
) -> None:
    if backend.name == "local":
        pytest.skip("local limits are cgroup files written back (write_file): nothing to check")
    start(backend, "holder", [wl, "sleep"], memory_limit=256 << 20, cpu_limit=0.5)
    scope = Scope(run, backend, workloads=["holder"])
    throttle = CpuThrottle(scope, "holder", cores=0.2, period_us=200_000, max_duration=30)
    squeeze = MemoryLimit(scope, "holder", bytes=64 << 20, max_duration=30)
    with throttle, squeeze:
        assert backend.stats("holder").memory_limit == 64 << 20
        # What `faultline clean` runs after a SIGKILL: the faults' ledger inverses alone.
        steps = [e for e in run.ledger.pending() if e.action.endswith(": limits of holder")]
        assert len(steps) == 2
        for entry in reversed(steps):
            assert run.ledger.revert(entry.seq)
        limits = getattr(backend, "limits")  # noqa: B009 - container backends only
        # Kubelet applies a resize on its own time: what the cgroup shows is waited for.
        wait_until(lambda: limits("holder") == (0.5, 100_000, 256 << 20), timeout=30)


def test_memory_limit_is_read_back(backend: Backend, wl: str) -> None:
    start(backend, "holder", [wl, "sleep"], memory_limit=256 << 20)
    assert backend.stats("holder").memory_limit == 256 << 20
    backend.set_limits("holder", memory=64 << 20)
    assert backend.stats("holder").memory_limit == 64 << 20
    backend.set_limits("holder", memory=None)
    assert backend.stats("holder").memory_limit is None


def test_oom_kill_under_a_small_limit(backend: Backend, wl: str) -> None:
    # The OOM-killed process is the workload's main process (a container's PID 1).
    start(backend, "hog", [wl, "alloc", "200"], memory_limit=50 << 20)
    wait_until(lambda: backend.status("hog").exit_code is not None, timeout=20, what="OOM kill")
    st = backend.status("hog")
    assert st.oom_killed
    assert st.exit_code == 128 + signal.SIGKILL
    assert st.oom_kills >= 1
    assert not any(line.startswith("survived") for line in log_lines(backend, "hog"))


def test_crash_loop_backs_off_and_respects_max_restarts(backend: Backend, wl: str) -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.3, max_restarts=3)
    start(backend, "crasher", [wl, "crash", "0s"], restart=policy)
    own = OWN_BACKOFF[backend.name]
    wait_until(
        lambda: backend.status("crasher").restarts == 3 and not backend.status("crasher").running,
        timeout=20 + (sum(own) if own else 0),
        what="three restarts",
    )
    time.sleep(3.0)  # longer than the next backoff (2.4 s): no fourth restart may come
    st = backend.status("crasher")
    assert st.restarts == 3
    assert not st.running
    assert st.exit_code == 3
    starts = [float(x) for x in log_lines(backend, "crasher")]
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    if own is None:
        assert gaps[0] < gaps[1] < gaps[2], gaps  # 0.3, 0.6, 1.2 s: the policy's own
    else:
        # The engine's doubling backoff; its steps are small next to the time a start
        # takes on a loaded machine, so only the lower bounds are a contract.
        assert all(g >= least for g, least in zip(gaps, own, strict=True)), gaps


def test_on_failure_does_not_restart_a_clean_exit(backend: Backend, wl: str) -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.1)
    start(backend, "oneshot", [wl, "crash", "0s", "0"], restart=policy)
    wait_until(lambda: backend.status("oneshot").exit_code == 0, timeout=5)
    time.sleep(0.5)  # five backoffs: a wrong restart would have happened by now
    assert backend.status("oneshot").restarts == 0


def test_failing_liveness_probe_restarts(backend: Backend, wl: str) -> None:
    # Nothing ever listens on the probed port.
    probe = Probe(ProbeKind.TCP, "health", interval=0.2, timeout=0.2, failure_threshold=2)
    policy = RestartPolicy(RestartMode.ALWAYS, backoff_initial=0.2)
    start(backend, "zombie", [wl, "sleep"], ["health"], liveness=probe, restart=policy)
    wait_until(lambda: backend.status("zombie").restarts >= 1, timeout=15, what="a restart")
    assert backend.status("zombie").healthy is not True


def test_http_readiness_and_liveness_probes(backend: Backend, wl: str, run: Run) -> None:
    sick = run.subdir("work") / "web-sick"
    placement = backend.plan("web", ["http"])
    port = str(placement.port("http"))
    command = (wl, "http", "-bind", placement.bind_host, "-health-file", str(sick), port)
    backend.start(
        WorkloadSpec(
            "web",
            command,
            placement,
            readiness=Probe(ProbeKind.HTTP, "http", interval=0.2),
            liveness=Probe(ProbeKind.HTTP, "http", path="/healthz", interval=0.2),
            restart=RestartPolicy(RestartMode.ALWAYS, backoff_initial=0.2),
        )
    )
    backend.wait_ready("web", timeout=15)
    wait_until(lambda: backend.status("web").healthy is True, timeout=5)
    sick.touch()  # /healthz now answers 503: the liveness probe must act on it
    wait_until(lambda: backend.status("web").restarts >= 1, timeout=15, what="a restart")
    sick.unlink()
    wait_until(lambda: backend.status("web").healthy is True, timeout=15, what="healthy again")


def test_wait_ready_timeout_carries_the_log_tail(backend: Backend, wl: str) -> None:
    probe = Probe(ProbeKind.TCP, "port", interval=0.1)
    start(backend, "never", [wl, "sleep", "-banner", "booting-marker"], ["port"], readiness=probe)
    wait_until(lambda: "booting-marker" in log_lines(backend, "never"), timeout=10)
    with pytest.raises(ComponentStartError) as info:
        backend.wait_ready("never", timeout=0.5)
    assert any("booting-marker" in note for note in info.value.__notes__)


def test_restart_is_counted(backend: Backend, wl: str) -> None:
    start(backend, "again", [wl, "sleep"])
    backend.restart("again")
    st = backend.status("again")
    assert st.running
    assert st.restarts == 1


def _last(backend: Backend, name: str, n: int) -> list[str]:
    return log_lines(backend, name)[-n:]


def _flows(backend: Backend, client: str) -> bool:
    return _last(backend, client, 2) == ["ok"] * 2


def test_isolate_cuts_traffic_and_heal_restores_it(backend: Backend, wl: str) -> None:
    placement = backend.plan("server", ["http"])
    port = str(placement.port("http"))
    backend.start(
        WorkloadSpec(
            "server",
            (wl, "http", "-bind", placement.bind_host, port),
            placement,
            readiness=Probe(ProbeKind.TCP, "http", interval=0.1),
        )
    )
    backend.wait_ready("server", timeout=15)
    for client in ("client", "bystander"):
        start(backend, client, [wl, "connect", placement.internal("http")])
    for client in ("client", "bystander"):
        wait_until(functools.partial(_flows, backend, client), timeout=15, what="traffic")
    backend.isolate("server", ["client"])
    wait_until(lambda: _last(backend, "client", 3) == ["fail"] * 3, timeout=10, what="cut")
    # The published port stays reachable from the harness on every backend.
    assert answers_http(placement.external("http"))
    if CUTS_EVERY_PEER[backend.name]:
        wait_until(lambda: _last(backend, "bystander", 3) == ["fail"] * 3, timeout=10)
    else:
        seen = len(log_lines(backend, "bystander"))
        wait_until(lambda: len(log_lines(backend, "bystander")) >= seen + 3, timeout=10)
        assert _last(backend, "bystander", 3) == ["ok"] * 3
    backend.heal("server")
    for client in ("client", "bystander"):
        wait_until(functools.partial(_flows, backend, client), timeout=10, what="healed")


def answers_http(address: tuple[str, int]) -> bool:
    host, port = address
    return httpx.get(f"http://{host}:{port}/", timeout=5).status_code == 200


def test_unknown_names_are_config_errors(backend: Backend, wl: str) -> None:
    start(backend, "known", [wl, "sleep"])
    calls: dict[str, Callable[[], object]] = {
        "stop": lambda: backend.stop("ghost"),
        "kill": lambda: backend.kill("ghost"),
        "pause": lambda: backend.pause("ghost"),
        "resume": lambda: backend.resume("ghost"),
        "restart": lambda: backend.restart("ghost"),
        "status": lambda: backend.status("ghost"),
        "stats": lambda: backend.stats("ghost"),
        "set_limits": lambda: backend.set_limits("ghost", cpu=1),
        "isolate": lambda: backend.isolate("ghost", ["known"]),
        "isolate peer": lambda: backend.isolate("known", ["ghost"]),
        "heal": lambda: backend.heal("ghost"),
        "log_path": lambda: backend.log_path("ghost"),
        "wait_ready": lambda: backend.wait_ready("ghost", 1),
    }
    accepted = []
    for what, call in calls.items():
        try:
            call()
        except ConfigError as err:
            assert "ghost" in str(err), what
        else:
            accepted.append(what)
    assert accepted == []
    assert not backend.status("known").paused  # a refused call changed nothing


def test_close_leaves_nothing_behind(backend: Backend, run: Run, wl: str) -> None:
    counter = run.subdir("work") / "counter"
    start(backend, "a", [wl, "counter", str(counter)], ["p"], memory_limit=128 << 20)
    start(backend, "b", [wl, "sleep"], ["p"], cpu_limit=0.5)
    backend.pause("a")
    backend.isolate("b", ["a"])
    assert leftovers(run.run_id)  # the check sees what is there
    backend.close()
    backend.close()  # idempotent
    assert [e.action for e in run.ledger.pending()] == []
    assert leftovers(run.run_id, but_watchdog=True) == []
    assert run.close() == []
    assert not run.dir.exists()


OWNER = textwrap.dedent(
    """
    import sys
    from harness.backends.base import WorkloadSpec
    from harness.run import Run
    from tests.contract.conftest import make_backend

    run = Run.open(watchdog=False)  # so that clean, not the watchdog, does the reaping
    backend = make_backend(sys.argv[1], run)
    for name in ("one", "two"):
        p = backend.plan(name, ["port"])
        backend.start(WorkloadSpec(name, (sys.argv[2], "sleep"), p, memory_limit=64 << 20))
    backend.pause("one")
    backend.isolate("one", ["two"])
    print(run.run_id, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.parametrize("name", BACKENDS)
def test_sigkilled_owner_is_reaped_by_clean(name: str, state_dir: Path, wl: str) -> None:
    if name == "local" and os.geteuid() != 0:
        pytest.skip("the local backend contract needs root (cgroups, iptables): run as root")
    root = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [PY, "-c", OWNER, name, wl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert owner.stdout is not None
        run_id = owner.stdout.readline().strip()
        if not run_id:
            owner.wait(30)
            assert owner.stderr is not None
            err = owner.stderr.read()
            if "Skipped" in err:
                pytest.skip(err.strip().splitlines()[-1])
            pytest.fail(f"owner did not start: {err}")
        assert leftovers(run_id)
    finally:
        owner.kill()
        owner.wait()
    reports = clean_runs(state_dir)
    assert [(r.run_id, r.errors) for r in reports] == [(run_id, [])]
    assert leftovers(run_id) == []
    assert not (state_dir / "runs" / f"faultline-{run_id}").exists()
    assert list((state_dir / "ports").glob("*.lock")) == []
    assert clean_runs(state_dir) == []


def test_every_backend_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name in BACKENDS
