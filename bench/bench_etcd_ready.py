"""How long EtcdCluster(size=3).start() takes next to one bare etcd process.

The bare figure is one TLS etcd member started with subprocess, from spawn
to its first successful status answer: the floor nothing can beat. The
cluster figure is ``EtcdCluster.start()`` through LocalBackend, up to every
member naming the same leader. Goal: cluster <= 1.5x the slowest bare member.
Most of the cluster's time is raft's first election (randomized within the
election timeout), not the harness: plan + certs + spawn take ~0.1 s.
Prints figures (median over repetitions); asserts nothing.

Usage: .venv/bin/python bench/bench_etcd_ready.py [REPETITIONS]
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.components.etcd import EtcdCluster
from harness.etcd_client import EtcdClient, EtcdError
from harness.pki import Pki
from harness.run import Run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_member(run: Run, pki: Pki, rep: int) -> float:
    certs = pki.peer(f"bare-{rep}")
    client = pki.client(f"bare-client-{rep}")
    c, p = free_port(), free_port()
    args = [
        "etcd", "--name", "bare", "--data-dir", str(run.subdir(f"bare-{rep}") / "data"),
        "--listen-client-urls", f"https://127.0.0.1:{c}",
        "--advertise-client-urls", f"https://127.0.0.1:{c}",
        "--listen-peer-urls", f"https://127.0.0.1:{p}",
        "--initial-advertise-peer-urls", f"https://127.0.0.1:{p}",
        "--initial-cluster", f"bare=https://127.0.0.1:{p}",
        "--client-cert-auth", "--trusted-ca-file", str(certs.ca),
        "--cert-file", str(certs.cert), "--key-file", str(certs.key),
        "--peer-client-cert-auth", "--peer-trusted-ca-file", str(certs.ca),
        "--peer-cert-file", str(certs.cert), "--peer-key-file", str(certs.key),
        "--logger", "zap", "--log-outputs", "stderr",
    ]  # fmt: skip
    with EtcdClient(
        [f"https://127.0.0.1:{c}"], client.ca, client.cert, client.key, timeout=1
    ) as etcd:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **run.child_env(f"bare-{rep}")},
        )
        try:
            deadline = t0 + 30
            while time.monotonic() < deadline:
                try:
                    if etcd.status().leader_id:
                        return time.monotonic() - t0
                except EtcdError:
                    pass
                time.sleep(0.01)
            raise RuntimeError("bare etcd member not ready in 30 s")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def cluster_ready(run: Run, pki: Pki, rep: int) -> float:
    from harness.backends.local import LocalBackend

    backend = LocalBackend(run)
    try:
        cluster = EtcdCluster(backend, run, pki, size=3, name=f"bench{rep}")
        t0 = time.monotonic()
        with cluster:
            return time.monotonic() - t0
    finally:
        backend.close()


def main() -> int:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    bare, cluster = [], []
    with (
        tempfile.TemporaryDirectory(prefix="faultline-bench-") as root,
        Run.open(Path(root), watchdog=False) as run,
    ):
        # The backend's port locks live under the state root too.
        os.environ["FAULTLINE_STATE_DIR"] = root
        pki = Pki.create(run)
        for rep in range(reps):
            bare.append(bare_member(run, pki, rep))
            cluster.append(cluster_ready(run, pki, rep))
            print(
                f"rep {rep}: bare member {bare[-1]:.3f} s,"
                f" 3-member TLS cluster {cluster[-1]:.3f} s, ratio {cluster[-1] / bare[-1]:.2f}"
            )
    b, c = statistics.median(bare), statistics.median(cluster)
    print(f"median over {reps}: bare member {b:.3f} s (max {max(bare):.3f} s)")
    print(f"median over {reps}: 3-member TLS cluster ready {c:.3f} s (max {max(cluster):.3f} s)")
    print(f"ratio cluster median / bare median: {c / b:.2f}")
    print(f"ratio cluster median / slowest bare member: {c / max(bare):.2f} (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
