"""A real one-node Kubernetes cluster on 127.0.0.1, with no image registry.

The components are built from the Go module proxy (``fixtures/kubernetes``: a
wrapper module pinning k8s.io/kubernetes and every staging module to one
release, plus a tiny ``pause`` program), cached under
``~/.cache/faultline/kubernetes/<version>-<hash>``. containerd, runc and the CNI
plugins come from Debian packages (.ci/setup installs them); etcd is the
machine's. The pause image is written here, FROM scratch, and imported into
containerd, as any image a Pod runs must be (:func:`import_image`).

Everything lives in :data:`STATE_DIR` (owned by faultline): config, PKI,
kubeconfigs, logs, pid files, containerd's and the kubelet's roots. ``up``
writes ``READY`` (JSON, with the kubeconfig path) once the node is Ready and a
test Pod has really run; ``down`` stops what the pid files name, kills what is
left in the cluster's own cgroups (Pods, containerd shims started for our
socket), unmounts what is mounted under the state dir, deletes the CNI bridge,
the cgroups and the state dir. ``down`` is idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ComponentStartError, MissingDependency
from harness.gobuild import find_go, go_version
from harness.kube.pki import ClusterPki

__all__ = [
    "STATE_DIR",
    "Layout",
    "build",
    "built",
    "down",
    "import_image",
    "missing_packages",
    "running",
    "scratch_image_tar",
    "status",
    "up",
]

log = logging.getLogger(__name__)

VERSION = "v1.34.4"
FIXTURE_DIR = Path(__file__).resolve().parent.parent.parent / "fixtures" / "kubernetes"
STATE_DIR = Path("/var/lib/faultline-kube")
NODE = "localhost"
HOST = "127.0.0.1"
API_PORT = 16443
ETCD_PORT = 12379
ETCD_PEER_PORT = 12380
BRIDGE = "flkube0"
CGROUP = "faultline-kube"  # the kubelet's cgroupRoot, in every hierarchy
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
CONTAINERD_NAMESPACE = "k8s.io"
PAUSE_REPO = "docker.io/faultline/faultline-pause"
COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
)
# Debian packages the cluster needs, and a file each one installs.
PACKAGES = {
    "containerd": Path("/usr/bin/containerd"),
    "runc": Path("/usr/sbin/runc"),
    "containernetworking-plugins": Path("/usr/lib/cni/bridge"),
    "etcd-server": Path("/usr/bin/etcd"),
}
CNI_BIN_DIR = Path("/usr/lib/cni")
BUILD_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
# Started first to last; stopped in reverse.
ORDER = (
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
)
SETUP_FIX = "run .ci/setup (as root), or: apt-get install {}"


def cache_root() -> Path:
    return Path.home() / ".cache" / "faultline" / "kubernetes"


# Build -------------------------------------------------------------------------------


def build_key(fixture: Path = FIXTURE_DIR, version: str = VERSION) -> str:
    """``<version>-<hash>``: the hash covers the wrapper module's go.mod, go.sum and
    Go sources, so a change to any pin rebuilds."""
    h = hashlib.sha256()
    for p in sorted(fixture.rglob("*")):
        if p.is_file() and (p.suffix == ".go" or p.name in ("go.mod", "go.sum")):
            h.update(p.relative_to(fixture).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return f"{version}-{h.hexdigest()[:12]}"


def ldflags(version: str = VERSION) -> str:
    """The -X flags upstream's build sets, so ``--version`` and the node report it."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


@dataclass(frozen=True)
class Build:
    bin_dir: Path
    seconds: float
    cached: bool

    def bin(self, name: str) -> Path:
        return self.bin_dir / name


def built(
    fixture: Path = FIXTURE_DIR, version: str = VERSION, root: Path | None = None
) -> Build | None:
    """The cached build of :func:`build`, or None when there is none yet (builds nothing)."""
    t0 = time.monotonic()
    bin_dir = (root or cache_root()) / build_key(fixture, version) / "bin"
    if all((bin_dir / c).is_file() for c in (*COMMANDS, "pause")):
        return Build(bin_dir, time.monotonic() - t0, cached=True)
    return None


def build(fixture: Path = FIXTURE_DIR, version: str = VERSION, root: Path | None = None) -> Build:
    """The components' binaries, built once per :func:`build_key` under ``root``
    (default :func:`cache_root`). Go's module and build caches are the environment's."""
    t0 = time.monotonic()
    cached = built(fixture, version, root)
    if cached is not None:
        return cached
    out = (root or cache_root()) / build_key(fixture, version)
    bin_dir = out / "bin"
    go = find_go()
    gover = go_version(go)
    tmp = out / "bin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "nice",
        "-n",
        "10",
        str(go),
        "build",
        "-trimpath",
        "-ldflags",
        ldflags(version),
        "-o",
        f"{tmp}/",
        *(f"k8s.io/kubernetes/cmd/{c}" for c in COMMANDS),
        "./pause",
    ]
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    log.info("building Kubernetes %s (%s): %s", version, gover, " ".join(cmd))
    with (out / "build.log").open("w") as logf:
        logf.write(" ".join(cmd) + "\n")
        logf.flush()
        try:
            res = subprocess.run(
                cmd,
                cwd=fixture,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise ComponentStartError(f"go build timed out; see {out / 'build.log'}") from err
    if res.returncode != 0:
        tail = (out / "build.log").read_text()[-2000:]
        raise ComponentStartError(f"go build failed (exit {res.returncode}):\n{tail}")
    shutil.rmtree(bin_dir, ignore_errors=True)
    tmp.rename(bin_dir)
    seconds = time.monotonic() - t0
    (out / "build.json").write_text(
        json.dumps(
            {
                "version": version,
                "go": gover,
                "seconds": round(seconds, 1),
                "commands": [*COMMANDS, "pause"],
            },
            indent=2,
        )
    )
    return Build(bin_dir, seconds, cached=False)


def missing_packages() -> list[str]:
    """Debian packages whose files are absent."""
    return [pkg for pkg, path in PACKAGES.items() if not path.exists()]


# Configuration (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where everything of one cluster lives."""

    state: Path = STATE_DIR

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def ready(self) -> Path:
        return self.state / "READY"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    def kubeconfig(self, user: str) -> Path:
        return self.state / f"{user}.kubeconfig"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"


def server_url() -> str:
    return f"https://{HOST}:{API_PORT}"


def kubeconfig(layout: Layout, user: str) -> dict[str, Any]:
    """A kubeconfig for ``client-<user>`` certs (kubectl and the Python client read it)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "faultline",
                "cluster": {
                    "server": server_url(),
                    "certificate-authority": str(layout.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": f"faultline-{user}",
                "user": {
                    "client-certificate": str(layout.cert(f"client-{user}")),
                    "client-key": str(layout.key(f"client-{user}")),
                },
            }
        ],
        "contexts": [
            {"name": "faultline", "context": {"cluster": "faultline", "user": f"faultline-{user}"}}
        ],
        "current-context": "faultline",
    }


def containerd_config(layout: Layout, pause_image: str) -> str:
    """containerd's config: its own root, state and socket under the state dir."""
    s = layout.state
    return f"""version = 2
root = "{s}/containerd/root"
state = "{s}/containerd/state"
oom_score = 0

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{s}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  stream_server_address = "{HOST}"
  stream_server_port = "0"
  enable_selinux = false
  # Some sandboxes (this CI VM) deny lowering oom_score_adj even to root: clamp to ours.
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{PACKAGES["runc"]}"
  Root = "{s}/containerd/runc"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf_dir}"
  max_conf_num = 1
"""


def cni_config(layout: Layout) -> dict[str, Any]:
    """A bridge network (no masquerade: Pods talk to loopback-side peers only)."""
    return {
        "cniVersion": "0.4.0",
        "name": "faultline-kube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "dataDir": str(layout.state / "cni" / "ipam"),
                },
            }
        ],
    }


def kubelet_config(layout: Layout) -> dict[str, Any]:
    """KubeletConfiguration: cgroupfs under :data:`CGROUP`, loopback only, no swap check,
    image GC off (the images were imported, nothing could pull them back)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": HOST,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": HOST,
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(layout.cert("kubelet")),
        "tlsPrivateKeyFile": str(layout.key("kubelet")),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP}",
        "cgroupsPerQOS": True,
        "failSwapOn": False,
        "makeIPTablesUtilChains": False,
        "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 110,
        "podCIDR": POD_CIDR,
        "resolvConf": "/etc/resolv.conf",
        "enforceNodeAllocatable": ["pods"],
        "nodeStatusUpdateFrequency": "4s",
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def commands(layout: Layout, bins: Build, etcd: Path) -> dict[str, list[str]]:
    """The command line of every component, by name (see :data:`ORDER`)."""
    s, pki = layout.state, layout.pki
    etcd_url = f"http://{HOST}:{ETCD_PORT}"
    peer_url = f"http://{HOST}:{ETCD_PEER_PORT}"
    return {
        "etcd": [
            str(etcd),
            "--name=faultline-kube",
            f"--data-dir={s}/etcd",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=faultline-kube={peer_url}",
        ],
        "containerd": [str(PACKAGES["containerd"]), f"--config={s}/containerd.toml"],
        "kube-apiserver": [
            str(bins.bin("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            f"--secure-port={API_PORT}",
            f"--tls-cert-file={layout.cert('kube-apiserver')}",
            f"--tls-private-key-file={layout.key('kube-apiserver')}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={layout.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={layout.key('apiserver-kubelet-client')}",
            # The kubelet serves on 127.0.0.1 only and its Hostname address is `localhost`.
            "--kubelet-preferred-address-types=Hostname",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={layout.key('service-account')}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # Endpoints may not hold a loopback address: no reconciler for `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            str(bins.bin("kube-controller-manager")),
            f"--kubeconfig={layout.kubeconfig('controller-manager')}",
            f"--authentication-kubeconfig={layout.kubeconfig('controller-manager')}",
            f"--authorization-kubeconfig={layout.kubeconfig('controller-manager')}",
            f"--bind-address={HOST}",
            f"--service-account-private-key-file={layout.key('service-account')}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(bins.bin("kube-scheduler")),
            f"--kubeconfig={layout.kubeconfig('scheduler')}",
            f"--authentication-kubeconfig={layout.kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={layout.kubeconfig('scheduler')}",
            f"--bind-address={HOST}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kubelet": [
            str(bins.bin("kubelet")),
            f"--config={s}/kubelet.json",
            f"--kubeconfig={layout.kubeconfig('kubelet')}",
            f"--root-dir={s}/kubelet",
            # No --node-ip: the kubelet refuses a loopback one and then reports no
            # address at all, which breaks logs and exec.
            f"--hostname-override={NODE}",
        ],
    }


def scratch_image_tar(
    files: Sequence[tuple[Path, str]], ref: str, entrypoint: Sequence[str]
) -> bytes:
    """A ``docker save``-format archive of an image FROM scratch holding ``files``
    (host path, path in the image; mode kept), tagged ``ref``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for host, arc in files:
            data = host.read_bytes()
            info = tarfile.TarInfo(arc.lstrip("/"))
            info.size = len(data)
            info.mode = host.stat().st_mode & 0o7777
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint)},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            (layer_name, layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pause_image_ref(pause: Path) -> str:
    return f"{PAUSE_REPO}:{hashlib.sha256(pause.read_bytes()).hexdigest()[:12]}"


# Processes ---------------------------------------------------------------------------


def _pid_alive(pid: int, binary: str) -> bool:
    """``pid`` runs ``binary`` (so a reused pid is never signalled).

    Read from ``/proc/<pid>/exe``: ``cmdline`` can read empty for a while after the
    exec (seen with containerd), which made a starting component look dead.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return False
    return Path(exe).name == Path(binary).name


def _read_pid(layout: Layout, name: str) -> int | None:
    try:
        return int((layout.pids / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _start(layout: Layout, name: str, argv: list[str]) -> int:
    logf = (layout.logs / f"{name}.log").open("ab")
    with logf:
        logf.write(f"# {' '.join(argv)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=layout.state,
        )
    (layout.pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _wait(what: str, check: Callable[[], bool], deadline: float, layout: Layout) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        for name in ORDER:
            pid = _read_pid(layout, name)
            if pid is not None and not _pid_alive(pid, name):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                if not _pid_alive(pid, name):
                    raise ComponentStartError(
                        f"{name} exited while waiting for {what}; its log is kept in "
                        f"{cache_root() / 'failed-logs' / name}.log"
                    )
        time.sleep(0.25)
    raise ComponentStartError(
        f"timed out waiting for {what}; the logs are kept in {cache_root() / 'failed-logs'}"
    )


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _admin_ssl(layout: Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    ctx.load_cert_chain(layout.cert("client-admin"), layout.key("client-admin"))
    return ctx


def kubectl(layout: Layout, bins: Build, *args: str, stdin: str | None = None) -> str:
    res = subprocess.run(
        [str(bins.bin("kubectl")), f"--kubeconfig={layout.kubeconfig('admin')}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        raise ComponentStartError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def _ctr(layout: Layout, *args: str) -> str:
    res = subprocess.run(
        [
            "ctr",
            f"--address={layout.containerd_socket}",
            f"--namespace={CONTAINERD_NAMESPACE}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0:
        raise ComponentStartError(f"ctr {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def import_image(tar: Path, layout: Layout = Layout()) -> str:
    """Load an image archive (``docker save`` format, or OCI) into the cluster's
    containerd, where the kubelet finds it; returns ctr's output. Pods must use it with
    ``imagePullPolicy: Never`` (or a non-``latest`` tag and ``IfNotPresent``)."""
    if not layout.containerd_socket.exists():
        raise ComponentStartError(f"no cluster is up ({layout.containerd_socket} is absent)")
    return _ctr(layout, "images", "import", str(tar))


# Up ----------------------------------------------------------------------------------


@dataclass
class Timings:
    phases: list[tuple[str, float]] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self._last))
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self._t0


def _write_config(layout: Layout, pause_image: str) -> None:
    for d in (layout.state, layout.logs, layout.pids, layout.cni_conf_dir):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.state, 0o700)
    pki = ClusterPki(layout.pki)
    pki.issue(
        "kube-apiserver",
        "kube-apiserver",
        server=True,
        hosts=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=[HOST, SERVICE_IP],
    )
    pki.issue("kubelet", f"system:node:{NODE}", server=True, hosts=[NODE], ips=[HOST])
    pki.issue(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters"
    )
    pki.issue("client-admin", "faultline-admin", organization="system:masters")
    pki.issue("client-controller-manager", "system:kube-controller-manager")
    pki.issue("client-scheduler", "system:kube-scheduler")
    pki.issue("client-kubelet", f"system:node:{NODE}", organization="system:nodes")
    pki.key_pair("service-account")
    for user in ("admin", "controller-manager", "scheduler", "kubelet"):
        layout.kubeconfig(user).write_text(json.dumps(kubeconfig(layout, user), indent=2))
    (layout.state / "containerd.toml").write_text(containerd_config(layout, pause_image))
    (layout.state / "kubelet.json").write_text(json.dumps(kubelet_config(layout), indent=2))
    (layout.cni_conf_dir / "10-faultline-kube.conflist").write_text(
        json.dumps(cni_config(layout), indent=2)
    )


TEST_POD = "faultline-smoke"


def _test_pod(pause_image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": TEST_POD, "namespace": "default"},
            "spec": {
                "containers": [{"name": "pause", "image": pause_image, "imagePullPolicy": "Never"}],
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
            },
        }
    )


def _node_ready(layout: Layout, bins: Build) -> bool:
    try:
        out = kubectl(layout, bins, "get", "node", NODE, "-o", "json")
    except ComponentStartError:
        return False
    conds = json.loads(out).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _pod_running(layout: Layout, bins: Build) -> bool:
    try:
        out = kubectl(layout, bins, "get", "pod", TEST_POD, "-o", "json")
    except ComponentStartError:
        return False
    st = json.loads(out).get("status", {})
    return bool(
        st.get("phase") == "Running"
        and all(c.get("ready") for c in st.get("containerStatuses", [{}]))
    )


def up(layout: Layout = Layout(), *, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Build (cached), configure, start and check the cluster; returns READY's content.
    A failed start is taken down again before the error propagates."""
    current = status(layout)
    if current["up"]:
        return dict(current["ready"])
    missing = missing_packages()
    if missing:
        raise MissingDependency(
            f"packages {', '.join(missing)}", SETUP_FIX.format(" ".join(missing))
        )
    t = Timings()
    bins = build()
    t.mark("build (cached)" if bins.cached else "build")
    down(layout)  # leftovers of a killed `up`
    t.mark("clear leftovers")
    pause_image = pause_image_ref(bins.bin("pause"))
    try:
        _write_config(layout, pause_image)
        t.mark("pki and config")
        argv = commands(layout, bins, PACKAGES["etcd-server"])
        deadline = time.monotonic() + timeout
        _start(layout, "etcd", argv["etcd"])
        _start(layout, "containerd", argv["containerd"])
        _wait("etcd", lambda: _http_ok(f"http://{HOST}:{ETCD_PORT}/health"), deadline, layout)
        _start(layout, "kube-apiserver", argv["kube-apiserver"])
        _wait("containerd", layout.containerd_socket.exists, deadline, layout)
        tar = layout.state / "pause-image.tar"
        tar.write_bytes(scratch_image_tar([(bins.bin("pause"), "/pause")], pause_image, ["/pause"]))
        _wait("containerd to answer", lambda: _ctr_ok(layout), deadline, layout)
        import_image(tar, layout)
        t.mark("etcd, containerd, pause image")
        ctx = _admin_ssl(layout)
        _wait(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{server_url()}/readyz", ctx),
            deadline,
            layout,
        )
        t.mark("kube-apiserver ready")
        _make_cgroups()
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet"):
            _start(layout, name, argv[name])
        _wait(f"node {NODE} Ready", lambda: _node_ready(layout, bins), deadline, layout)
        t.mark("node Ready")
        _wait(
            "the default service account",
            lambda: _ok(lambda: kubectl(layout, bins, "get", "serviceaccount", "default")),
            deadline,
            layout,
        )
        kubectl(layout, bins, "apply", "-f", "-", stdin=_test_pod(pause_image))
        _wait(f"test Pod {TEST_POD} Running", lambda: _pod_running(layout, bins), deadline, layout)
        kubectl(layout, bins, "delete", "pod", TEST_POD, "--wait=true", "--timeout=60s")
        t.mark("test Pod ran")
    except BaseException:
        kept = cache_root() / "failed-logs"
        shutil.rmtree(kept, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(layout.logs, kept)
        down(layout)
        log.warning("the failed start's logs are kept in %s", kept)
        raise
    ready = {
        "kubeconfig": str(layout.kubeconfig("admin")),
        "server": server_url(),
        "version": VERSION,
        "node": NODE,
        "pause_image": pause_image,
        "containerd_socket": str(layout.containerd_socket),
        "containerd_namespace": CONTAINERD_NAMESPACE,
        "bin_dir": str(bins.bin_dir),
        "start_seconds": round(t.total, 1),
        "phases": {name: round(sec, 2) for name, sec in t.phases},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    layout.ready.write_text(json.dumps(ready, indent=2) + "\n")
    return ready


def _ok(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except ComponentStartError:
        return False
    return True


def _ctr_ok(layout: Layout) -> bool:
    return _ok(lambda: _ctr(layout, "version"))


# Status ------------------------------------------------------------------------------


def status(layout: Layout = Layout()) -> dict[str, Any]:
    """Which components run, whether the apiserver answers, READY's content."""
    procs = {}
    for name in ORDER:
        pid = _read_pid(layout, name)
        procs[name] = pid if pid is not None and _pid_alive(pid, name) else None
    try:
        ready = json.loads(layout.ready.read_text())
    except OSError:  # absent, or not root: the state dir is 0700
        ready = None
    api = False
    if ready is not None:
        with contextlib.suppress(OSError, ssl.SSLError):
            api = _http_ok(f"{server_url()}/readyz", _admin_ssl(layout))
    return {
        "up": bool(ready is not None and api and all(procs.values())),
        "apiserver_ready": api,
        "processes": procs,
        "ready": ready,
    }


# Down --------------------------------------------------------------------------------


def _cgroup_dirs() -> list[Path]:
    """The cluster's cgroup in every v1 hierarchy (or the v2 one), deepest first."""
    root = Path("/sys/fs/cgroup")
    tops = [root / CGROUP] + [d / CGROUP for d in root.iterdir() if d.is_dir()]
    found: list[Path] = []
    for top in tops:
        if top.is_dir():
            found += [Path(p) for p, _, _ in os.walk(top)]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _make_cgroups() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # v2 only
        (root / CGROUP).mkdir(exist_ok=True)
        return
    for hierarchy in root.iterdir():
        if hierarchy.is_symlink() or not (hierarchy / "cgroup.procs").exists():
            continue
        cg = hierarchy / CGROUP
        cg.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # empty in a new v1 cpuset
            if (cg / knob).exists() and not (cg / knob).read_text().strip():
                (cg / knob).write_text((hierarchy / knob).read_text())


def _cgroup_pids() -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs():
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return pids


def _shim_pids(layout: Layout) -> set[int]:
    """containerd shims started for our socket (they outlive containerd)."""
    sock = str(layout.containerd_socket).encode()
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (p / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock in argv:
                found.add(int(p.name))
    return found


def _kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone(pids: set[int], grace: float) -> set[int]:
    """Wait up to ``grace`` for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + grace
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                alive.discard(pid)
        time.sleep(0.05)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _stop(pids: set[int]) -> None:
    _kill(pids, signal.SIGTERM)
    left = _gone(pids, STOP_GRACE_S)
    if left:
        _kill(left, signal.SIGKILL)
        _gone(left, STOP_GRACE_S)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or under ``path``, deepest (latest) first."""
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return list(reversed(found))


def _pod_netns() -> list[str]:
    """The CNI's Pod network namespaces on this cluster's Pod network (``POD_CIDR``): the
    bridge plugin's ``cni-*`` namespaces that a stopped containerd left behind."""
    net = ipaddress.ip_network(POD_CIDR)
    found = []
    for entry in sorted(Path("/var/run/netns").glob("cni-*")):
        res = subprocess.run(
            ["ip", "-n", entry.name, "-o", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        addrs = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", res.stdout)
        if any(ipaddress.ip_address(a) in net for a in addrs):
            found.append(entry.name)
    return found


def down(layout: Layout = Layout()) -> list[str]:
    """Stop and remove everything :func:`up` made; returns what it did (empty: nothing
    was there). Safe to run again, and after a SIGKILL'd ``up``."""
    done: list[str] = []
    for name in reversed(ORDER):
        if name == "containerd":
            # Pods first: their processes sit in the cluster's cgroups; then the shims.
            pods = _cgroup_pids()
            if pods:
                _stop(pods)
                done.append(f"stopped {len(pods)} Pod process(es)")
            shims = _shim_pids(layout)
            if shims:
                _stop(shims)
                done.append(f"stopped {len(shims)} containerd shim(s)")
        pid = _read_pid(layout, name)
        if pid is not None and _pid_alive(pid, name):
            _stop({pid})
            done.append(f"stopped {name} (pid {pid})")
    for point in _mounts_under(layout.state):
        res = subprocess.run(["umount", point], capture_output=True, check=False)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        done.append(f"unmounted {point}")
    for ns in _pod_netns():
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        done.append(f"deleted network namespace {ns}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        done.append(f"deleted bridge {BRIDGE}")
    cgroups = _cgroup_dirs()
    for d in cgroups:
        with contextlib.suppress(OSError):
            d.rmdir()
    if cgroups:
        done.append(f"removed {len(cgroups)} cgroup(s)")
    if layout.state.exists():
        shutil.rmtree(layout.state)
        done.append(f"removed {layout.state}")
    return done


@contextlib.contextmanager
def running(layout: Layout = Layout()) -> Iterator[dict[str, Any]]:
    """A cluster for the duration of the block (for tests): up, then down."""
    ready = up(layout)
    try:
        yield ready
    finally:
        down(layout)
