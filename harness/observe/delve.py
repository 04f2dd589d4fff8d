"""Goroutine dumps of a running Go process from outside, with delve (``dlv attach``).

The program needs no pprof endpoint and no change: ``dlv attach PID`` stops it
(ptrace), ``goroutines -g -t 64`` prints every goroutine's wait reason, stack
and start location, ``goroutines -exec print runtime.curg.trackingSeq`` how
often each one has stopped running (so a goroutine that woke and parked again
at the same place between two dumps is not taken for one blocked throughout),
and ``exit`` answered with ``n`` detaches and leaves it running. The process
is stopped for the whole attachment: :attr:`Attachment.seconds` is that
cost's upper bound (``bench/bench_observe.py`` measures it).

Each ``dlv`` runs in its own session with the run's tags (workload ``dlv``),
recorded in the run's ledger (``kill_tagged``) before the first one starts, so
an interrupted or SIGKILLed run leaves none behind.

>>> dumper = DelveDumper(run)                                # doctest: +SKIP
>>> got = dumper.dump(pid, taken_at=run.timeline.now())
>>> got.dump.goroutines[0].state, got.seconds
('sleep', 0.21)
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import gobuild
from harness.observe.goroutines import RUNS_MARKER, Dump, parse_delve
from harness.run import Run

__all__ = ["DLV_PACKAGE", "DLV_VERSION", "Attachment", "DelveDumper", "dlv_binary"]

log = logging.getLogger(__name__)

DLV_VERSION = "v1.27.2"
DLV_PACKAGE = "github.com/go-delve/delve/cmd/dlv"
WORKLOAD = "dlv"
STACK_DEPTH = 64
TIMEOUT_S = 20.0
# The stacks, then each goroutine's g.trackingSeq: the runtime bumps it whenever
# the goroutine stops running, so a goroutine seen in the same wait with the same
# value in two dumps did not run in between (parse_delve reads both parts).
_SCRIPT = (
    f"goroutines -g -t {STACK_DEPTH}\n"
    f'print "{RUNS_MARKER}"\n'
    "goroutines -exec print runtime.curg.trackingSeq\n"
    "exit\nn\n"
)


def dlv_binary(*, build: bool = True) -> Path:
    """``dlv``: PATH, then the faultline bin cache (built there once when ``build``)."""
    return gobuild.go_install(DLV_PACKAGE, DLV_VERSION, "dlv", build=build)


@dataclass(frozen=True)
class Attachment:
    dump: Dump
    seconds: float  # wall time attached: the process was stopped at most this long


class DelveDumper:
    """Takes dumps of processes of ``run`` with ``dlv`` (see the module docstring)."""

    def __init__(self, run: Run, dlv: Path | None = None) -> None:
        self.run = run
        self.dlv = dlv or dlv_binary()
        self._recorded = False
        self.error: str | None = None  # why the last attachment gave no dump

    def dump(self, pid: int, *, taken_at: float | None = None) -> Attachment | None:
        """A dump of ``pid``; None when delve could not attach (see :attr:`error`)."""
        if not self._recorded:
            seq = self.run.ledger.record(
                "delve attachments",
                {"op": "kill_tagged", "run_id": self.run.run_id, "workload": WORKLOAD},
            )
            self.run.ledger.applied(seq)
            self._recorded = True
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [str(self.dlv), "attach", str(pid), "--allow-non-terminal-interactive=true"],
                input=_SCRIPT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                cwd=self.run.dir,
                env=self._env(),
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.error = f"dlv attach {pid} took longer than {TIMEOUT_S:.0f}s"
            return None
        seconds = time.monotonic() - started
        dump = parse_delve(proc.stdout, taken_at=taken_at)
        if not dump.goroutines:
            said = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
            self.error = f"dlv attach {pid}: {said[-1]}"
            log.info("%s", self.error)
            return None
        self.error = None
        return Attachment(dump, seconds)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TERM": "dumb", **self.run.child_env(WORKLOAD)}
