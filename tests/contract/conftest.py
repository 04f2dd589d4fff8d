"""Fixtures of the backend compliance suite: one started backend per name.

Every test in this directory takes the ``backend`` fixture and so runs once
per backend name in :data:`BACKENDS`; a backend whose prerequisites are
missing is skipped with the way to get them. After each test the backend and
the run are closed and :func:`leftovers` must find nothing.

Workloads are modes of one static Go program, ``go_targets/cmd/workload``
(built once per session by :func:`harness.gobuild.build`), so the same
command runs as a host process, as a container's PID 1 from a scratch image,
or in a pod.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends.base import Backend
from harness.errors import BackendUnavailable
from harness.run import Run

BACKENDS = ["local", "docker", "kubernetes"]


def make_backend(name: str, run: Run) -> Backend:
    """Build the named backend for ``run``, or skip saying what is missing."""
    if name == "local":
        if os.geteuid() != 0:
            pytest.skip("the local backend contract needs root (cgroups, iptables): run as root")
        from harness.backends.local import LocalBackend

        return LocalBackend(run)
    if name == "docker":
        try:
            module = importlib.import_module("harness.backends.docker")
        except ImportError:
            pytest.skip("harness.backends.docker is not written yet")
        try:
            import docker

            docker.from_env(timeout=5).ping()
        except Exception as err:  # noqa: BLE001 - any failure means no usable engine
            pytest.skip(f"no Docker engine ({err}): apt-get install docker.io and start dockerd")
        backend: Backend = module.DockerBackend(run)
        return backend
    if name == "kubernetes":
        from harness.backends.kubernetes import KubernetesBackend

        try:
            return KubernetesBackend(run)
        except BackendUnavailable as err:  # its message says `faultline cluster up`
            pytest.skip(str(err))
    raise AssertionError(f"unknown backend {name}")


def leftovers(run_id: str, *, but_watchdog: bool = False) -> list[str]:
    """Everything of run ``run_id`` still on the host: processes, cgroups, chains, containers.

    ``but_watchdog`` leaves out the run's watchdog, alive until the run closes.
    """
    pids = set(cleanup.tagged_pids(run_id))
    if but_watchdog:
        pids -= set(cleanup.tagged_pids(run_id, "watchdog"))
    found = [f"process {pid}" for pid in sorted(pids)]
    roots = [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]
    found += [f"cgroup {r}" for r in roots if (r / "faultline" / run_id).exists()]
    if shutil.which("iptables"):
        rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
        tag = "FL-" + run_id.replace("-", "")[8:] + "-"
        found += [f"iptables {line}" for line in rules.splitlines() if tag in line]
    try:
        import docker

        client = docker.from_env(timeout=5)
        found += [
            f"container {c.name}"
            for c in client.containers.list(all=True, filters={"label": f"faultline.run={run_id}"})
        ]
    except Exception:  # noqa: BLE001 - no engine: no containers can be left
        pass
    return found + kube_leftovers(run_id)


def kube_leftovers(run_id: str) -> list[str]:
    """Namespaces, Pods and Services labelled with the run, on the cluster the backend uses."""
    try:
        from kubernetes import client, config

        from harness.backends.kubernetes import find_kubeconfig

        path = find_kubeconfig()
        if path is None or not path.is_file():
            return []
        api = config.new_client_from_config(config_file=str(path))
    except Exception:  # noqa: BLE001 - no client or no kubeconfig: nothing can be left
        return []
    selector = f"faultline.run={run_id}"
    try:
        core = client.CoreV1Api(api)
        found = [
            f"namespace {ns.metadata.name}"
            for ns in core.list_namespace(label_selector=selector, _request_timeout=5).items
        ]
        found += [
            f"pod {p.metadata.namespace}/{p.metadata.name}"
            for p in core.list_pod_for_all_namespaces(label_selector=selector).items
        ]
        found += [
            f"service {s.metadata.namespace}/{s.metadata.name}"
            for s in core.list_service_for_all_namespaces(label_selector=selector).items
        ]
    except Exception:  # noqa: BLE001 - a cluster that does not answer cannot be checked
        return []
    finally:
        api.close()
    return found


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "faultline-state"
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(d))
    return d


@pytest.fixture
def run(state_dir: Path) -> Iterator[Run]:
    r = Run.open(state_dir)
    yield r
    r.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, run: Run) -> Iterator[Backend]:
    b = make_backend(request.param, run)
    try:
        yield b
    finally:
        b.close()
        assert run.close() == []
        assert leftovers(run.run_id) == []
