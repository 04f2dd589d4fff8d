"""What this machine has, what each backend needs, and the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import gobuild
from harness.errors import MissingDependency

__all__ = ["Finding", "cgroup_version", "diagnose", "local_backend_ready"]


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str
    needed_by: str  # "local", "docker", "kubernetes", "observe" (faultline observe), "all"


def cgroup_version() -> int | None:
    """2 for a unified hierarchy, 1 for v1 controllers, None when neither is usable."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return 2
    if (root / "memory").is_dir() and (root / "cpu").is_dir():
        return 1
    return None


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"({err})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "(no version output)"


def _binary(name: str, version_args: list[str], fix: str, needed_by: str) -> Finding:
    path = shutil.which(name)
    if path is None:
        return Finding(name, False, "not found on PATH", fix, needed_by)
    return Finding(name, True, f"{path}: {_version([path, *version_args])}", "", needed_by)


def _docker_engine() -> Finding:
    fix = "apt-get install -y docker.io && (dockerd >/var/log/dockerd.log 2>&1 &)"
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return Finding("docker engine", False, "docker SDK missing", "pip install docker", "docker")
    try:
        client = docker.from_env(timeout=5)
        version = client.version().get("Version", "?")
        client.close()
    except DockerException as err:
        return Finding("docker engine", False, f"unreachable: {err}", fix, "docker")
    from harness.backends.docker import REAPING

    return Finding("docker engine", True, f"version {version}; reaping: {REAPING}", "", "docker")


def _go() -> Finding:
    try:
        go = gobuild.find_go()
    except MissingDependency as err:
        return Finding(
            "go", False, "not found (PATH, $FAULTLINE_GO, /usr/local/go)", err.fix, "all"
        )
    return Finding("go", True, f"{go}: {gobuild.go_version(go)}", "", "all")


def _delve() -> Finding:
    from harness.observe.delve import DLV_VERSION, dlv_binary

    try:
        dlv = dlv_binary(build=False)
    except MissingDependency as err:
        return Finding("dlv", False, "not on PATH nor in the bin cache", err.fix, "observe")
    out = subprocess.run(
        [str(dlv), "version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    version = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("Version:")), "?")
    detail = f"{dlv}: {version} (faultline pins {DLV_VERSION}; it attaches to observed programs)"
    return Finding("dlv", True, detail, "", "observe")


def _cgroups() -> Finding:
    v = cgroup_version()
    fix = "mount cgroup v1 controllers or cgroup2 at /sys/fs/cgroup (run as root)"
    if v is None:
        return Finding("cgroups", False, "no usable hierarchy", fix, "local")
    writable = os.access("/sys/fs/cgroup" + ("" if v == 2 else "/memory"), os.W_OK)
    detail = f"v{v}, {'writable' if writable else 'NOT writable (run as root)'}"
    return Finding("cgroups", writable, detail, "" if writable else fix, "local")


def diagnose() -> list[Finding]:
    apt = "apt-get install -y"
    return [
        _binary("etcd", ["--version"], f"{apt} etcd-server", "all"),
        _binary("etcdctl", ["version"], f"{apt} etcd-client", "all"),
        _binary("prometheus", ["--version"], f"{apt} prometheus", "all"),
        _binary("promtool", ["--version"], f"{apt} prometheus", "all"),
        _go(),
        _binary("iptables", ["--version"], f"{apt} iptables", "local"),
        _binary("ip", ["-V"], f"{apt} iproute2", "local"),
        _cgroups(),
        _delve(),
        _docker_engine(),
        *_kubernetes(apt),
    ]


def _kubernetes(apt: str) -> list[Finding]:
    """What `faultline cluster up` needs: the Debian packages, its build, a running cluster."""
    from harness.kube import cluster

    found = [
        Finding(
            pkg,
            path.exists(),
            str(path) if path.exists() else "not installed",
            "" if path.exists() else f"{apt} {pkg} (or .ci/setup)",
            "kubernetes",
        )
        for pkg, path in cluster.PACKAGES.items()
        if pkg != "etcd-server"
    ]
    built = cluster.cache_root() / cluster.build_key() / "bin"
    ok = built.is_dir()
    found.append(
        Finding(
            f"kubernetes {cluster.VERSION} build",
            ok,
            str(built) if ok else "not built yet (needs Go and the module proxy once)",
            "" if ok else "faultline cluster up (builds it, cached)",
            "kubernetes",
        )
    )
    st = cluster.status()
    found.append(
        Finding(
            "kubernetes cluster",
            st["up"],
            f"up: {st['ready']['kubeconfig']}" if st["up"] else "not running",
            "" if st["up"] else "faultline cluster up (as root)",
            "kubernetes",
        )
    )
    return found


def local_backend_ready(findings: list[Finding]) -> bool:
    return all(f.ok for f in findings if f.needed_by in ("all", "local"))
