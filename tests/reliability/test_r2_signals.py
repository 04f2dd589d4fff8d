"""R2: SIGINT/SIGTERM revert everything by default, in <= 10 s, exit 130/143; a second
SIGINT does not cut the revert short. No ``faultline clean`` is run here.

The victim is a pytest session with the faultline plugin (``victim_session.py``).
The signal lands at a random moment after the run exists (start of workloads,
injection, hold). FAULTLINE_R2_ROUNDS (default 3) rounds per signal.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.backends.base import WorkloadSpec
from harness.backends.local import LocalBackend
from harness.run import Run
from tests.reliability.conftest import Victim, env_int, leftovers, require_local

ROUNDS = env_int("FAULTLINE_R2_ROUNDS", 3)
BUDGET = 10.0  # seconds from the signal to everything reverted (the promise)


def _signal_and_check(victim: Victim, signum: int, root: Path) -> tuple[str, float]:
    stage = victim.last_stage()
    t0 = time.monotonic()
    victim.signal(signum)
    rc = victim.wait(timeout=60)
    exited = time.monotonic() - t0
    rid = victim.run_id()
    assert rid is not None
    assert rc == 128 + signum, f"exit {rc} after signal {signum} at {stage}:\n{victim.output()}"
    assert exited <= BUDGET, f"took {exited:.1f}s to exit after the signal at {stage}"
    left = leftovers(rid, root)
    assert not left, f"signal {signum} at {stage}: left without clean: {left}\n{victim.output()}"
    return stage, exited


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_r2_signal_at_a_random_point_reverts_everything(
    signum: int, tmp_path: Path, state_root: Path
) -> None:
    require_local()
    rng = random.Random()
    seen = []
    for i in range(ROUNDS):
        victim = Victim.pytest_session(
            tmp_path / f"v{i}", state_root, "victim_session.py::test_hold"
        )
        victim.wait_stage("run", timeout=60)
        # Random moment: the first rounds during start/inject (~0.3 s), the rest while held.
        time.sleep(rng.uniform(0.0, 0.25) if i % 2 == 0 else 0.0)
        if i % 2 == 1:
            victim.wait_stage("hold", timeout=30)
            time.sleep(rng.uniform(0.0, 0.3))
        seen.append(_signal_and_check(victim, signum, state_root))
    print(f"\nR2 {signal.Signals(signum).name}: (stage, seconds to exit) {seen}")


@pytest.mark.timeout(120)
def test_r2_second_sigint_during_teardown_does_not_cut_the_revert_short(
    tmp_path: Path, state_root: Path
) -> None:
    require_local()
    # "slow" takes 2 s to stop on SIGTERM, so the teardown lasts long enough to interrupt.
    victim = Victim.pytest_session(
        tmp_path / "v", state_root, "victim_session.py::test_hold", VICTIM_SLOW="1"
    )
    victim.wait_stage("hold", timeout=60)
    t0 = time.monotonic()
    victim.signal(signal.SIGINT)
    time.sleep(0.5)  # well inside the teardown: reverting, then stopping "slow" for 2 s
    assert victim.proc.poll() is None, "the teardown was over before the second SIGINT"
    victim.signal(signal.SIGINT)
    rc = victim.wait(timeout=60)
    took = time.monotonic() - t0
    rid = victim.run_id()
    assert rid is not None
    assert rc == 130, victim.output()
    assert took <= BUDGET
    assert not leftovers(rid, state_root), victim.output()


@pytest.mark.timeout(60)
def test_r2_interrupt_between_spawn_and_supervisor_is_torn_down(
    state_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The random signals above rarely land in this window of LocalBackend.start():
    # the process exists, its supervisor thread does not run yet. Put Ctrl-C exactly there.
    require_local()
    run = Run.open()
    backend = LocalBackend(run)
    real_start = threading.Thread.start

    def interrupted(self: threading.Thread) -> None:
        if self.name.startswith("faultline-w0"):
            raise KeyboardInterrupt("signal 2")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.start(WorkloadSpec("w0", ("sleep", "600"), backend.plan("w0", ["p"])))
        assert backend.pid("w0") is not None
        monkeypatch.undo()
        backend.close()  # raised "cannot join thread before it is started" before the fix
        # ... and then its stop() waited 10 s for a supervisor that never ran, and gave up.
        assert "left things behind" not in caplog.text
    finally:
        left = run.close()
    assert left == []
    assert not leftovers(run.run_id, state_root)
