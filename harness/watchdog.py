"""The run's watchdog: a process in its own session that outlives the harness.

It polls the run's ledger twice a second. A fault whose deadline has passed is
reverted (so a SIGKILLed harness cannot leave a fault in place for longer than
its maximum duration); when the owner process is gone, the whole run is
reaped as ``faultline clean`` would. It exits when the run directory is gone.

Usage: ``python -m harness.watchdog RUN_DIR``
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from harness.ledger import Ledger
from harness.run import clean_runs, owner_alive

POLL_SECONDS = 0.5

log = logging.getLogger("harness.watchdog")


def watch(run_dir: Path) -> int:
    ledger = Ledger(run_dir / "ledger.jsonl")
    while run_dir.exists():
        if not owner_alive(run_dir):
            log.warning("owner of %s is gone: reaping the run", run_dir.name)
            rid = run_dir.name.removeprefix("faultline-")
            for report in clean_runs(run_dir.parent.parent, run_id=rid):
                for err in report.errors:
                    log.error("left behind: %s", err)
            return 0
        for err in ledger.revert_all(overdue_only=True):
            log.error("overdue revert failed: %s", err)
        time.sleep(POLL_SECONDS)
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if len(sys.argv) != 2:
        print("usage: python -m harness.watchdog RUN_DIR", file=sys.stderr)
        return 2
    return watch(Path(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
