"""How long `faultline cluster` takes: build (cached lookup; the last real build's
figure from its build.json), start (`up`: spawn to node Ready and a test Pod run)
and stop (`down`: everything stopped, unmounted and removed).

Start and stop take the cluster down: with a cluster up the bench measures only
the build lookup unless --restart is given (it then brings the cluster back up).
A cold build (empty Go module and build caches) is not measured here: it needs
the module proxy and many minutes on 2 cores; build.json records whatever build
last ran. Prints figures (median over repetitions); asserts nothing. Needs root.

Usage: .venv/bin/python bench/bench_kube_cluster.py [--restart] [REPETITIONS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from harness.kube import cluster


def main(argv: list[str]) -> int:
    restart = "--restart" in argv
    args = [a for a in argv if a != "--restart"]
    reps = int(args[0]) if args else 3
    t0 = time.monotonic()
    built = cluster.build()
    lookup = time.monotonic() - t0
    info = json.loads((built.bin_dir.parent / "build.json").read_text())
    print(f"build, cached lookup:      {lookup:8.3f} s (cached={built.cached})")
    print(f"build, last real build:    {info['seconds']:8.1f} s ({info['go']}, build.json)")
    was_up = cluster.status()["up"]
    if was_up and not restart:
        print("start/stop: not measured: a cluster is up (pass --restart to take it down)")
        return 0
    starts, stops = [], []
    cluster.down()
    for _ in range(reps):
        t0 = time.monotonic()
        ready = cluster.up()
        starts.append(time.monotonic() - t0)
        t0 = time.monotonic()
        cluster.down()
        stops.append(time.monotonic() - t0)
        print(f"  up {starts[-1]:6.2f} s (phases {ready['phases']}), down {stops[-1]:6.2f} s")
    print(f"start (median of {reps}):     {statistics.median(starts):8.2f} s")
    print(f"stop (median of {reps}):      {statistics.median(stops):8.2f} s")
    print(f"stop/start:                {statistics.median(stops) / statistics.median(starts):8.2f}")
    if was_up:
        cluster.up()
        print("cluster brought back up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
