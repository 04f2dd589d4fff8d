"""pytest victims run through the faultline plugin (``run`` and ``backend`` fixtures).

Driven by the reliability tests, never collected directly (``victim_*``):

``test_hold``: workloads and three faults, held until a signal arrives (R2).
``test_isolated``: a run that must stay untouched while a neighbour is SIGKILLed
and cleaned (R11); it checks its own state after ``$VICTIM_GO_FILE`` appears.
``test_revert_blocked``, ``test_verdict_kept``, ``test_pause_verification``:
reverts that fail on purpose (R8). A partition's chain is made the target of a
chain faultline does not know, so ``iptables -X`` fails; or the target is also
SIGSTOPped behind the fault's back, so after the thaw it is still stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend, chain_prefix
from harness.faults import CpuThrottle, Partition, ProcessPause, Scope, compose
from harness.run import Run


def progress(stage: str, **detail: object) -> None:
    """Append a stage line to ``$VICTIM_PROGRESS`` for the test that drives this victim."""
    with open(os.environ["VICTIM_PROGRESS"], "a") as fh:
        fh.write(json.dumps({"stage": stage, "t": time.time(), **detail}) + "\n")


def start_workloads(backend: LocalBackend, *, slow: bool = False) -> list[str]:
    """``w0`` (sleep), ``py`` (an HTTP server), and optionally ``slow`` (2 s to stop on SIGTERM)."""
    w0 = backend.plan("w0", ["p"])
    backend.start(WorkloadSpec("w0", ("sleep", "600"), w0))
    py = backend.plan("py", ["http"])
    backend.start(
        WorkloadSpec(
            "py",
            (sys.executable, "-m", "http.server", str(py.port("http")), "--bind", "127.0.0.1"),
            py,
            readiness=Probe(ProbeKind.TCP, "http", interval=0.05),
        )
    )
    names = ["w0", "py"]
    if slow:
        st = backend.plan("slow", [])
        script = 'trap "sleep 2; exit 0" TERM; while :; do sleep 0.2; done'
        backend.start(WorkloadSpec("slow", ("/bin/sh", "-c", script), st))
        names.append("slow")
    backend.wait_ready("py", timeout=30)
    return names


def hold(seconds: float, go_file: Path | None = None) -> None:
    """Keep the faults in place for ``seconds`` or until ``go_file`` exists."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if go_file is not None and go_file.exists():
            return
        time.sleep(0.05)  # the hold itself: the test signals or kills us meanwhile


def test_hold(run: Run, backend: LocalBackend) -> None:
    progress("run", run_id=run.run_id)
    names = start_workloads(backend, slow=os.environ.get("VICTIM_SLOW") == "1")
    progress("started")
    scope = Scope(run, backend, workloads=names)
    faults = compose(
        CpuThrottle(scope, "py", cores=0.2, max_duration=120),
        Partition(scope, "py", from_=["w0"], max_duration=120),
        ProcessPause(scope, "w0", seconds=120),
    )
    with faults:
        progress("hold")
        hold(60)
    progress("reverted")


def test_isolated(run: Run, backend: LocalBackend) -> None:
    progress("run", run_id=run.run_id)
    names = start_workloads(backend)
    pids = {n: backend.pid(n) for n in names}
    scope = Scope(run, backend, workloads=names)
    cg = backend.cgroup("py")
    assert cg is not None
    quota = cg.dirs["cpu"] / "cpu.cfs_quota_us"
    with (
        CpuThrottle(scope, "py", cores=0.2, max_duration=120),
        ProcessPause(scope, "w0", seconds=120),
    ):
        before = quota.read_text()
        progress("hold")
        hold(60, Path(os.environ["VICTIM_GO_FILE"]))
        # The neighbour was SIGKILLed and reaped meanwhile: nothing of ours may have moved.
        assert {n: backend.pid(n) for n in names} == pids
        assert backend.status("w0").paused
        frozen = backend.cgroup("w0")
        assert frozen is not None
        assert (frozen.dirs["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
        assert quota.read_text() == before == "20000\n"
        assert run.dir.is_dir() and (run.dir / "ledger.jsonl").is_file()
        port = backend._workloads["py"].placement.port("http")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    assert not backend.status("w0").paused
    progress("done")


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)


def _block(run: Run) -> None:
    """Make a chain faultline does not know jump to the run's partition chain."""
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    chain = next(
        line.split()[1] for line in rules.splitlines()
        if line.startswith(f"-N {chain_prefix(run.run_id)}")
    )  # fmt: skip
    blocker = f"r8blk-{secrets.token_hex(3)}"
    progress("blocker", blocker=blocker, chain=chain, run_id=run.run_id)
    _iptables("-N", blocker)
    _iptables("-A", blocker, "-j", chain)


def test_revert_blocked(run: Run, backend: LocalBackend) -> None:
    progress("run", run_id=run.run_id)
    names = start_workloads(backend)
    with Partition(Scope(run, backend, workloads=names), "py", from_=["w0"], max_duration=60):
        _block(run)


def test_verdict_kept(run: Run, backend: LocalBackend) -> None:
    progress("run", run_id=run.run_id)
    names = start_workloads(backend)
    with Partition(Scope(run, backend, workloads=names), "py", from_=["w0"], max_duration=60):
        _block(run)
        raise AssertionError("VERDICT-MARKER: the scenario itself failed")


def test_pause_verification(run: Run, backend: LocalBackend) -> None:
    progress("run", run_id=run.run_id)
    names = start_workloads(backend)
    pid = backend.pid("w0")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # behind the fault's back: its thaw cannot undo this
    try:
        with ProcessPause(Scope(run, backend, workloads=names), "w0", seconds=60):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
