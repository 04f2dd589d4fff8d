"""How long a SIGKILLed run takes to be fully reaped: by its watchdog, and by ``faultline clean``.

A victim harness run (``tests/reliability/victims/victim_run.py``) starts N
sleep workloads plus one Python HTTP server, injects a CPU throttle, a
partition (iptables chain) and a freezer pause, and holds them. It is then
SIGKILLed.

* watchdog: from the SIGKILL until nothing of the run is left on the host
  (processes, cgroups, chains, run dir, port locks), polled every 10 ms.
* clean: the same run without a watchdog; wall time of the ``faultline clean``
  command (Python start-up included), and nothing may be left after it.

Prints figures (median and max over repetitions); asserts nothing.

Usage: .venv/bin/python bench/bench_reaping.py [REPETITIONS]   (run as root)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reliability.conftest import Victim, clean_cli, leftovers

SIZES = (1, 5, 20)


def _held_victim(workdir: Path, root: Path, workloads: int, watchdog: bool) -> tuple[Victim, str]:
    victim = Victim.run_script(
        workdir,
        root,
        VICTIM_WORKLOADS=str(workloads),
        VICTIM_CYCLES="1",
        VICTIM_WATCHDOG="1" if watchdog else "0",
        VICTIM_GO_FILE=str(workdir / "never"),
    )
    victim.wait_stage("hold", timeout=120)
    rid = victim.run_id()
    assert rid is not None
    return victim, rid


def by_watchdog(workdir: Path, root: Path, workloads: int) -> float:
    victim, rid = _held_victim(workdir, root, workloads, watchdog=True)
    t0 = time.monotonic()
    victim.kill()
    while leftovers(rid, root):
        if time.monotonic() - t0 > 60:
            raise RuntimeError(f"run {rid} not reaped after 60 s: {leftovers(rid, root)}")
        time.sleep(0.01)
    return time.monotonic() - t0


def by_clean(workdir: Path, root: Path, workloads: int) -> float:
    victim, rid = _held_victim(workdir, root, workloads, watchdog=False)
    victim.kill()
    t0 = time.monotonic()
    res = clean_cli(root)
    took = time.monotonic() - t0
    left = leftovers(rid, root)
    if res.returncode != 0 or left:
        raise RuntimeError(f"clean exit {res.returncode}: {res.stdout}{res.stderr} left: {left}")
    return took


def main() -> int:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"reaping a SIGKILLed run (N sleeps + 1 http server, 3 faults held), {reps} reps")
    print(
        f"{'workloads':>9}  {'watchdog median':>15}  {'max':>6}  {'clean median':>12}  {'max':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-reaping-") as tmp:
        root = Path(tmp) / "state"
        for n in SIZES:
            wd = [by_watchdog(Path(tmp) / f"wd-{n}-{i}", root, n) for i in range(reps)]
            cl = [by_clean(Path(tmp) / f"cl-{n}-{i}", root, n) for i in range(reps)]
            print(
                f"{n + 1:>9}  {statistics.median(wd):>14.2f}s  {max(wd):>5.2f}s"
                f"  {statistics.median(cl):>11.2f}s  {max(cl):>5.2f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
