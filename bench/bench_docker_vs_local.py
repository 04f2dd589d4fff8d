"""Start-to-ready on DockerBackend next to LocalBackend: a 3-member TLS etcd and a workload.

Per backend and repetition, two figures:

* ``EtcdCluster(size=3).start()``: plan + certificates + three starts, up to
  every member naming the same leader (raft's first election included);
* the compliance suite's workload (``go_targets/cmd/workload http``): plan +
  start + ``wait_ready`` on an HTTP readiness probe.

Docker's first repetition includes building the scratch images (cached by
content hash afterwards), so it is reported apart and left out of the medians.
Prints figures and the docker/local ratio of the medians; asserts nothing.
A backend that cannot run here is reported as skipped with the reason.

Usage: .venv/bin/python bench/bench_docker_vs_local.py [REPETITIONS]   (default 5)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.backends.base import Backend, Probe, ProbeKind, WorkloadSpec
from harness.components.etcd import EtcdCluster
from harness.errors import HarnessError
from harness.gobuild import build
from harness.pki import Pki
from harness.run import Run

BACKENDS = ("local", "docker")


def make_backend(name: str, run: Run) -> Backend:
    if name == "local":
        from harness.backends.local import LocalBackend

        return LocalBackend(run)
    from harness.backends.docker import DockerBackend

    return DockerBackend(run)


def etcd_ready(backend: Backend, run: Run, pki: Pki, rep: int) -> float:
    cluster = EtcdCluster(backend, run, pki, size=3, name=f"bench{rep}")
    t0 = time.monotonic()
    with cluster:
        return time.monotonic() - t0


def workload_ready(backend: Backend, binary: str, rep: int) -> float:
    name = f"web{rep}"
    t0 = time.monotonic()
    placement = backend.plan(name, ["http"])
    command = (binary, "http", "-bind", placement.bind_host, str(placement.port("http")))
    probe = Probe(ProbeKind.HTTP, "http", interval=0.02)
    backend.start(WorkloadSpec(name, command, placement, readiness=probe))
    backend.wait_ready(name, timeout=30)
    elapsed = time.monotonic() - t0
    backend.stop(name, timeout=1)
    return elapsed


def measure(name: str, reps: int, binary: str) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"etcd": [], "workload": []}
    with (
        tempfile.TemporaryDirectory(prefix="faultline-bench-") as root,
        Run.open(Path(root), watchdog=False) as run,
    ):
        os.environ["FAULTLINE_STATE_DIR"] = root  # the port locks live under the state root
        pki = Pki.create(run)
        backend = make_backend(name, run)
        try:
            for rep in range(reps + 1):  # repetition 0 warms caches (docker: image builds)
                e, w = etcd_ready(backend, run, pki, rep), workload_ready(backend, binary, rep)
                label = "warm-up" if rep == 0 else f"rep {rep}"
                print(f"{name:6s} {label:7s}: 3-member TLS etcd {e:.3f} s, workload {w:.3f} s")
                if rep:
                    figures["etcd"].append(e)
                    figures["workload"].append(w)
        finally:
            backend.close()
    return figures


def main() -> int:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    binary = str(build("workload"))
    results: dict[str, dict[str, list[float]]] = {}
    for name in BACKENDS:
        try:
            results[name] = measure(name, reps, binary)
        except HarnessError as err:
            print(f"{name}: skipped: {err}")
    for what in ("etcd", "workload"):
        medians = {n: statistics.median(r[what]) for n, r in results.items()}
        line = ", ".join(
            f"{n} median {m:.3f} s (max {max(results[n][what]):.3f} s)" for n, m in medians.items()
        )
        print(f"{what} start-to-ready over {reps}: {line}")
        if len(medians) == 2:
            print(f"{what} ratio docker/local: {medians['docker'] / medians['local']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
