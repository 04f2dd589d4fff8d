"""``faultline observe`` interrupted: the observed program, delve and the watchdog all go.

Ctrl-C / SIGTERM: exit 130 / 143 with nothing left and no ``faultline clean``.
SIGKILL (also while delve is attached, the program stopped under ptrace): after
``faultline clean`` nothing is left. The observed program is a control of the Go
corpus that would otherwise run for an hour.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cleanup
from harness.errors import MissingDependency
from harness.observe.delve import dlv_binary
from tests.gobugs_corpus import build, programs
from tests.reliability.conftest import Victim, leftovers, require_local, run_ids_under

pytestmark = [pytest.mark.timeout(240)]


def _program() -> Path:
    try:
        dlv_binary()
        return build(next(p for p in programs() if p.name == "ctl_longsleep"))
    except MissingDependency as err:
        pytest.skip(f"{err.what} is missing: {err.fix}")


def _observe(workdir: Path, root: Path, binary: Path) -> tuple[Victim, str]:
    """``faultline observe --for 120`` on ``binary``, once its program runs; and its run id."""
    victim = Victim.spawn(
        workdir,
        root,
        ["-m", "harness.cli", "observe", "--for", "120", "--report-dir", str(workdir), "--",
         str(binary)],
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert victim.proc.poll() is None, victim.output()
        rids = run_ids_under(root)
        if rids and cleanup.tagged_pids(rids[0], "prog"):
            return victim, rids[0]
        time.sleep(0.05)
    raise AssertionError(f"the program never started:\n{victim.output()}")


def _at_a_moment(workdir: Path, root: Path, binary: Path, attached: bool) -> tuple[Victim, str]:
    """An observing victim, at the moment to hit it: while a ``dlv`` of its run is
    attached to the program, or at a random point of its window."""
    victim, rid = _observe(workdir, root, binary)
    if not attached:
        time.sleep(random.uniform(0.5, 3.0))
        return victim, rid
    deadline = time.monotonic() + 20
    while not cleanup.tagged_pids(rid, "dlv"):
        assert time.monotonic() < deadline, "no delve attachment seen"
        time.sleep(0.01)
    return victim, rid


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_the_program_and_delve(
    signum: int, tmp_path: Path, state_root: Path
) -> None:
    require_local()
    binary = _program()
    for i, attached in enumerate((True, False)):
        victim, rid = _at_a_moment(tmp_path / f"v{i}", state_root, binary, attached)
        t0 = time.monotonic()
        victim.signal(signum)
        rc = victim.wait(timeout=60)
        assert rc == 128 + signum, victim.output()
        assert time.monotonic() - t0 <= 10.0
        assert leftovers(rid, state_root) == [], victim.output()


def test_sigkill_then_clean_leaves_nothing(tmp_path: Path, state_root: Path) -> None:
    require_local()
    binary = _program()
    for i, attached in enumerate((True, False)):
        victim, rid = _at_a_moment(tmp_path / f"v{i}", state_root, binary, attached)
        victim.kill()
        res = subprocess.run(
            [sys.executable, "-m", "harness.cli", "clean"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert leftovers(rid, state_root) == [], victim.output()
