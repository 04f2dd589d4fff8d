"""How long `faultline cluster` takes: build (cached lookup; the last real build's
figure from its build.json), start (`up`: spawn to node Ready and a test Pod run)
and stop (`down`: everything stopped, unmounted and removed).

Start and stop take the cluster down: with a cluster up the bench measures only
the build lookup unless --restart is given (it then brings the cluster back up).

--cold also measures a cold build, side by side with a rebuild with warm Go
caches: into a temporary directory, with empty Go module and build caches
(GOMODCACHE, GOCACHE), so every module comes from the proxy and every package
is compiled; then the same build again into a second empty output directory
with those caches now warm. The temporary directory (several GB) is removed
after. Needs the Go module proxy and many minutes on 2 cores.

Prints figures (median over repetitions); asserts nothing. Needs root.

Usage: .venv/bin/python bench/bench_kube_cluster.py [--restart] [--cold] [REPETITIONS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.kube import cluster


def cold_builds() -> tuple[float, float]:
    """(cold, warm) seconds of two builds into empty output directories: the first
    with empty Go module and build caches, the second with the caches it filled."""
    tmp = Path(tempfile.mkdtemp(prefix="faultline-coldbench-", dir="/var/tmp"))
    saved = {k: os.environ.get(k) for k in ("GOMODCACHE", "GOCACHE")}
    os.environ["GOMODCACHE"], os.environ["GOCACHE"] = str(tmp / "mod"), str(tmp / "gocache")
    try:
        cold = cluster.build(root=tmp / "cold")
        print(f"build, cold:               {cold.seconds:8.1f} s (empty module and build caches)")
        warm = cluster.build(root=tmp / "warm")
        print(f"build, warm Go caches:     {warm.seconds:8.1f} s (same caches, empty output)")
        return cold.seconds, warm.seconds
    finally:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        # The module cache is read-only: go clean removes it.
        subprocess.run([go, "clean", "-modcache"], check=False, capture_output=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    restart = "--restart" in argv
    if "--cold" in argv:
        cold, warm = cold_builds()
        print(f"cold/warm:                 {cold / warm:8.2f}")
    args = [a for a in argv if a not in ("--restart", "--cold")]
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
