"""Drives a run's Ledger directly with real inverses and SIGKILLs itself (R3).

``python victim_ledger.py CRASH CGROUP CHAIN`` where CRASH is one of
``recorded`` (intent fsync'd, mutation never made), ``applied`` (both
mutations made), ``mid-revert`` (the newest entry reverted and marked, the
older one not yet), ``mid-inverse`` (the newest entry's inverse half done:
unhooked from INPUT but the chain still there, nothing marked). CGROUP is a
cpu cgroup the test made (its quota is the first mutation); CHAIN an ``FL-``
chain name (the second: created, with a harmless RETURN rule, hooked from INPUT).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.run import Run


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)


def main() -> None:
    crash, cgroup, chain = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    run = Run.open(watchdog=False)
    with open(os.environ["VICTIM_PROGRESS"], "a") as fh:
        fh.write(json.dumps({"stage": "run", "run_id": run.run_id, "t": time.time()}) + "\n")
    ledger = run.ledger
    quota = cgroup / "cpu.cfs_quota_us"
    s1 = ledger.record(
        "cpu quota", {"op": "write_file", "path": str(quota), "value": quota.read_text().strip()}
    )
    if crash == "recorded":
        die()
    quota.write_text("20000")
    ledger.applied(s1)
    s2 = ledger.record(
        "chain", {"op": "remove_iptables_chain", "chain": chain, "parents": ["INPUT"]}
    )
    _iptables("-N", chain)
    _iptables("-A", chain, "-s", "127.0.0.99/32", "-j", "RETURN")
    _iptables("-I", "INPUT", "1", "-j", chain)
    ledger.applied(s2)
    if crash == "applied":
        die()
    if crash == "mid-revert":
        ledger.revert(s2)
        die()
    _iptables("-D", "INPUT", "-j", chain)  # the first half of remove_iptables_chain
    die()


if __name__ == "__main__":
    main()
