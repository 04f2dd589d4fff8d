"""Pure logic of harness.kube.cluster: build key, flags, generated configs, image archive."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from harness.kube import cluster
from harness.kube.pki import ClusterPki

LAYOUT = cluster.Layout(Path("/var/lib/faultline-kube"))


def test_build_key_follows_the_wrapper_module(tmp_path: Path) -> None:
    fixture = tmp_path / "kubernetes"
    shutil.copytree(cluster.FIXTURE_DIR, fixture)
    key = cluster.build_key(fixture)
    assert key.startswith(f"{cluster.VERSION}-")
    assert cluster.build_key(fixture) == key
    (fixture / "README.txt").write_text("not a build input")
    assert cluster.build_key(fixture) == key
    gomod = fixture / "go.mod"
    gomod.write_text(gomod.read_text().replace("v0.34.4", "v0.34.5", 1))
    assert cluster.build_key(fixture) != key
    assert cluster.build_key(cluster.FIXTURE_DIR, "v1.34.5") != cluster.build_key()


def test_wrapper_pins_every_staging_module_to_the_release() -> None:
    gomod = (cluster.FIXTURE_DIR / "go.mod").read_text()
    assert f"require k8s.io/kubernetes {cluster.VERSION}" in gomod
    for mod in ("api", "apimachinery", "client-go", "kubelet", "kubectl", "cri-api"):
        assert f"k8s.io/{mod} => k8s.io/{mod} v0.34.4" in gomod


def test_ldflags_set_the_version_for_both_version_packages() -> None:
    flags = cluster.ldflags("v1.34.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=34" in flags


def test_kubelet_config_stays_on_loopback_under_its_cgroup() -> None:
    cfg = cluster.kubelet_config(LAYOUT)
    assert cfg["kind"] == "KubeletConfiguration"
    assert cfg["address"] == cfg["healthzBindAddress"] == "127.0.0.1"
    assert cfg["readOnlyPort"] == 0
    assert cfg["cgroupRoot"] == "/faultline-kube"
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["containerRuntimeEndpoint"] == "unix:///var/lib/faultline-kube/containerd.sock"
    assert cfg["authentication"]["anonymous"]["enabled"] is False


def test_containerd_config_is_private_to_the_state_dir() -> None:
    text = cluster.containerd_config(LAYOUT, "docker.io/faultline/faultline-pause:abc")
    assert 'address = "/var/lib/faultline-kube/containerd.sock"' in text
    assert 'root = "/var/lib/faultline-kube/containerd/root"' in text
    assert 'sandbox_image = "docker.io/faultline/faultline-pause:abc"' in text
    assert "restrict_oom_score_adj = true" in text
    assert 'conf_dir = "/var/lib/faultline-kube/cni/net.d"' in text


def test_cni_config_is_one_bridge_without_masquerade() -> None:
    (plugin,) = cluster.cni_config(LAYOUT)["plugins"]
    assert plugin["type"] == "bridge" and plugin["bridge"] == cluster.BRIDGE
    assert plugin["ipMasq"] is False
    assert plugin["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]]


def test_component_commands_bind_loopback() -> None:
    build = cluster.Build(Path("/bin-dir"), 0.0, cached=True)
    argv = cluster.commands(LAYOUT, build, Path("/usr/bin/etcd"))
    assert list(argv) == list(cluster.ORDER)
    api = argv["kube-apiserver"]
    assert "--bind-address=127.0.0.1" in api and "--secure-port=16443" in api
    assert "--etcd-servers=http://127.0.0.1:12379" in api
    assert "--kubelet-preferred-address-types=Hostname" in api
    assert not any(a.startswith("--node-ip") for a in argv["kubelet"])
    assert "--listen-client-urls=http://127.0.0.1:12379" in argv["etcd"]
    for name in ("kube-controller-manager", "kube-scheduler"):
        assert "--bind-address=127.0.0.1" in argv[name]


def test_kubeconfig_loads_in_the_kubernetes_client(tmp_path: Path) -> None:
    kubernetes = pytest.importorskip("kubernetes", reason="pip install kubernetes")
    layout = cluster.Layout(tmp_path)
    pki = ClusterPki(layout.pki)
    pki.issue("client-admin", "faultline-admin", organization="system:masters")
    path = layout.kubeconfig("admin")
    path.write_text(json.dumps(cluster.kubeconfig(layout, "admin")))
    conf = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(path), client_configuration=conf)
    assert conf.host == "https://127.0.0.1:16443"
    assert Path(conf.ssl_ca_cert).read_bytes() == pki.ca_cert.read_bytes()


def test_scratch_image_tar_is_a_docker_archive(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    binary.chmod(0o755)
    data = cluster.scratch_image_tar([(binary, "/pause")], "docker.io/x/y:1", ["/pause"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (manifest,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest["RepoTags"] == ["docker.io/x/y:1"]
        config = json.loads(tar.extractfile(manifest["Config"]).read())  # type: ignore[union-attr]
        layer = tar.extractfile(manifest["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        info = inner.getmember("pause")
        assert info.mode == 0o755
        assert inner.extractfile(info).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_status_of_an_absent_cluster_is_down(tmp_path: Path) -> None:
    st = cluster.status(cluster.Layout(tmp_path / "none"))
    assert st["up"] is False and st["ready"] is None
    assert set(st["processes"]) == set(cluster.ORDER)


def test_cluster_up_without_packages_exits_2_naming_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    real_up, real_status = cluster.up, cluster.status
    layout = cluster.Layout(tmp_path / "state")
    monkeypatch.setattr(cluster, "PACKAGES", {"containerd": tmp_path / "no-containerd"})
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster, "status", lambda given=layout: real_status(given))
    monkeypatch.setattr(cluster, "up", lambda: real_up(layout))
    assert main(["cluster", "up"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install containerd" in err and ".ci/setup" in err
    assert not (tmp_path / "state").exists()


def test_cluster_import_of_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["cluster", "import", "/nonexistent/image.tar"]) == 2
    assert "TAR: '/nonexistent/image.tar' is not a file" in capsys.readouterr().err
