"""TlsStorm against a real TLS listener (the Go ``tlssink``) run by LocalBackend:
achieved rate, early revert with a summary, the target dying mid-storm, and the
harness interrupted, hung or killed mid-storm."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.errors import MissingDependency
from harness.faults import Scope, TlsStorm
from harness.faults.storm import SERIES
from harness.gobuild import build
from harness.run import Run, clean_runs
from harness.wait import wait_until
from tests.integration.conftest import spawn_harness, wait_reaped

pytestmark = [pytest.mark.timeout(120)]

try:
    TLSSINK = str(build("tlssink"))
    build("tlsstorm")
except MissingDependency as _err:
    pytestmark.append(pytest.mark.skip(reason=f"Go targets cannot be built: {_err.fix}"))


def start_sink(backend: LocalBackend, name: str = "sink") -> str:
    """A tlssink workload; returns its host:port."""
    placement = backend.plan(name, ["tls"])
    addr = f"127.0.0.1:{placement.port('tls')}"
    spec = WorkloadSpec(
        name=name,
        command=(TLSSINK, "--addr", addr, "--duration", "120s"),
        placement=placement,
        readiness=Probe(ProbeKind.TCP, "tls", interval=0.05),
    )
    backend.start(spec)
    backend.wait_ready(name, timeout=15)
    return addr


@pytest.fixture(scope="module")
def env(state_dir: Path) -> Iterator[tuple[Scope, str]]:
    run = Run.open(state_dir, watchdog=False)
    backend = LocalBackend(run)
    try:
        yield Scope(run, backend), start_sink(backend)
    finally:
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


def test_the_asked_rate_is_reached(env: tuple[Scope, str]) -> None:
    scope, addr = env
    storm = TlsStorm(scope, addr, rate=300, concurrency=8, duration=3)
    with storm:
        summary = storm.wait(timeout=30)
    # Lower bound only: the rate is a ceiling (token bucket); 2 busy cores may lag it.
    assert summary["handshakes_per_s"] >= 150
    (inj,) = scope.run.timeline.events("fault.injected", storm.name)
    assert inj.detail["knobs"]["rate"] == 300
    assert storm.detail["handshakes_per_s"] == summary["handshakes_per_s"]
    assert len(scope.run.timeline.series(SERIES)) >= 2


def test_an_early_revert_stops_it_with_a_summary(env: tuple[Scope, str]) -> None:
    scope, addr = env
    storm = TlsStorm(scope, addr, rate=100, duration=60, name="long-storm")
    with storm:
        wait_until(lambda: storm.progress != [], timeout=10)
    assert not storm.running()
    assert cleanup.tagged_pids(scope.run.run_id, storm.workload) == []
    assert storm.detail["elapsed_s"] < 30
    assert storm.detail["handshakes"] > 0


def test_the_target_dying_mid_storm_neither_hangs_nor_leaks(env: tuple[Scope, str]) -> None:
    scope, _ = env
    assert scope.backend is not None
    addr = start_sink(scope.backend, "sink-doomed")  # type: ignore[arg-type]
    storm = TlsStorm(scope, addr, rate=100, duration=60, name="orphan-storm")
    with storm:
        # Running for a second (its signal handler is in place: it will print a summary).
        wait_until(lambda: storm.progress != [], timeout=10)
        scope.backend.kill("sink-doomed", signal.SIGKILL)
        wait_until(lambda: not scope.backend.status("sink-doomed").running, timeout=10)  # type: ignore[union-attr]
        # The storm goes on against the dead port, counting failed dials, until reverted.
        wait_until(lambda: storm.progress[-1]["errors"] > 0, timeout=10)
        assert storm.running()
    assert storm.detail["errors_total"] > 0
    assert cleanup.tagged_pids(scope.run.run_id, storm.workload) == []


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from harness.backends.base import Probe, ProbeKind, WorkloadSpec
    from harness.backends.local import LocalBackend
    from harness.faults import Scope, TlsStorm
    from harness.run import Run

    sink, max_duration = sys.argv[1], float(sys.argv[2])
    run = Run.open()
    backend = LocalBackend(run)
    try:
        p = backend.plan("sink", ["tls"])
        addr = f"127.0.0.1:{p.port('tls')}"
        backend.start(WorkloadSpec("sink", (sink, "--addr", addr, "--duration", "120s"), p,
                                   readiness=Probe(ProbeKind.TCP, "tls", interval=0.05)))
        backend.wait_ready("sink", timeout=15)
        storm = TlsStorm(Scope(run, backend), addr, rate=50, duration=60,
                         max_duration=max_duration)
        with storm:
            print(json.dumps({"run_id": run.run_id, "run_dir": str(run.dir),
                              "storm": storm.workload}), flush=True)
            time.sleep(60)
    finally:
        backend.close()
        print(json.dumps({"left": run.close()}), flush=True)
    """
)


def start_child(
    state_dir: Path, max_duration: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    child, info = spawn_harness(CHILD, TLSSINK, str(max_duration), state_dir=state_dir)
    assert cleanup.tagged_pids(info["run_id"], info["storm"]) != []
    return child, info


def test_sigint_stops_the_storm(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=60)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert {"left": []} in [json.loads(x) for x in out.splitlines()]
    assert cleanup.tagged_pids(info["run_id"]) == []


def test_a_hung_harness_has_its_storm_stopped_at_the_deadline(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=2)
    try:
        child.send_signal(signal.SIGSTOP)
        wait_until(
            lambda: cleanup.tagged_pids(info["run_id"], info["storm"]) == [],
            timeout=2 + 15,
            what="the watchdog stopping the storm",
        )
        assert cleanup.tagged_pids(info["run_id"], "sink") != [], "only the storm is reverted"
    finally:
        child.kill()
        child.wait()
    # The watchdog itself carries the run's tag until it has exited.
    wait_reaped(info, timeout=15, what="watchdog reaping")


def test_sigkill_is_reaped_by_the_watchdog_without_clean(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=5)
    child.kill()
    child.wait()
    wait_reaped(info, timeout=5 + 15, what="watchdog reaping")
    assert clean_runs(state_dir / "children") == []
