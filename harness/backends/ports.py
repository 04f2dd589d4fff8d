"""Port allocation on 127.0.0.1 that parallel runs cannot collide on.

The kernel picks a free port (bind to port 0); the run then holds an
``flock`` on ``<state_root>/ports/<port>.lock`` for as long as it uses the
port, so another run that is handed the same port before our workload binds
it sees the lock and picks again. The lock file holds the owning run id; the
``release_port_lock`` inverse (harness/cleanup.py) removes it after a
SIGKILL, but only if nobody holds it and it still names that run.

>>> ports = PortAllocator(state_root() / "ports", run_id)    # doctest: +SKIP
>>> lease = ports.allocate(before_lock=lambda path: ledger.record(...))
>>> lease.port
41237
>>> lease.release()
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.ledger import Ledger

__all__ = ["PortAllocator", "PortLease", "RecordedLease", "allocate_recorded", "free_port"]

log = logging.getLogger(__name__)

_MAX_TRIES = 200


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (no guarantee it stays so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PortLease:
    """A port held by this process through an flock'd lock file."""

    port: int
    path: Path
    _fd: int | None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file while still holding the lock, then drop it; idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


class PortAllocator:
    """Hands out ports on ``host`` guarded by lock files under ``lock_dir``."""

    def __init__(self, lock_dir: Path, owner: str, host: str = "127.0.0.1") -> None:
        self.lock_dir = lock_dir
        self.owner = owner
        self.host = host

    def lock_path(self, port: int) -> Path:
        return self.lock_dir / f"{port}.lock"

    def try_lock(self, port: int) -> PortLease | None:
        """Take the lock for ``port``; None when another holder has it."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        path = self.lock_path(port)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous holder may have unlinked the file between our open and
        # our flock: then we locked an orphan inode and must not count it.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, self.owner.encode())
        os.fsync(fd)
        return PortLease(port, path, fd)

    def allocate(self, before_lock: Callable[[Path], None] | None = None) -> PortLease:
        """Pick a free port and lock it.

        ``before_lock(path)`` runs before the lock file can be created, so the
        caller can record the inverse in its ledger first.
        """
        for _ in range(_MAX_TRIES):
            port = free_port(self.host)
            if before_lock is not None:
                before_lock(self.lock_path(port))
            lease = self.try_lock(port)
            if lease is not None:
                return lease
            log.debug("port %d is locked by another run; picking again", port)
        raise RuntimeError(f"no lockable free port on {self.host} after {_MAX_TRIES} tries")


@dataclass
class RecordedLease:
    """A port lease and the ledger entries of every lock file tried to get it."""

    lease: PortLease
    seqs: list[int]

    @property
    def port(self) -> int:
        return self.lease.port

    def release(self, ledger: Ledger) -> None:
        self.lease.release()
        for seq in self.seqs:
            ledger.revert(seq)  # the lock file is gone (or was never ours): only marks it


def allocate_recorded(
    allocator: PortAllocator, ledger: Ledger, *, run_id: str, what: str
) -> RecordedLease:
    """Allocate a port, recording each lock file's inverse in ``ledger`` before it exists.

    A retry (the port was locked by another run) records one more entry; all
    of them are kept so that releasing marks every one.
    """
    seqs: list[int] = []

    def record(path: Path) -> None:
        seqs.append(
            ledger.record(
                f"port lock {path.name} for {what}",
                {"op": "release_port_lock", "path": str(path), "run_id": run_id},
            )
        )

    lease = allocator.allocate(before_lock=record)
    ledger.applied(seqs[-1], port=lease.port)
    return RecordedLease(lease, seqs)
