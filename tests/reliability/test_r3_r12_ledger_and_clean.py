"""R3: the write-ahead ledger survives a crash at every point; R12: ``clean`` is idempotent.

R3 drives a run's Ledger directly in a victim with real inverses (a cgroup CPU
quota and an iptables chain hooked from INPUT) and SIGKILLs it when recorded
but not applied, applied, mid-revert, and halfway through an inverse. Then
``faultline clean`` must restore the real state, and a second ``clean`` must
change nothing: it runs under a Python audit hook that logs every mutating
operation (kill, unlink, rmdir, mkdir, writes, subprocesses).
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    VICTIMS,
    Victim,
    clean_audited,
    clean_cli,
    leftovers,
    require_local,
    run_ids_under,
)

CPU = Path("/sys/fs/cgroup/cpu")


def _iptables_s(*args: str) -> str:
    return subprocess.run(["iptables", "-w", "-S", *args], capture_output=True, text=True).stdout


def _chain_exists(chain: str) -> bool:
    res = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, check=False)
    return res.returncode == 0


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A cpu cgroup the test owns; the victim changes its quota, clean must restore it."""
    require_local()
    if not (CPU / "cpu.cfs_quota_us").exists():
        pytest.skip("needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
    path = CPU / f"faultline-r3-{secrets.token_hex(3)}"
    path.mkdir()
    yield path
    path.rmdir()


@pytest.fixture
def chain() -> Iterator[str]:
    name = f"FL-r3{secrets.token_hex(3)}"
    yield name
    # Only if the test failed half-way: the same steps as the inverse.
    subprocess.run(["iptables", "-w", "-D", "INPUT", "-j", name], capture_output=True)
    subprocess.run(["iptables", "-w", "-F", name], capture_output=True)
    subprocess.run(["iptables", "-w", "-X", name], capture_output=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("crash", ["recorded", "applied", "mid-revert", "mid-inverse"])
def test_r3_crash_then_clean_twice(
    crash: str, cgroup: Path, chain: str, tmp_path: Path, state_root: Path
) -> None:
    quota = cgroup / "cpu.cfs_quota_us"
    original = quota.read_text().strip()
    victim = Victim.spawn(
        tmp_path / "v", state_root, [str(VICTIMS / "victim_ledger.py"), crash, str(cgroup), chain]
    )
    assert victim.wait(timeout=30) == -signal.SIGKILL, victim.output()
    rid = victim.run_id()
    assert rid is not None and run_ids_under(state_root) == [rid]
    # The crash really left the state it claims to.
    hooked = f"-j {chain}" in _iptables_s("INPUT")
    expect = {
        "recorded": (original, False, False),
        "applied": ("20000", True, True),
        "mid-revert": ("20000", False, False),
        "mid-inverse": ("20000", True, False),
    }[crash]
    assert (quota.read_text().strip(), _chain_exists(chain), hooked) == expect

    first = clean_cli(state_root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"run {rid}:" in first.stdout and "cleaned" in first.stdout
    assert quota.read_text().strip() == original
    assert not _chain_exists(chain) and f"-j {chain}" not in _iptables_s("INPUT")
    assert not leftovers(rid, state_root)

    second, audit = clean_audited(state_root)
    assert second.returncode == 0, second.stderr
    assert "nothing to clean" in second.stdout
    assert audit == [], f"the second clean changed things: {audit}"


@pytest.mark.timeout(90)
def test_r12_clean_twice_after_a_sigkilled_run(tmp_path: Path, state_root: Path) -> None:
    require_local()
    victim = Victim.run_script(tmp_path / "v", state_root, VICTIM_WATCHDOG="0", VICTIM_HOLD="30")
    victim.wait_stage("hold", timeout=60)
    victim.kill()
    rid = victim.run_id()
    assert rid is not None and leftovers(rid, state_root)

    # The first clean does the work, and the audit shows it (so the audit can see).
    first, audit_first = clean_audited(state_root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "cleaned" in first.stdout
    assert any("os.kill" in a for a in audit_first) and any("rmtree" in a for a in audit_first)
    assert not leftovers(rid, state_root)

    for _ in range(2):
        again, audit = clean_audited(state_root)
        assert again.returncode == 0
        assert again.stdout.startswith("nothing to clean"), again.stdout
        assert audit == [], f"a clean with nothing to do changed things: {audit}"
    console = clean_cli(state_root)
    assert console.returncode == 0 and "nothing to clean" in console.stdout
