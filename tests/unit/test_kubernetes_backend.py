"""The kubernetes backend's pure parts: CRI log parsing, image archives, names, refusals.

What needs a cluster (everything the backend does to Pods) is in the compliance
suite (tests/contract, ``kubernetes`` parameter), which skips without one.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import cleanup
from harness.backends.base import Placement, RestartMode, RestartPolicy, WorkloadSpec
from harness.backends.kubernetes import (
    DEFAULT_KUBECONFIG,
    KubernetesBackend,
    _normalize,
    _Workload,
    cri_log_lines,
    docker_archive,
    find_kubeconfig,
    namespace_for,
)
from harness.cleanup import delete_kube_namespace
from harness.errors import BackendUnavailable
from harness.pytest_plugin import make_backend
from harness.run import Run


def test_cri_lines_join_partial_records_and_keep_an_open_one() -> None:
    data = (
        b"2026-12-03T16:00:00.1Z stdout F up\n"
        b"2026-12-03T16:00:00.2Z stderr P half \n"
        b"2026-12-03T16:00:00.3Z stderr F done\n"
        b"2026-12-03T16:00:00.4Z stdout F \n"
        b"2026-12-03T16:00:00.5Z stdout P open-\n"
    )
    lines, partial = cri_log_lines(data)
    assert lines == [b"up", b"half done", b""]
    assert partial == b"open-"
    lines, partial = cri_log_lines(b"2026-12-03T16:00:00.6Z stdout F ended\n", partial)
    assert (lines, partial) == ([b"open-ended"], b"")


def test_cri_text_keeps_its_spaces() -> None:
    lines, _ = cri_log_lines(b"2026-12-03T16:00:00Z stdout F a  b c\n")
    assert lines == [b"a  b c"]


def _members(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_docker_archive_is_a_consistent_one_layer_image() -> None:
    config = {"Entrypoint": ["/usr/bin/x"], "StopSignal": "SIGINT"}
    blob = docker_archive("faultline/x:abc", {"/usr/bin/x": b"\x7fELF..."}, config)
    members = _members(blob)
    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == ["faultline/x:abc"]
    layer = members[manifest["Layers"][0]]
    image = json.loads(members[manifest["Config"]])
    # The config names the layer by its digest, and is itself named by its digest.
    assert image["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    assert manifest["Config"] == f"{hashlib.sha256(members[manifest['Config']]).hexdigest()}.json"
    assert image["config"] == config
    assert image["os"] == "linux"
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        files = {m.name: m for m in tar.getmembers()}
    assert files["tmp"].isdir() and files["tmp"].mode == 0o1777
    assert files["usr/bin/x"].mode == 0o755


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("faultline/workload:3f9a", "docker.io/faultline/workload:3f9a"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
    ],
)
def test_image_references_are_normalized_as_containerd_names_them(ref: str, full: str) -> None:
    assert _normalize(ref) == full


def test_the_namespace_is_a_dns_label_naming_the_run() -> None:
    ns = namespace_for("20261203-164120-abcdef")
    assert ns == "faultline-20261203-164120-abcdef"
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", ns)


def test_kubeconfig_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/first:{tmp_path}/second")
    assert find_kubeconfig() == tmp_path / "first"
    monkeypatch.delenv("KUBECONFIG")
    expected = DEFAULT_KUBECONFIG if DEFAULT_KUBECONFIG.is_file() else home / ".kube" / "config"
    assert find_kubeconfig() == expected


def test_no_cluster_is_unavailable_saying_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with Run.open(tmp_path / "state", watchdog=False) as run:
        with pytest.raises(BackendUnavailable, match="faultline cluster up"):
            KubernetesBackend(run)
        with pytest.raises(BackendUnavailable, match="faultline cluster up"):
            make_backend("kubernetes", run)
        assert run.ledger.entries() == []


def test_an_unreachable_cluster_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # A server nobody listens on: port 9 (discard) on loopback.
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with Run.open(tmp_path / "state", watchdog=False) as run:
        with pytest.raises(BackendUnavailable, match="faultline cluster up"):
            KubernetesBackend(run)
        assert run.ledger.entries() == []


def test_the_namespace_inverse_refuses_foreign_names_and_ends_with_the_cluster(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="not faultline's"):
        delete_kube_namespace("r", "kube-system", str(tmp_path / "kubeconfig"))
    # No kubeconfig any more: the cluster is gone, and the namespace with it.
    delete_kube_namespace("r", "faultline-r", str(tmp_path / "kubeconfig"))


def _status(restarts: int, *, exit_code: int | None, waiting: str | None = None) -> Any:
    terminated = None if exit_code is None else SimpleNamespace(exit_code=exit_code)
    state = SimpleNamespace(
        terminated=terminated if waiting is None else None,
        waiting=SimpleNamespace(reason=waiting) if waiting else None,
        running=None if exit_code is not None else object(),
    )
    return SimpleNamespace(
        restart_count=restarts, state=state, last_state=SimpleNamespace(terminated=terminated)
    )


def _workload(policy: RestartPolicy) -> _Workload:
    placement = Placement("w", "127.0.0.1", {}, "127.0.0.1", {}, {})
    w = _Workload(placement, [])
    w.spec = WorkloadSpec("w", ("x",), placement, restart=policy)
    return w


@pytest.mark.parametrize(
    ("mode", "status", "exhausted"),
    [
        # the exit after the 3rd restart, kubelet now backing off: the harness ends it
        (RestartMode.ON_FAILURE, _status(3, exit_code=3, waiting="CrashLoopBackOff"), True),
        (RestartMode.ON_FAILURE, _status(3, exit_code=3), True),
        (RestartMode.ALWAYS, _status(3, exit_code=0), True),
        # a clean exit under on-failure is not restarted anyway
        (RestartMode.ON_FAILURE, _status(3, exit_code=0), False),
        # fewer restarts than allowed, or still running
        (RestartMode.ON_FAILURE, _status(2, exit_code=3, waiting="CrashLoopBackOff"), False),
        (RestartMode.ALWAYS, _status(3, exit_code=None), False),
        # waiting for another reason (being created): the last exit is not a new one
        (RestartMode.ALWAYS, _status(3, exit_code=3, waiting="ContainerCreating"), False),
    ],
)
def test_max_restarts_is_reached_only_by_an_exit_kubelet_would_restart(
    mode: RestartMode, status: Any, exhausted: bool
) -> None:
    w = _workload(RestartPolicy(mode, max_restarts=3))
    assert KubernetesBackend._exhausted(w, status) is exhausted


def test_without_max_restarts_nothing_is_exhausted() -> None:
    w = _workload(RestartPolicy(RestartMode.ALWAYS))
    assert not KubernetesBackend._exhausted(w, _status(50, exit_code=1))


def test_a_longer_cfs_period_widens_the_pod_limit_to_hold_one_whole_quota() -> None:
    # 0.1 core per 1 s is 100 ms of CPU at once: the Pod must allow 1 core per 100 ms.
    assert cleanup.kube_pod_cpu(0.1, 1_000_000, 8) == pytest.approx(1.0)
    assert cleanup.kube_pod_cpu(2.0, 1_000_000, 8) == 8.0  # never above the host
    assert cleanup.kube_pod_cpu(0.5, 100_000, 8) == 0.5
    assert cleanup.kube_pod_cpu(0.5, 10_000, 8) == 0.5  # shorter: the Pod never binds


class _V1Cpu:
    """A v1 cpu cgroup directory whose writes keep quota/period within ``parent`` cores."""

    def __init__(self, path: Path, parent: float) -> None:
        self.path, self.parent = path, parent
        (path / "cpu.cfs_quota_us").write_text("50000")  # 0.5 core
        (path / "cpu.cfs_period_us").write_text("100000")

    def check(self) -> None:
        quota = int((self.path / "cpu.cfs_quota_us").read_text())
        period = int((self.path / "cpu.cfs_period_us").read_text())
        assert quota / period <= self.parent, (quota, period)


# The wrong order would pass through 9 cores (quota first) and 50 cores (period first).
@pytest.mark.parametrize(("quota", "period"), [(900_000, 1_000_000), (1_000, 1_000)])
def test_set_cfs_keeps_the_ratio_within_the_parent_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: int, period: int
) -> None:
    d = _V1Cpu(tmp_path, parent=1.0)
    real = Path.write_text

    def write(self: Path, text: str, *a: Any, **kw: Any) -> int:
        n = real(self, text, *a, **kw)
        d.check()
        return n

    monkeypatch.setattr(Path, "write_text", write)
    cleanup.set_cfs(tmp_path, quota, period)
    monkeypatch.undo()
    assert cleanup.read_cfs(tmp_path) == (quota, period)


def test_the_limits_inverse_refuses_foreign_namespaces(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not faultline's"):
        cleanup.kube_set_limits(
            "r", "kube-system", str(tmp_path / "kc"), "p", None, None, 100_000, None
        )
    # No kubeconfig any more: the cluster is gone, and with it the Pod.
    cleanup.kube_set_limits(
        "r", "faultline-r", str(tmp_path / "kc"), "p", None, None, 100_000, None
    )
