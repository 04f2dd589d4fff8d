"""``faultline observe`` on the Go bug corpus: recall, attribution, false alarms, TTD, pause cost.

Every program of tests/gobugs (bug shapes and legitimately parked controls) is
built as a plain binary and observed by the real command, as a user runs it,
``PARALLEL`` at a time (default 2: the figures include that contention). Prints,
per program, the expected class, what was found, whether the finding names a
line the program marks ``// want``, and the TTD (seconds from the program's
start to the finding); then:

- recall: deterministic bug programs found with their class (the
  non-deterministic ones apart);
- attribution accuracy: of the found ones, those naming a marked line;
- false alarms: findings on controls, and findings on bug programs that name
  none of their lines;
- TTD per class (median, max) and whether every deterministic one is <= 10 s;
- the cost of delve: how long each attachment kept the program stopped (the
  wall time of ``dlv attach`` + dump + detach, an upper bound of the pause),
  over every dump of the runs, and alone: ``ATTACH_ALONE`` attachments in a row
  to one idle control with nothing else of ours running (the floor).

Prints figures; asserts nothing. Usage:
``.venv/bin/python bench/bench_observe.py [--window 8] [--parallel 2] [NAME...]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gobugs_corpus import Outcome, Program, build, observe, programs

TTD_GOAL_S = 10.0
ATTACH_ALONE = 10


def _attach_alone(binary: Path) -> list[float]:
    """Seconds each of ATTACH_ALONE delve attachments to an idle program took."""
    from harness.observe.delve import DelveDumper
    from harness.run import Run

    proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with Run.open() as run:
            dumper = DelveDumper(run)
            got = [dumper.dump(proc.pid) for _ in range(ATTACH_ALONE)]
        return [a.seconds for a in got if a is not None]
    finally:
        proc.kill()
        proc.wait()


def _row(o: Outcome) -> str:
    p, f = o.program, o.detected
    expected = p.kind or "none (control)"
    if p.control:
        found = ", ".join(x["class"] for x in o.findings) or "nothing"
        verdict = "FALSE ALARM" if o.findings else "ok"
        return f"{p.name:18} {expected:18} {found:30} {'':6} {'':7} {verdict}"
    where = f"{f['function']} {Path(str(f['file'])).name}:{f['line']}" if f else "-"
    ttd = f"{f['ttd_s']:.1f}" if f else "-"
    flags = "" if p.deterministic else " (nondet.)"
    verdict = "ok" if f and o.attributed and not o.false_alarms else "MISS" if not f else "WRONG"
    if o.false_alarms:
        verdict += f" +{len(o.false_alarms)} false"
    return f"{p.name:18} {expected:18} {where[:30]:30} {ttd:>6} {o.attributed!s:7} {verdict}{flags}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--window", type=float, default=8.0, help="--for of each run (load: +6 s)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("names", nargs="*")
    ns = ap.parse_args()
    progs = [p for p in programs() if not ns.names or p.name in ns.names]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        binaries = dict(zip(progs, pool.map(build, progs), strict=True))
    print(f"built {len(binaries)} programs in {time.monotonic() - t0:.1f}s (cached)")

    def run(p: Program, root: Path) -> Outcome:
        (root / p.name).mkdir()
        window = ns.window + (6.0 if p.load else 0.0)
        return observe(p, binaries[p], root / p.name, seconds=window)

    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-observe-") as tmp,
        ThreadPoolExecutor(ns.parallel) as pool,
    ):
        outcomes = list(pool.map(lambda p: run(p, Path(tmp)), progs))
    elapsed = time.monotonic() - t0
    print(f"\n{'program':18} {'expected':18} {'found at':30} {'TTD s':>6} {'attrib.':7} verdict")
    for o in outcomes:
        print(_row(o))
    bugs = [o for o in outcomes if not o.program.control]
    det = [o for o in bugs if o.program.deterministic]
    nondet = [o for o in bugs if not o.program.deterministic]
    controls = [o for o in outcomes if o.program.control]
    found = [o for o in bugs if o.detected]
    load1 = os.getloadavg()[0]
    print(
        f"\nobserved {len(outcomes)} programs in {elapsed:.0f}s, {ns.parallel} at a time "
        f"(machine load average now {load1:.1f} on {os.cpu_count()} cores)"
    )
    if det:
        hit = sum(1 for o in det if o.detected)
        print(f"recall (deterministic): {hit}/{len(det)} = {hit / len(det):.0%}")
    if nondet:
        hit = sum(1 for o in nondet if o.detected)
        print(f"recall (non-deterministic, reported apart): {hit}/{len(nondet)}")
    if found:
        ok = sum(1 for o in found if o.attributed)
        print(f"attribution accuracy: {ok}/{len(found)} = {ok / len(found):.0%}")
    alarms_c = sum(1 for o in controls if o.findings)
    alarms_b = sum(len(o.false_alarms) for o in bugs)
    print(
        f"false alarms: {alarms_c}/{len(controls)} controls raised a finding; "
        f"{alarms_b} stray finding(s) on bug programs"
    )
    by_class: dict[str, list[float]] = {}
    for o in found:
        if o.program.deterministic and o.detected is not None:
            by_class.setdefault(str(o.program.kind), []).append(float(o.detected["ttd_s"]))
    print("TTD per class (deterministic, seconds from the program's start):")
    for kind, ttds in sorted(by_class.items()):
        print(
            f"  {kind:18} n={len(ttds):2}  median {statistics.median(ttds):5.2f}  "
            f"max {max(ttds):5.2f}"
        )
    worst = max((t for ts in by_class.values() for t in ts), default=0.0)
    print(f"every deterministic TTD <= {TTD_GOAL_S:.0f}s: {worst <= TTD_GOAL_S} (max {worst:.2f}s)")
    attach = [a for o in outcomes for a in o.attach_s]
    if attach:
        q = statistics.quantiles(attach, n=20) if len(attach) >= 20 else [max(attach)] * 19
        print(
            f"delve pause per dump: n={len(attach)}  median {statistics.median(attach):.3f}s  "
            f"p95 {q[18]:.3f}s  max {max(attach):.3f}s (dumps every 1 s)"
        )
    idle = next((p for p in progs if p.name == "ctl_longsleep"), None)
    if idle is not None:
        alone = _attach_alone(binaries[idle])
        print(
            f"delve pause alone ({len(alone)} attachments to {idle.name}, nothing else of ours "
            f"running): median {statistics.median(alone):.3f}s, max {max(alone):.3f}s"
        )
    walls = [o.wall_s for o in outcomes]
    print(
        f"faultline observe wall time: median {statistics.median(walls):.1f}s, "
        f"max {max(walls):.1f}s (window {ns.window:g}s, start-up and report included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
