"""Port allocation: lock files keep parallel runs off each other's ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends import ports
from harness.backends.ports import PortAllocator
from harness.ledger import Ledger


def test_allocated_port_is_free_locked_and_named(tmp_path: Path) -> None:
    lease = PortAllocator(tmp_path / "ports", "run-a").allocate()
    try:
        assert lease.path == tmp_path / "ports" / f"{lease.port}.lock"
        assert lease.path.read_text() == "run-a"
        with socket.socket() as s:
            s.bind(("127.0.0.1", lease.port))  # nobody listens on it yet
    finally:
        lease.release()
    assert not lease.path.exists()
    lease.release()  # idempotent


def test_a_held_port_cannot_be_locked_by_another_run(tmp_path: Path) -> None:
    a = PortAllocator(tmp_path / "ports", "run-a")
    b = PortAllocator(tmp_path / "ports", "run-b")
    lease = a.allocate()
    assert b.try_lock(lease.port) is None
    lease.release()
    again = b.try_lock(lease.port)
    assert again is not None
    assert again.path.read_text() == "run-b"
    again.release()


def test_allocate_skips_ports_locked_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = PortAllocator(tmp_path / "ports", "run-a").try_lock(40001)
    assert held is not None
    offered = iter([40001, 40002])
    monkeypatch.setattr(ports, "free_port", lambda host="127.0.0.1": next(offered))
    recorded: list[Path] = []
    lease = PortAllocator(tmp_path / "ports", "run-b").allocate(before_lock=recorded.append)
    assert lease.port == 40002
    # The caller hears of every lock file before it can exist.
    assert recorded == [tmp_path / "ports" / "40001.lock", tmp_path / "ports" / "40002.lock"]
    lease.release()
    held.release()


def test_a_retried_allocation_keeps_every_ledger_entry_and_releases_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = PortAllocator(tmp_path / "ports", "faultline-other").try_lock(40011)
    assert held is not None
    offered = iter([40011, 40012])
    monkeypatch.setattr(ports, "free_port", lambda host="127.0.0.1": next(offered))
    ledger = Ledger(tmp_path / "ledger.jsonl")
    mine = ports.allocate_recorded(
        PortAllocator(tmp_path / "ports", "faultline-mine"), ledger, run_id="mine", what="w"
    )
    assert mine.port == 40012
    assert len(mine.seqs) == 2 and len(ledger.pending()) == 2
    mine.release(ledger)
    assert ledger.pending() == []
    # The other run's lock survives our release: its file names another run.
    assert (tmp_path / "ports" / "40011.lock").exists()
    held.release()


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from harness.backends.ports import PortAllocator
    leases = [PortAllocator(Path(sys.argv[1]), sys.argv[2]).allocate() for _ in range(20)]
    print(" ".join(str(lease.port) for lease in leases), flush=True)
    sys.stdin.read()
    """
)


def _holder(lock_dir: Path, owner: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), owner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_parallel_runs_get_disjoint_ports(tmp_path: Path) -> None:
    holders = [_holder(tmp_path / "ports", f"run-{i}") for i in range(2)]
    try:
        got = [set(map(int, h.stdout.readline().split())) for h in holders if h.stdout]
    finally:
        for h in holders:
            h.kill()
            h.wait()
    assert [len(g) for g in got] == [20, 20]
    assert got[0].isdisjoint(got[1])


def test_release_inverse_reaps_a_sigkilled_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "ports", "run-dead")
    assert holder.stdout is not None
    port = int(holder.stdout.readline().split()[0])
    path = tmp_path / "ports" / f"{port}.lock"
    # While the holder lives, its lock is not ours to remove.
    cleanup.release_port_lock(str(path), "run-dead")
    assert path.exists()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    cleanup.release_port_lock(str(path), "run-other")  # names another run: kept
    assert path.exists()
    cleanup.release_port_lock(str(path), "run-dead")
    assert not path.exists()
    cleanup.release_port_lock(str(path), "run-dead")  # idempotent


@pytest.mark.parametrize("bad", ["/etc/passwd", "/tmp/ports/x.lock", "/tmp/other/1234.lock"])
def test_release_inverse_refuses_foreign_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        cleanup.release_port_lock(bad, "run-a")
