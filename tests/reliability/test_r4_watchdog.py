"""R4: every timed fault is bounded by the watchdog, a process that outlives the harness.

* The harness is SIGKILLed mid-fault and ``clean`` never runs: everything is
  gone by ``max_duration + 15 s`` (the watchdog reaps as soon as the owner dies).
* The harness hangs (SIGSTOP) mid-fault while alive: the watchdog reverts each
  fault at its deadline all the same, and the harness then finishes cleanly.
* The watchdog alone is SIGKILLed while the harness lives: the harness still
  reverts everything on its normal exit. Documented gap: nothing restarts the
  watchdog, so if the harness is then SIGKILLed too, the faults stay until
  ``faultline clean`` (which this test then shows reaps them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.backends.local import chain_prefix
from harness.wait import wait_until
from tests.reliability.conftest import (
    Victim,
    clean_cli,
    leftovers,
    require_local,
    wait_no_leftovers,
    watchdog_pids,
)

MAX_DURATION = 3.0
GRACE = 15.0  # the promise: gone by max_duration + 15 s


def _fault_state(run_id: str) -> dict[str, object]:
    """The three faults as the kernel sees them (cgroup files, iptables)."""
    base = Path("/sys/fs/cgroup")
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    return {
        "frozen": (base / "freezer/faultline" / run_id / "w0/freezer.state").read_text().strip(),
        "quota": (base / "cpu/faultline" / run_id / "py/cpu.cfs_quota_us").read_text().strip(),
        "chain": any(chain_prefix(run_id) in r for r in rules.splitlines()),
    }


@pytest.mark.timeout(60)
def test_r4_sigkilled_harness_is_reaped_without_clean(tmp_path: Path, state_root: Path) -> None:
    require_local()
    victim = Victim.run_script(
        tmp_path / "v", state_root, VICTIM_HOLD="30", VICTIM_MAX_DURATION=str(MAX_DURATION)
    )
    victim.wait_stage("hold", timeout=60)
    rid = victim.run_id()
    assert rid is not None
    assert _fault_state(rid) == {"frozen": "FROZEN", "quota": "20000", "chain": True}
    victim.kill()
    took = wait_no_leftovers(rid, state_root, timeout=MAX_DURATION + GRACE)
    print(f"\nR4: SIGKILL -> everything reaped by the watchdog in {took:.2f}s")


@pytest.mark.timeout(60)
def test_r4_hung_harness_faults_end_at_their_deadline(tmp_path: Path, state_root: Path) -> None:
    require_local()
    victim = Victim.run_script(
        tmp_path / "v",
        state_root,
        VICTIM_CYCLES="1",
        VICTIM_HOLD="0.5",
        VICTIM_MAX_DURATION=str(MAX_DURATION),
    )
    hold = victim.wait_stage("hold", timeout=60)
    victim.signal(signal.SIGSTOP)  # alive but stuck: only the deadline can end the faults
    rid = victim.run_id()
    assert rid is not None
    try:
        wait_until(
            lambda: _fault_state(rid) == {"frozen": "THAWED", "quota": "-1", "chain": False},
            timeout=MAX_DURATION + GRACE,
            interval=0.1,
        )
        took = time.time() - hold["t"]
        assert watchdog_pids(rid), "the watchdog should still watch a living owner"
    finally:
        victim.signal(signal.SIGCONT)
    assert victim.wait(timeout=30) == 0, victim.output()
    assert not leftovers(rid, state_root)
    print(f"\nR4: hung harness, faults of max_duration {MAX_DURATION}s reverted after {took:.2f}s")


@pytest.mark.timeout(60)
def test_r4_watchdog_killed_harness_still_reverts_on_exit(tmp_path: Path, state_root: Path) -> None:
    require_local()
    go = tmp_path / "go"
    victim = Victim.run_script(
        tmp_path / "v", state_root, VICTIM_CYCLES="1", VICTIM_GO_FILE=str(go)
    )
    victim.wait_stage("hold", timeout=60)
    rid = victim.run_id()
    assert rid is not None
    for pid in watchdog_pids(rid):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not watchdog_pids(rid), timeout=10)
    go.touch()
    assert victim.wait(timeout=30) == 0, victim.output()
    assert not leftovers(rid, state_root)


@pytest.mark.timeout(60)
def test_r4_watchdog_then_harness_killed_needs_clean(tmp_path: Path, state_root: Path) -> None:
    require_local()
    victim = Victim.run_script(tmp_path / "v", state_root, VICTIM_HOLD="30")
    victim.wait_stage("hold", timeout=60)
    rid = victim.run_id()
    assert rid is not None
    for pid in watchdog_pids(rid):
        os.kill(pid, signal.SIGKILL)
    victim.kill()
    # Documented behaviour, not a promise: with both gone nothing reverts on its own.
    time.sleep(2.0)  # long enough for a living watchdog to have reaped (it polls at 0.5 s)
    left = leftovers(rid, state_root)
    print(f"\nR4: watchdog and harness both SIGKILLed: {len(left)} things stay until clean")
    assert left
    res = clean_cli(state_root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not leftovers(rid, state_root)
