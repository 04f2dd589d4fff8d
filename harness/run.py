"""A run: its id, its private directory, its ledger, timeline and watchdog.

Everything a run creates is named with ``faultline`` and the run id and is
recorded in the run's ledger before it is created. The run directory lives
under the state root (``$FAULTLINE_STATE_DIR``, default
``/tmp/faultline``) as ``runs/<run_id>/`` with mode 0700; keys and logs go
there. ``owner.json`` names the owning process; when it is gone, the watchdog
or ``faultline clean`` replays the ledger's inverses and removes the
directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness import cleanup
from harness.config import env_setting, parse_abs_path
from harness.ledger import Ledger
from harness.timeline import Timeline

__all__ = [
    "CleanReport",
    "Run",
    "clean_runs",
    "owner_alive",
    "signals_deferred",
    "state_root",
]

log = logging.getLogger(__name__)


def state_root() -> Path:
    """``$FAULTLINE_STATE_DIR`` (absolute), default ``/tmp/faultline``."""
    return env_setting("FAULTLINE_STATE_DIR", parse_abs_path, Path("/tmp/faultline"))


def _proc_starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(run_dir: Path) -> bool:
    """True while the process that owns ``run_dir`` is the same, living process."""
    try:
        owner = json.loads((run_dir / "owner.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(_proc_starttime(int(owner["pid"])) == owner["starttime"])


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class Run:
    """One run of the harness. Use as a context manager; see :meth:`open`."""

    run_id: str
    dir: Path
    ledger: Ledger
    timeline: Timeline = field(default_factory=Timeline)
    _watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def open(cls, root: Path | None = None, *, watchdog: bool = True) -> Run:
        """Create the run directory, claim ownership and start the watchdog."""
        root = root or state_root()
        runs = root / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        run_id = _new_run_id()
        run_dir = runs / f"faultline-{run_id}"
        run_dir.mkdir(mode=0o700)
        pid = os.getpid()
        (run_dir / "owner.json").write_text(
            json.dumps({"pid": pid, "starttime": _proc_starttime(pid), "run_id": run_id})
        )
        run = cls(run_id=run_id, dir=run_dir, ledger=Ledger(run_dir / "ledger.jsonl"))
        if watchdog:
            run._start_watchdog()
        log.info("run %s in %s", run_id, run_dir)
        return run

    def _start_watchdog(self) -> None:
        # The watchdog runs in its own session, so a signal to our process group
        # or a SIGKILL of ours does not take it down: it then reaps the run.
        self._watchdog = subprocess.Popen(
            [sys.executable, "-m", "harness.watchdog", str(self.dir)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "watchdog.log", "ab"),  # noqa: SIM115 - child keeps it
            env={**os.environ, **self.child_env("watchdog")},
        )

    def child_env(self, workload: str) -> dict[str, str]:
        """Environment tags that let every reaper find this workload's processes."""
        return {cleanup.RUN_TAG: self.run_id, cleanup.WORKLOAD_TAG: workload}

    def subdir(self, name: str) -> Path:
        p = self.dir / name
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
        return p

    def close(self) -> list[str]:
        """Revert everything still in the ledger, stop the watchdog, remove the run dir.

        Returns what could not be undone (empty: nothing left behind). A second
        SIGINT during close is ignored, so it cannot cut the revert short.
        """
        with signals_deferred():
            errors = self.ledger.revert_all()
            if self._watchdog is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._watchdog.kill()
                self._watchdog.wait()
            if not errors:
                shutil.rmtree(self.dir, ignore_errors=True)
        return errors

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self.close()
        if errors:
            log.error("run %s left things behind: %s", self.run_id, "; ".join(errors))


def _ignore_signal(signum: int, frame: object) -> None:
    # A handler, not SIG_IGN: an ignored signal stays ignored across exec, so a
    # workload (re)started meanwhile would never stop on SIGTERM.
    log.warning("signal %d ignored: reverting first", signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM off while reverting, so a second Ctrl-C cannot cut it short."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, _ignore_signal)
    except ValueError:  # not the main thread: signals cannot be touched here
        old = {}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class CleanReport:
    run_id: str
    reverted: int
    errors: list[str]


def clean_runs(root: Path | None = None, *, run_id: str | None = None) -> list[CleanReport]:
    """Reap runs whose owner is gone: replay their inverses and remove their dirs.

    Idempotent: a reaped run's directory is gone, so a second call finds nothing.
    Runs whose owner still lives are left alone.
    """
    runs = (root or state_root()) / "runs"
    reports = []
    for run_dir in sorted(runs.glob("faultline-*")) if runs.exists() else []:
        rid = run_dir.name.removeprefix("faultline-")
        if run_id is not None and rid != run_id:
            continue
        if owner_alive(run_dir):
            continue
        ledger = Ledger(run_dir / "ledger.jsonl")
        pending = len(ledger.pending())
        errors = ledger.revert_all()
        # Processes are tagged; kill any the ledger did not get to record.
        try:
            cleanup.kill_tagged(rid)
        except RuntimeError as err:
            errors.append(str(err))
        if not errors:
            shutil.rmtree(run_dir, ignore_errors=True)
        reports.append(CleanReport(rid, pending, errors))
    return reports
