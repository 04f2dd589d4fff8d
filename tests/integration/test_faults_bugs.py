"""BugSwitch against the real orderd (in-memory store) run by LocalBackend."""

from __future__ import annotations

import inspect
import json
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import cleanup
from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.errors import ConfigError, MissingDependency
from harness.faults import BugSwitch, Scope
from harness.gobuild import build
from harness.run import Run, clean_runs
from harness.wait import wait_until
from tests.integration.conftest import spawn_harness, wait_reaped

pytestmark = [pytest.mark.timeout(120)]

try:
    ORDERD = str(build("orderd"))
except MissingDependency as _err:
    pytestmark.append(pytest.mark.skip(reason=f"orderd cannot be built: {_err.fix}"))


def start_orderd(backend: LocalBackend, name: str) -> str:
    """Start orderd (in-memory store) on planned ports; return its admin URL.

    Self-contained (module globals: ORDERD and the spec classes): the child
    harness below runs its source too.
    """
    p = backend.plan(name, ["http", "grpc", "admin"])
    args = [f"--{port}-addr=127.0.0.1:{p.port(port)}" for port in ("http", "grpc", "admin")]
    readiness = Probe(ProbeKind.HTTP, "admin", path="/bugs", interval=0.05)
    spec = WorkloadSpec(name, (ORDERD, *args, "--log-level=warn"), p, readiness=readiness)
    backend.start(spec)
    backend.wait_ready(name, timeout=20)
    return p.external_url("admin")


def enabled(admin: str, bug: str) -> bool:
    return bool(httpx.get(f"{admin}/bugs", timeout=5).json()[bug]["enabled"])


@pytest.fixture(scope="module")
def env(state_dir: Path) -> Iterator[tuple[Scope, str]]:
    run = Run.open(state_dir, watchdog=False)
    backend = LocalBackend(run)
    try:
        admin = start_orderd(backend, "orderd")
        yield Scope(run, backend), admin
    finally:
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


def test_switch_on_then_off(env: tuple[Scope, str]) -> None:
    scope, admin = env
    with BugSwitch(scope, admin, "memory_leak", intensity=1024, max_duration=30) as fault:
        assert enabled(admin, "memory_leak")
        assert fault.detail["state"]["intensity"] == 1024
    assert not enabled(admin, "memory_leak")


def test_an_unknown_bug_is_refused_before_anything(env: tuple[Scope, str]) -> None:
    scope, admin = env
    before = len(scope.run.ledger.entries())
    with pytest.raises(ConfigError, match="unknown bug 'no_such_bug'"):
        BugSwitch(scope, admin, "no_such_bug", max_duration=30).inject()
    assert len(scope.run.ledger.entries()) == before


def test_the_service_dying_mid_fault(env: tuple[Scope, str]) -> None:
    scope, _ = env
    backend = scope.backend
    assert isinstance(backend, LocalBackend)
    admin = start_orderd(backend, "orderd-doomed")
    fault = BugSwitch(scope, admin, "goroutine_leak", max_duration=30).inject()
    backend.kill("orderd-doomed", signal.SIGKILL)
    wait_until(lambda: not backend.status("orderd-doomed").running, timeout=10)
    fault.revert()  # no hang; the bug died with its process


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from harness.backends.base import Probe, ProbeKind, WorkloadSpec
    from harness.backends.local import LocalBackend
    from harness.faults import BugSwitch, Scope
    from harness.run import Run

    ORDERD, max_duration = sys.argv[1], float(sys.argv[2])
    exec(sys.argv[3])
    run = Run.open()
    backend = LocalBackend(run)
    try:
        admin = start_orderd(backend, "orderd")
        with BugSwitch(Scope(run, backend), admin, "map_race", max_duration=max_duration):
            print(json.dumps({"run_id": run.run_id, "run_dir": str(run.dir), "admin": admin}),
                  flush=True)
            time.sleep(60)
    finally:
        backend.close()
        print(json.dumps({"left": run.close()}), flush=True)
    """
)


def start_child(
    state_dir: Path, max_duration: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    child, info = spawn_harness(
        CHILD, ORDERD, str(max_duration), inspect.getsource(start_orderd), state_dir=state_dir
    )
    assert enabled(info["admin"], "map_race")
    return child, info


def test_sigint_switches_it_off(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=60)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    assert {"left": []} in [json.loads(x) for x in out.splitlines()]
    assert cleanup.tagged_pids(info["run_id"]) == []


def test_a_hung_harness_has_it_switched_off_at_the_deadline(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=2)
    try:
        child.send_signal(signal.SIGSTOP)
        # orderd lives on (only the harness hangs): the watchdog switches the bug off.
        wait_until(
            lambda: not enabled(info["admin"], "map_race"),
            timeout=2 + 15,
            what="the watchdog switching the bug off",
        )
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
