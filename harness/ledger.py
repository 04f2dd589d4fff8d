"""Write-ahead ledger: every mutation is recorded with its inverse *before* it is made.

One append-only JSONL file per run. Three record types:

``do``      intent and inverse, fsync'd before the mutation (``record``)
``done``    the mutation was applied, with details learned doing it (``applied``)
``undone``  the inverse ran (``revert`` / ``mark_reverted``)

An inverse is a plain JSON object ``{"op": NAME, **args}`` that
:mod:`harness.cleanup` can execute from any process: the harness on a normal
exit, the watchdog when a fault outlives its deadline or the owner dies, and
``faultline clean`` after a SIGKILL. Inverses are idempotent, and reverting
takes an exclusive lock so two reapers never interleave.

>>> ledger = Ledger(run_dir / "ledger.jsonl")                  # doctest: +SKIP
>>> seq = ledger.record("cpu quota on etcd-0",
...                     {"op": "write_file", "path": p, "value": "-1"})
>>> apply_the_quota(); ledger.applied(seq)
>>> ledger.revert(seq)       # runs the inverse, records "undone"
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cleanup

__all__ = ["Entry", "Ledger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    seq: int
    action: str
    inverse: dict[str, Any]
    deadline: float | None  # wall-clock seconds; the watchdog reverts past it
    applied: bool
    reverted: bool


class Ledger:
    """Append-only JSONL ledger of one run; safe across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_suffix(".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            # A line torn by a crash mid-write is the last one; skip it.
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def record(self, action: str, inverse: dict[str, Any], *, deadline: float | None = None) -> int:
        """Write intent + inverse (fsync'd) and return the entry's sequence number."""
        if inverse.get("op") not in cleanup.INVERSES:
            raise ValueError(f"unknown inverse op {inverse.get('op')!r}")
        with self._locked():
            seq = 1 + max((r["seq"] for r in self._read() if r["type"] == "do"), default=0)
            self._append(
                {
                    "type": "do",
                    "seq": seq,
                    "action": action,
                    "inverse": inverse,
                    "deadline": deadline,
                    "t": time.time(),
                }
            )
        return seq

    def applied(self, seq: int, **detail: Any) -> None:
        self._append({"type": "done", "seq": seq, "detail": detail, "t": time.time()})

    def mark_reverted(self, seq: int) -> None:
        """Record that the caller undid entry ``seq`` itself."""
        self._append({"type": "undone", "seq": seq, "t": time.time()})

    def entries(self) -> list[Entry]:
        recs = self._read()
        applied = {r["seq"] for r in recs if r["type"] == "done"}
        reverted = {r["seq"] for r in recs if r["type"] == "undone"}
        return [
            Entry(
                seq=r["seq"],
                action=r["action"],
                inverse=r["inverse"],
                deadline=r.get("deadline"),
                applied=r["seq"] in applied,
                reverted=r["seq"] in reverted,
            )
            for r in recs
            if r["type"] == "do"
        ]

    def pending(self) -> list[Entry]:
        """Entries whose inverse has not run, in the order they were recorded."""
        return [e for e in self.entries() if not e.reverted]

    def revert(self, seq: int) -> bool:
        """Run entry ``seq``'s inverse unless done already; True if it ran now."""
        with self._locked():
            entry = next((e for e in self.entries() if e.seq == seq), None)
            if entry is None or entry.reverted:
                return False
            cleanup.run_inverse(entry.inverse)
            self._append({"type": "undone", "seq": seq, "t": time.time()})
            return True

    def revert_all(self, *, overdue_only: bool = False) -> list[str]:
        """Revert pending entries newest first; return the errors (empty: all undone).

        One failing inverse does not stop the others: every entry gets its try.
        """
        errors: list[str] = []
        now = time.time()
        for entry in reversed(self.pending()):
            if overdue_only and (entry.deadline is None or entry.deadline > now):
                continue
            try:
                self.revert(entry.seq)
            except Exception as err:  # noqa: BLE001 - reported, and the rest still run
                log.warning("revert of %r failed: %s", entry.action, err)
                errors.append(f"{entry.action}: {err}")
        return errors
