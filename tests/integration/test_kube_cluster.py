"""faultline cluster against real components: a Pod from a locally imported image runs.

Uses the cluster when one is up (and leaves it up); otherwise brings one up and
takes it down again, checking that down leaves nothing behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.kube import cluster

BUSYBOX = Path("/bin/busybox")
IMAGE = "docker.io/faultline/kube-it-busybox:1"
POD = "faultline-it"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sudo, or run as root"),
    pytest.mark.skipif(
        bool(cluster.missing_packages()),
        reason=f"needs {' '.join(cluster.missing_packages())}: run .ci/setup",
    ),
    pytest.mark.skipif(
        not BUSYBOX.exists(), reason="needs /bin/busybox: apt-get install busybox-static"
    ),
]


@pytest.fixture(scope="module")
def ready() -> Iterator[dict[str, Any]]:
    if cluster.status()["up"]:
        yield cluster.status()["ready"]
        return
    with cluster.running() as r:
        yield r
    assert not cluster.STATE_DIR.exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{cluster.CGROUP}"))
    assert not Path(f"/sys/class/net/{cluster.BRIDGE}").exists()


def test_a_pod_from_an_imported_image_runs(ready: dict[str, Any], tmp_path: Path) -> None:
    kubernetes = pytest.importorskip("kubernetes", reason="pip install kubernetes")
    tar = tmp_path / "image.tar"
    tar.write_bytes(cluster.scratch_image_tar([(BUSYBOX, "/bin/sh")], IMAGE, ["/bin/sh"]))
    cluster.import_image(tar)
    kubernetes.config.load_kube_config(ready["kubeconfig"])
    core = kubernetes.client.CoreV1Api()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "sh",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "echo ran-in-pod; exec sleep 3600"],
                }
            ],
        },
    }
    core.create_namespaced_pod("default", pod)
    try:
        deadline = time.monotonic() + 60
        phase = None
        while time.monotonic() < deadline:
            phase = core.read_namespaced_pod(POD, "default").status.phase
            if phase == "Running":
                break
            time.sleep(0.5)
        assert phase == "Running"
        logs = ""
        while time.monotonic() < deadline and "ran-in-pod" not in logs:
            logs = core.read_namespaced_pod_log(POD, "default")
            time.sleep(0.2)
        assert "ran-in-pod" in logs
    finally:
        core.delete_namespaced_pod(POD, "default", grace_period_seconds=0)


def test_status_reports_every_component(ready: dict[str, Any]) -> None:
    st = cluster.status()
    assert st["up"] and st["apiserver_ready"]
    assert all(st["processes"].values())
