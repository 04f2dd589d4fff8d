"""R1 on the kubernetes backend: a run SIGKILLed mid-run is fully reaped by ``faultline clean``.

Each iteration starts a victim run (watchdog off, so ``clean`` does all the
work) that makes the run's namespace, two Pods (one with a Service), freezes
one and isolates it from the other, printing each stage as it is reached. It
is SIGKILLed at one stage per iteration, in turn (namespace recorded, first
Pod running, paused, isolated), a random 0-300 ms after the stage. Then
``faultline clean`` (the console script) runs, and the cluster (namespaces,
Pods, Services labelled ``faultline.run=<run id>``) and the host (tagged
processes, cgroups, iptables, run directory, port locks) are searched.

FAULTLINE_R1_KUBE_ITERATIONS (default 4: each stage once) sizes the campaign.
Needs a cluster: ``faultline cluster up`` starts one.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import BackendUnavailable
from harness.run import Run
from tests.contract.conftest import kube_leftovers
from tests.reliability.conftest import clean_cli, env_int, leftovers

ITERATIONS = env_int("FAULTLINE_R1_KUBE_ITERATIONS", 4)
STAGES = ("namespace", "pod", "paused", "isolated")

VICTIM = textwrap.dedent(
    """
    import sys
    from harness.backends.base import Probe, ProbeKind, WorkloadSpec
    from harness.backends.kubernetes import KubernetesBackend
    from harness.run import Run

    wl = sys.argv[1]
    run = Run.open(watchdog=False)  # so that clean, not the watchdog, does the reaping
    print("run", run.run_id, flush=True)
    backend = KubernetesBackend(run)
    backend._ensure_namespace()
    print("namespace", flush=True)
    server = backend.plan("server", ["http"])
    backend.start(WorkloadSpec("server", (wl, "http", str(server.port("http"))), server,
                               readiness=Probe(ProbeKind.TCP, "http")))
    print("pod", flush=True)
    client = backend.plan("client", [])
    backend.start(WorkloadSpec("client", (wl, "connect", server.internal("http")), client))
    backend.pause("client")
    print("paused", flush=True)
    backend.isolate("server", ["client"])
    print("isolated", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def cluster(tmp_path: Path) -> None:
    """Skip unless a cluster answers (``faultline cluster up`` starts one)."""
    from harness.backends.kubernetes import KubernetesBackend

    with Run.open(tmp_path / "probe-state", watchdog=False) as run:
        try:
            KubernetesBackend(run).close()
        except BackendUnavailable as err:
            pytest.skip(str(err))


def _stage_reached(victim: subprocess.Popen[str], stage: str, lines: list[str]) -> None:
    assert victim.stdout is not None
    while True:
        line = victim.stdout.readline()
        if not line:
            assert victim.stderr is not None
            pytest.fail(f"victim ended before {stage}: {victim.stderr.read()[-2000:]}")
        lines.append(line.strip())
        if line.strip() == stage:
            return


def test_sigkilled_kubernetes_runs_are_reaped_by_clean(
    cluster: None, tmp_path: Path, workload_bin: str
) -> None:
    rng = random.Random(13)
    root_dir = Path(__file__).resolve().parents[2]
    figures = []
    for i in range(ITERATIONS):
        state = tmp_path / f"state-{i}"
        stage = STAGES[i % len(STAGES)]
        victim = subprocess.Popen(
            [sys.executable, "-c", VICTIM, workload_bin],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root_dir,
            env={**os.environ, "FAULTLINE_STATE_DIR": str(state), "PYTHONPATH": str(root_dir)},
        )
        lines: list[str] = []
        try:
            _stage_reached(victim, stage, lines)
            time.sleep(rng.uniform(0, 0.3))
        finally:
            victim.kill()
            victim.wait()
        run_id = lines[0].split()[1]
        assert kube_leftovers(run_id), "the check sees the namespace the victim made"
        t0 = time.monotonic()
        res = clean_cli(state, timeout=300)
        took = time.monotonic() - t0
        assert res.returncode == 0, res.stdout + res.stderr
        assert kube_leftovers(run_id) == []
        assert leftovers(run_id, state) == []
        figures.append((stage, took))
        again = clean_cli(state)
        assert again.returncode == 0 and run_id not in again.stdout  # nothing left to do
    print(
        "\nR1 kubernetes: clean after SIGKILL at " + ", ".join(f"{s}: {t:.1f}s" for s, t in figures)
    )
