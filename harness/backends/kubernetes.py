"""The Kubernetes backend: workloads as Pods on a local single-node cluster.

Built on the official ``kubernetes`` client. The kubeconfig is, in order,
``$KUBECONFIG``, ``/var/lib/faultline-kube/admin.kubeconfig`` (written by
``faultline cluster up``) and ``~/.kube/config``; without a reachable
cluster the backend raises :class:`BackendUnavailable` saying that
``faultline cluster up`` provides one.

Each run gets one namespace, ``faultline-<run_id>``, labelled ``faultline=1``
and ``faultline.run=<run_id>``. Its ledger entry (inverse
``delete_kube_namespace``) is written *before* the namespace is created, so
``run.close()``, the watchdog and ``faultline clean`` (after a SIGKILL)
delete it and everything in it; the inverse refuses a namespace without the
run's label. Each workload is a Pod named after it (one container of the same
name), plus a headless Service listing its ports when it has any.

The node is this host, and the backend relies on it:

* ports: Pods run with ``hostNetwork: true`` and bind 127.0.0.1 on ports
  planned exactly as on the local backend (the same lock files), so the
  harness, kubelet's probes and other workloads all dial 127.0.0.1:<port>; no
  port-forward, no kube-proxy, no cluster DNS needed. The Service is there for
  ``kubectl`` (and the reaping labels), not for routing.
* images: when ``WorkloadSpec.image`` is None, an image ``FROM scratch`` with
  the host binary and the shared libraries ``ldd`` lists (as the docker
  backend builds, with ``spec.stop_signal`` as its ``StopSignal``) is written
  as a docker-archive tarball and imported into the cluster's containerd
  (``ctr -n k8s.io images import``); Pods use ``imagePullPolicy: Never``.
* files: ``spec.files`` are hostPath mounts (read-only) under
  ``/faultline/files``, and the run directory is a hostPath mount at its host
  path, so a path under ``run.dir`` is the same file everywhere, as on the
  docker backend. Rewriting a file in place (:meth:`host_path`) changes what
  the workload reads.
* restart policy: ``restartPolicy`` (``Never`` / ``OnFailure`` / ``Always``)
  and kubelet's own CrashLoopBackOff: the first restart is immediate, then
  10 s, 20 s, 40 s... up to 300 s; ``backoff_initial``/``backoff_max`` are
  not used. Kubernetes has no ``max_restarts``: the harness deletes the Pod
  once it exited after that many restarts (kubelet is then in a backoff of at
  least 10 s); ``max_restarts=0`` is ``restartPolicy: Never``.
* probes: kubelet's liveness/readinessProbe on 127.0.0.1 (periods and
  timeouts rounded up to whole seconds, kubelet's unit); a liveness kill
  sends SIGTERM with a 1 s grace. Kubelet reports no liveness verdict, so the
  harness probes the liveness endpoint too, for :attr:`WorkloadStatus.healthy`.
  Kubelet cannot present client certificates: an HTTPS probe with
  ``cert_file`` is run by the harness only (readiness in :meth:`wait_ready`,
  liveness by the harness prober, which SIGKILLs after ``failure_threshold``).
* exits: ``state``/``lastState.terminated`` of every status the Pod watch
  delivers; ``reason: OOMKilled`` is an OOM kill; ``restartCount`` counts
  kubelet's restarts (plus re-created Pods).
* kill / pause / stats: from the host. The container's processes are found
  by the run's tag in their environment and checked against the container id
  in their cgroup; :meth:`kill` signals the main process (like a crash: the
  restart policy applies); :meth:`pause` freezes the container's freezer
  cgroup (v1 ``freezer.state``, v2 ``cgroup.freeze``; ``exec`` is impossible in
  a scratch image); :meth:`stats` reads its cgroup files.
* set_limits: the Pod ``resize`` subresource (in-place resize, Kubernetes
  1.33+), then waits for the container's cgroup to show the new limits. Pods
  always carry CPU and memory limits (Burstable QoS, which a resize may not
  change): "unlimited" is all the host's cores / RAM, reported back as None.
  Kubelet's CFS period is 100 ms; another period is written into the
  container's cgroup after the resize, and the Pod is resized to a limit that
  lets the container's whole quota fall into one 100 ms period
  (:func:`harness.cleanup.kube_pod_cpu`), so only the container's own period
  throttles. A container restarted meanwhile runs at kubelet's period.
  :meth:`limits` reads the container's cgroup; the ledger inverse is
  ``kube_set_limits``.
* isolate / heal: the cluster's bridge CNI enforces no NetworkPolicy, and
  hostNetwork Pods share the host's loopback, so isolation is what the local
  backend does: one iptables chain matching the workloads' sockets by their
  cgroup2 path (on a hybrid host the container's processes are first moved
  into a ``faultline/<run_id>/<name>`` cgroup2 directory, which carries no
  controllers; a container restarted while isolated is not isolated).
* logs: kubelet's CRI log files (``/var/log/pods/<ns>_<pod>_<uid>/...``) are
  tailed into ``<run dir>/logs/<name>.log`` across restarts and re-created Pods.
* stop: deleting the Pod with a grace period of ``timeout`` (at least 1 s):
  kubelet sends the image's ``StopSignal``, then SIGKILL.

Differences from the local backend that the compliance suite states: the
restart backoff is kubelet's (see above).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness import cleanup
from harness.backends.base import (
    Placement,
    Probe,
    ProbeKind,
    ResourceStats,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
    WorkloadStatus,
)
from harness.backends.cgroups import parse_flat_keyed
from harness.backends.images import shared_libraries
from harness.backends.netfilter import CHAIN_PARENTS, chain_prefix, install_drop_chain
from harness.backends.ports import PortAllocator, RecordedLease, allocate_recorded
from harness.components.base import log_tail
from harness.errors import (
    BackendUnavailable,
    ComponentStartError,
    ConfigError,
    FaultError,
    MissingDependency,
)
from harness.run import Run, state_root
from harness.wait import WaitTimeout, wait_until

__all__ = [
    "CLUSTER_FIX",
    "DEFAULT_KUBECONFIG",
    "FILES_DIR",
    "KubernetesBackend",
    "cri_log_lines",
    "docker_archive",
    "find_kubeconfig",
    "namespace_for",
]

log = logging.getLogger(__name__)

FILES_DIR = "/faultline/files"
KUBE_STATE = Path("/var/lib/faultline-kube")
DEFAULT_KUBECONFIG = KUBE_STATE / "admin.kubeconfig"
DEFAULT_CONTAINERD = KUBE_STATE / "containerd.sock"
POD_LOGS = Path("/var/log/pods")
CLUSTER_FIX = (
    "`faultline cluster up` starts a local one-node cluster and writes "
    f"{DEFAULT_KUBECONFIG} (or set KUBECONFIG to a cluster whose node is this host)"
)
_NAME_RE = r"^[a-z]([a-z0-9-]{0,50}[a-z0-9])?$"
_CPU_PERIOD_US = 100_000
_CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How late kubelet can restart a container after its back-off expired: a Pod in
#: back-off is synced again after 10 s with up to 50 % jitter (pod_workers.go).
KUBELET_RESYNC_S = 15.0
_BUILDER_VERSION = "1"
_POLICY = {RestartMode.NEVER: "Never", RestartMode.ON_FAILURE: "OnFailure",
           RestartMode.ALWAYS: "Always"}  # fmt: skip


def namespace_for(run_id: str) -> str:
    """The run's namespace: ``faultline-<run_id>`` (a DNS label: <= 63 chars)."""
    return f"faultline-{run_id}"


def find_kubeconfig() -> Path | None:
    """``$KUBECONFIG`` (its first entry), else faultline's cluster, else ~/.kube/config."""
    value = os.environ.get("KUBECONFIG", "")
    if value:
        return Path(value.split(os.pathsep)[0])
    for candidate in (DEFAULT_KUBECONFIG, Path.home() / ".kube" / "config"):
        if candidate.is_file():
            return candidate
    return None


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _host_cores() -> int:
    return os.cpu_count() or 1


# --- images -------------------------------------------------------------------------------


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def docker_archive(tag: str, files: dict[str, bytes], config: dict[str, Any]) -> bytes:
    """A ``docker save`` tarball of a one-layer image holding ``files`` (path -> content).

    ``config`` is the image's run config (Entrypoint, Env, Labels, StopSignal);
    ``/tmp`` is added (1777), as Go programs and etcd want one.
    """
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        _tar_add(layer, "tmp", None, 0o1777)
        for path, data in sorted(files.items()):
            _tar_add(layer, path.lstrip("/"), data, 0o755)
    layer_bytes = layer_buf.getvalue()
    layer_id = hashlib.sha256(layer_bytes).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    image_config = {
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [tag],
                 "Layers": [f"{layer_id}/layer.tar"]}]  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        _tar_add(tar, layer_id, None, 0o755)
        _tar_add(tar, f"{layer_id}/layer.tar", layer_bytes, 0o644)
        _tar_add(tar, f"{config_id}.json", config_bytes, 0o644)
        _tar_add(tar, "manifest.json", json.dumps(manifest).encode(), 0o644)
    return out.getvalue()


class _Images:
    """Images in the cluster's containerd (namespace ``k8s.io``), imported once each."""

    def __init__(self, socket_path: Path) -> None:
        self.socket = socket_path
        self._known: set[str] | None = None
        self._lock = threading.Lock()

    def _ctr(self, *args: str, stdin: bytes | None = None) -> str:
        if shutil.which("ctr") is None:
            raise MissingDependency("ctr (containerd's client)", "apt-get install -y containerd")
        res = subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=300,
        )
        if res.returncode != 0:
            raise BackendUnavailable(
                f"the cluster's containerd ({self.socket})",
                f"ctr {args[0]} {args[1]} failed: {res.stderr.decode(errors='replace').strip()}",
            )
        return res.stdout.decode()

    def present(self, ref: str) -> bool:
        with self._lock:
            if self._known is None:
                self._known = set(self._ctr("images", "ls", "-q").split())
            return _normalize(ref) in self._known

    def import_archive(self, ref: str, archive: bytes) -> None:
        with self._lock, tempfile.NamedTemporaryFile(prefix="faultline-image-") as f:
            f.write(archive)
            f.flush()
            self._ctr("images", "import", f.name)
            if self._known is not None:
                self._known.add(_normalize(ref))

    def for_binary(self, binary: str, stop_signal: int) -> str:
        """Tag of a scratch image holding ``binary`` and its libraries, imported once."""
        found = shutil.which(binary)
        if found is None:
            raise ConfigError("command[0]", f"{binary!r} not found on PATH")
        path = Path(found).absolute()
        libs = shared_libraries(path)
        contents = {str(p): p.resolve().read_bytes() for p in [path, *libs]}
        stop = signal.Signals(stop_signal).name
        h = hashlib.sha256(f"{_BUILDER_VERSION}\0{stop}".encode())
        for name, data in sorted(contents.items()):
            h.update(name.encode() + b"\0" + data)
        tag = f"faultline/{path.name}:{h.hexdigest()[:12]}"
        if not self.present(tag):
            config = {
                "Entrypoint": [str(path)],
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"],
                "Labels": {"faultline": "1", "faultline.binary": str(path)},
                "StopSignal": stop,
            }
            log.info("importing %s (%s + %d libraries) into containerd", tag, path, len(libs))
            self.import_archive(tag, docker_archive(tag, contents, config))
        return tag


def _normalize(ref: str) -> str:
    """containerd's full name of an image reference (``docker.io/...``, ``:latest``)."""
    name = ref
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        name += ":latest"
    return name


# --- logs ---------------------------------------------------------------------------------


def cri_log_lines(data: bytes, partial: bytes = b"") -> tuple[list[bytes], bytes]:
    """Lines of kubelet's CRI log format (``<time> <stream> <P|F> <text>``), joined.

    ``data`` is whole lines only; ``partial`` is the text of ``P`` (partial)
    records not yet ended by an ``F`` one. Returns the complete lines and the
    partial text still open.
    """
    out = []
    for record in data.split(b"\n"):
        if not record:
            continue
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else b""
        if parts[2] == b"P":
            partial += text
        else:
            out.append(partial + text)
            partial = b""
    return out, partial


class _LogTail(threading.Thread):
    """Copies a workload's CRI log files into its run log, across restarts and Pods."""

    def __init__(self, path: Path, files: Callable[[], list[Path]]) -> None:
        super().__init__(name=f"kube-logs-{path.stem}", daemon=True)
        self.path = path
        self.files = files
        self.done = threading.Event()
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.drain()
        self.drain()

    def drain(self) -> None:
        with self._lock, open(self.path, "ab", buffering=0) as out:
            for f in self.files():
                offset = self._offsets.get(f, 0)
                try:
                    with open(f, "rb") as fh:
                        fh.seek(offset)
                        data = fh.read()
                except OSError:
                    continue
                end = data.rfind(b"\n") + 1
                if end == 0:
                    continue
                lines, self._partial[f] = cri_log_lines(data[:end], self._partial.get(f, b""))
                self._offsets[f] = offset + end
                if lines:
                    out.write(b"".join(line + b"\n" for line in lines))


# --- cgroups of a container, from the host ---------------------------------------------------


def _cgroup_dirs(pid: int) -> dict[str, Path]:
    """Controller -> cgroup directory of a process; ``"v2"`` is its cgroup2 directory."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    unified = (_CGROUP_ROOT / "cgroup.controllers").exists()
    dirs: dict[str, Path] = {}
    for line in text.splitlines():
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers:
            for c in controllers.split(","):
                dirs[c.removeprefix("name=")] = _CGROUP_ROOT / controllers / rel
        elif unified:
            dirs["v2"] = _CGROUP_ROOT / rel
        elif (_CGROUP_ROOT / "unified").is_dir():
            dirs["v2"] = _CGROUP_ROOT / "unified" / rel
    return dirs


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


# --- the backend ----------------------------------------------------------------------------


@dataclass
class _Workload:
    placement: Placement
    leases: list[RecordedLease]
    spec: WorkloadSpec | None = None
    uid: str | None = None  # of the current Pod
    uids: list[str] = field(default_factory=list)  # every Pod it had, oldest first
    pods: dict[str, Any] = field(default_factory=dict)  # uid -> last V1Pod seen
    gone: set[str] = field(default_factory=set)  # uids of deleted Pods
    terminations: dict[str, tuple[str, int, bool]] = field(default_factory=dict)
    restarts_before: int = 0  # kubelet restarts of earlier Pods
    manual_restarts: int = 0
    want_running: bool = False
    exhausted: bool = False  # max_restarts reached: the harness deleted the Pod
    cpu: float | None = None
    memory: int | None = None
    period: int = _CPU_PERIOD_US  # of cpu
    kube_cpu: float = 0.0  # the Pod's CPU limit (kubelet's period), set with each Pod
    pause_seq: int | None = None
    isolation: tuple[str, int, list[int]] | None = None  # chain, seq, cgroup seqs
    healthy: bool | None = None
    tail: _LogTail | None = None
    prober: threading.Thread | None = None
    closing: threading.Event = field(default_factory=threading.Event)


class KubernetesBackend:
    """Workloads as Pods in a per-run namespace; see the module docstring."""

    name = "kubernetes"

    def __init__(self, run: Run, kubeconfig: Path | None = None) -> None:
        try:
            from kubernetes import client, config
        except ImportError as err:
            raise BackendUnavailable("the kubernetes client", "pip install faultline") from err
        path = kubeconfig or find_kubeconfig()
        if path is None or not path.is_file():
            raise BackendUnavailable(
                f"a Kubernetes cluster (no kubeconfig{f' at {path}' if path else ''})",
                CLUSTER_FIX,
            )
        try:
            self.api = config.new_client_from_config(config_file=str(path))
            self.core = client.CoreV1Api(self.api)
            self.core.list_node(_request_timeout=5)
        except Exception as err:
            why = getattr(err, "reason", None) or err  # urllib3's MaxRetryError: the cause
            raise BackendUnavailable(
                f"the Kubernetes cluster of {path} (it does not answer: {str(why)[:160]})",
                CLUSTER_FIX,
            ) from err
        if not POD_LOGS.is_dir():
            self.api.close()
            raise BackendUnavailable(
                "a Kubernetes node on this host (no /var/log/pods)",
                "the kubernetes backend drives the node from the host (cgroups, processes, "
                "logs): " + CLUSTER_FIX,
            )
        self.kubeconfig = path.absolute()
        self.run = run
        self.namespace = namespace_for(run.run_id)
        self.labels = {"faultline": "1", "faultline.run": run.run_id}
        socket_path = Path(os.environ.get("FAULTLINE_KUBE_CONTAINERD", str(DEFAULT_CONTAINERD)))
        self.images = _Images(socket_path)
        self._ports = PortAllocator(state_root() / "ports", run.run_id)
        self._workloads: dict[str, _Workload] = {}
        self._cond = threading.Condition()
        self._ns_seq: int | None = None
        self._watcher: threading.Thread | None = None
        self._stop_watch = threading.Event()
        self._chains = 0
        self._cgroup_parents: int | None = None
        self._closed = False

    # --- names and lookups ---------------------------------------------------------------

    def _get(self, name: str) -> _Workload:
        w = self._workloads.get(name)
        if w is None or w.spec is None:
            raise ConfigError(
                f"workload {name!r}",
                "was not started by this backend",
                expected=f"one of {sorted(n for n, x in self._workloads.items() if x.spec)}",
            )
        return w

    def log_path(self, name: str) -> Path:
        self._get(name)
        return self.run.dir / "logs" / f"{name}.log"

    def host_path(self, name: str, file: str) -> Path:
        """The host file behind a workload's planned ``file`` (a read-only hostPath mount)."""
        try:
            return Path(self._get(name).spec.files[file]).resolve()  # type: ignore[union-attr]
        except KeyError:
            raise ConfigError(f"{name}.files", f"{file!r} is not a file of {name}") from None

    # --- plan / start ----------------------------------------------------------------------

    def plan(self, name: str, ports: Sequence[str], files: Sequence[str] = ()) -> Placement:
        import re

        if not re.match(_NAME_RE, name):
            raise ConfigError(
                "workload name",
                f"{name!r} is not usable as a Pod and Service name",
                expected=_NAME_RE,
            )
        if name in self._workloads:
            raise ConfigError(f"workload {name!r}", "is already planned in this run")
        for f in files:
            if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", f):
                raise ConfigError(f"{name}.files", f"{f!r} is not a plain file name",
                                  expected="letters, digits, '_', '.', '-'")  # fmt: skip
        leases = [
            allocate_recorded(self._ports, self.run.ledger, run_id=self.run.run_id, what=name)
            for _ in ports
        ]
        numbers = {p: lease.port for p, lease in zip(ports, leases, strict=True)}
        placement = Placement(
            name=name,
            bind_host="127.0.0.1",  # hostNetwork: the host's loopback
            ports=numbers,
            internal_host="127.0.0.1",
            external_ports=dict(numbers),
            files={f: f"{FILES_DIR}/{f}" for f in files},
        )
        self._workloads[name] = _Workload(placement, leases)
        return placement

    def _ensure_namespace(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self._ns_seq is not None:
            return
        self._ns_seq = self.run.ledger.record(
            f"kubernetes namespace {self.namespace} (and every Pod and Service in it)",
            {
                "op": "delete_kube_namespace",
                "run_id": self.run.run_id,
                "namespace": self.namespace,
                "kubeconfig": str(self.kubeconfig),
            },
        )
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(name=self.namespace, labels=self.labels)
        )
        self.core.create_namespace(body)
        self.run.ledger.applied(self._ns_seq)
        # Pods need the namespace's "default" ServiceAccount (made by the controller manager).
        try:
            wait_until(lambda: self._has_default_sa(), timeout=5, interval=0.1)
        except WaitTimeout:
            sa = client.V1ServiceAccount(
                metadata=client.V1ObjectMeta(name="default", labels=self.labels)
            )
            with contextlib.suppress(ApiException):
                self.core.create_namespaced_service_account(self.namespace, sa)
        self._watcher = threading.Thread(
            target=self._watch, name=f"kube-watch-{self.run.run_id[-6:]}", daemon=True
        )
        self._watcher.start()

    def _has_default_sa(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_service_account("default", self.namespace)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def _image(self, spec: WorkloadSpec) -> str:
        if spec.image is None:
            return self.images.for_binary(spec.command[0], spec.stop_signal)
        if not self.images.present(spec.image):
            raise BackendUnavailable(
                f"image {spec.image} in the cluster's containerd",
                "no registry is reachable: leave WorkloadSpec.image unset to build one from "
                f"the host binary, or `ctr -a {self.images.socket} -n k8s.io images import` it",
            )
        return spec.image

    def _pod(self, spec: WorkloadSpec, image: str, w: _Workload) -> Any:
        from kubernetes import client

        policy = spec.restart
        restart = "Never" if policy.max_restarts == 0 else _POLICY[policy.mode]
        cpu = w.cpu if w.cpu is not None else float(_host_cores())
        memory = w.memory if w.memory is not None else _host_memory()
        w.kube_cpu, w.period = cpu, _CPU_PERIOD_US
        mounts = [client.V1VolumeMount(name="run", mount_path=str(self.run.dir.resolve()))]
        volumes = [
            client.V1Volume(
                name="run",
                host_path=client.V1HostPathVolumeSource(
                    path=str(self.run.dir.resolve()), type="Directory"
                ),
            )
        ]
        for i, (fname, host) in enumerate(sorted(spec.files.items())):
            volumes.append(
                client.V1Volume(
                    name=f"file-{i}",
                    host_path=client.V1HostPathVolumeSource(
                        path=str(Path(host).resolve()), type="File"
                    ),
                )
            )
            mounts.append(
                client.V1VolumeMount(
                    name=f"file-{i}", mount_path=f"{FILES_DIR}/{fname}", read_only=True
                )
            )
        env = {**spec.env, **self.run.child_env(spec.name)}
        container = client.V1Container(
            name=spec.name,
            image=image,
            image_pull_policy="Never",
            command=[spec.command[0]],
            args=list(spec.command[1:]),
            env=[client.V1EnvVar(name=k, value=v) for k, v in sorted(env.items())],
            resources=client.V1ResourceRequirements(
                requests={"cpu": "1m", "memory": "1Mi"},
                limits={"cpu": _cpu_quantity(cpu), "memory": str(memory)},
            ),
            resize_policy=[
                client.V1ContainerResizePolicy(resource_name=r, restart_policy="NotRequired")
                for r in ("cpu", "memory")
            ],
            volume_mounts=mounts,
            liveness_probe=self._kube_probe(spec, spec.liveness, liveness=True),
            readiness_probe=self._kube_probe(spec, spec.readiness, liveness=False),
            termination_message_policy="File",
        )
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=spec.name, labels={**self.labels, "faultline.workload": spec.name}
            ),
            spec=client.V1PodSpec(
                host_network=True,
                dns_policy="Default",
                restart_policy=restart,
                termination_grace_period_seconds=10,
                enable_service_links=False,
                automount_service_account_token=False,
                containers=[container],
                volumes=volumes,
            ),
        )

    @staticmethod
    def _kube_probe(spec: WorkloadSpec, probe: Probe | None, *, liveness: bool) -> Any:
        """Kubelet's probe for ``probe``; None for none, or one kubelet cannot run."""
        from kubernetes import client

        if probe is None or probe.cert_file is not None:
            return None
        port = spec.placement.ports[probe.port]
        kw: dict[str, Any] = {
            "period_seconds": max(1, math.ceil(probe.interval)),
            "timeout_seconds": max(1, math.ceil(probe.timeout)),
            "failure_threshold": probe.failure_threshold,
            "success_threshold": 1,
        }
        if liveness:
            kw["termination_grace_period_seconds"] = 1
        if probe.kind is ProbeKind.TCP:
            return client.V1Probe(
                tcp_socket=client.V1TCPSocketAction(port=port, host="127.0.0.1"), **kw
            )
        action = client.V1HTTPGetAction(
            path=probe.path, port=port, host="127.0.0.1", scheme=probe.kind.value.upper()
        )
        return client.V1Probe(http_get=action, **kw)

    def start(self, spec: WorkloadSpec) -> None:
        w = self._workloads.get(spec.name)
        if w is None:
            raise ConfigError(f"workload {spec.name!r}", "was not planned", expected="plan() first")
        if w.spec is not None:
            raise ConfigError(f"workload {spec.name!r}", "is already started")
        if not spec.command:
            raise ConfigError(f"{spec.name}.command", "is empty", expected="a binary")
        if spec.placement.ports != w.placement.ports:
            raise ConfigError(f"{spec.name}.placement", "is not the one plan() returned")
        for probe in (spec.liveness, spec.readiness):
            if probe is not None and probe.port not in w.placement.ports:
                raise ConfigError(
                    f"{spec.name} probe port", f"{probe.port!r} is not a planned port"
                )
        for fname, host_path in spec.files.items():
            if not Path(host_path).is_file():
                raise ConfigError(f"{spec.name}.files[{fname!r}]", f"{host_path} does not exist")
        image = self._image(spec)
        self._ensure_namespace()
        self.run.subdir("logs")
        w.cpu, w.memory = spec.cpu_limit, spec.memory_limit
        w.spec = spec
        if w.placement.ports:
            self._create_service(spec)
        self._create_pod(w, image)
        log_file = self.run.dir / "logs" / f"{spec.name}.log"
        log_file.touch()  # there from the start, as on the other backends, even if nothing is said
        tail = w.tail = _LogTail(log_file, lambda: self._logs(w))
        tail.start()
        if spec.liveness is not None:
            w.prober = threading.Thread(
                target=self._probe_loop, args=(w, spec.liveness), daemon=True,
                name=f"kube-probe-{spec.name}",
            )  # fmt: skip
            w.prober.start()

    def _create_service(self, spec: WorkloadSpec) -> None:
        from kubernetes import client

        ports = [
            client.V1ServicePort(name=p, port=n, target_port=n, protocol="TCP")
            for p, n in sorted(spec.placement.ports.items())
        ]
        body = client.V1Service(
            metadata=client.V1ObjectMeta(
                name=spec.name, labels={**self.labels, "faultline.workload": spec.name}
            ),
            spec=client.V1ServiceSpec(
                cluster_ip="None", selector={"faultline.workload": spec.name}, ports=ports
            ),
        )
        self.core.create_namespaced_service(self.namespace, body)

    def _create_pod(self, w: _Workload, image: str) -> None:
        """Create the Pod and wait until its container runs (or has exited already)."""
        assert w.spec is not None
        spec = w.spec
        created = self.core.create_namespaced_pod(self.namespace, self._pod(spec, image, w))
        with self._cond:
            w.uid = created.metadata.uid
            w.uids.append(w.uid)
            w.pods.setdefault(w.uid, created)
            w.want_running = True
            w.exhausted = False
            w.healthy = None

        def started() -> bool:
            cs = self._container(w)
            if cs is not None and (cs.state.running or cs.state.terminated):
                return True
            if cs is not None and cs.last_state.terminated:
                return True
            waiting = cs.state.waiting if cs is not None else None
            if waiting is not None and waiting.reason in _FATAL_WAITING:
                raise ComponentStartError(
                    f"{spec.name} cannot start: {waiting.reason}: {waiting.message}"
                )
            return False

        try:
            self._wait(started, timeout=60, what=f"{spec.name} running")
        except WaitTimeout as err:
            raise ComponentStartError(
                f"{spec.name}: Pod not running after 60 s: {self._describe(w)}"
            ) from err

    def _wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``cond`` (checked under the lock) to hold, woken by each Pod event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def _describe(self, w: _Workload) -> str:
        pod = w.pods.get(w.uid or "")
        if pod is None or pod.status is None:
            return "no status yet"
        cs = self._container(w)
        state = cs.state if cs is not None else None
        return f"phase {pod.status.phase}, container state {state}"

    # --- the Pod watch ------------------------------------------------------------------------

    def _watch(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self._stop_watch.is_set():
            stream = watch.Watch()
            try:
                kw: dict[str, Any] = {"timeout_seconds": 5, "_request_timeout": 15}
                if version:
                    kw["resource_version"] = version
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace, **kw):
                    if event["type"] == "ERROR":  # the version expired: from the current state
                        version = None
                        break
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    self._observe(event["type"], pod)
                    if self._stop_watch.is_set():
                        break
            except ApiException as err:
                if err.status == 410:  # too old: start from the current state
                    version = None
                else:
                    self._stop_watch.wait(0.5)
            except Exception as err:  # noqa: BLE001 - connection trouble: watch again
                log.debug("pod watch of %s: %r", self.namespace, err)
                self._stop_watch.wait(0.5)
            finally:
                stream.stop()

    def _observe(self, kind: str, pod: Any) -> None:
        name = (pod.metadata.labels or {}).get("faultline.workload")
        w = self._workloads.get(name or "")
        if w is None:
            return
        uid = pod.metadata.uid
        exhaust = False
        with self._cond:
            w.pods[uid] = pod
            if kind == "DELETED":
                w.gone.add(uid)
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                for state in (cs.last_state, cs.state):
                    t = state.terminated if state is not None else None
                    if t is None:
                        continue
                    key = t.container_id or f"{uid}/{cs.restart_count}"
                    finished = t.finished_at.timestamp() if t.finished_at else time.time()
                    if key not in w.terminations:
                        w.terminations[key] = (f"{finished:020.6f}", t.exit_code,
                                               t.reason == "OOMKilled")  # fmt: skip
                exhaust = exhaust or (uid == w.uid and self._exhausted(w, cs))
            if exhaust:
                w.exhausted = True
                w.want_running = False
            self._cond.notify_all()
        if exhaust:
            log.info("%s: max_restarts reached: deleting its Pod", name)
            threading.Thread(target=self._delete_pod, args=(name, 1), daemon=True).start()

    @staticmethod
    def _exhausted(w: _Workload, cs: Any) -> bool:
        """Whether the container exited after ``max_restarts`` restarts and would restart."""
        assert w.spec is not None
        policy = w.spec.restart
        if w.exhausted or not policy.max_restarts or policy.mode is RestartMode.NEVER:
            return False
        t = cs.state.terminated
        if t is None and cs.state.waiting is not None and cs.state.waiting.reason == _BACKOFF:
            t = cs.last_state.terminated
        if t is None or cs.restart_count < policy.max_restarts:
            return False
        return policy.mode is RestartMode.ALWAYS or t.exit_code != 0

    def _container(self, w: _Workload) -> Any:
        """The container status of the current Pod (caller may hold the lock)."""
        pod = w.pods.get(w.uid or "")
        if pod is None or pod.status is None or not pod.status.container_statuses:
            return None
        return pod.status.container_statuses[0]

    def _running(self, w: _Workload) -> bool:
        cs = self._container(w)
        return cs is not None and cs.state.running is not None and w.uid not in w.gone

    def _dead(self, w: _Workload) -> bool:
        """Exited for good: not running and not going to be restarted."""
        if w.uid in w.gone or w.exhausted:
            return True
        pod = w.pods.get(w.uid or "")
        return (
            pod is not None
            and pod.status is not None
            and pod.status.phase
            in (
                "Succeeded",
                "Failed",
            )
        )

    def _logs(self, w: _Workload) -> list[Path]:
        assert w.spec is not None
        out: list[Path] = []
        for uid in list(w.uids):
            d = POD_LOGS / f"{self.namespace}_{w.spec.name}_{uid}" / w.spec.name
            with contextlib.suppress(OSError):
                logs = [p for p in d.iterdir() if p.suffix == ".log" and p.stem.isdigit()]
                out += sorted(logs, key=lambda p: int(p.stem))
        return out

    # --- processes of a container, from the host ------------------------------------------

    def _procs(self, w: _Workload) -> tuple[int, dict[str, Path]] | None:
        """(main pid, cgroup dirs) of the running container; None when it is not running."""
        assert w.spec is not None
        with self._cond:
            cs = self._container(w)
            if cs is None or cs.state.running is None or not cs.container_id:
                return None
            cid = cs.container_id.rpartition("/")[2]
        mine = []
        for pid in cleanup.tagged_pids(self.run.run_id, w.spec.name):
            with contextlib.suppress(OSError):
                if cid in Path(f"/proc/{pid}/cgroup").read_text():
                    mine.append(pid)
        if not mine:
            return None
        parents = {}
        for pid in mine:
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                parents[pid] = int(stat.rpartition(")")[2].split()[1])
        main = min((p for p in mine if parents.get(p) not in mine), default=min(mine))
        try:
            return main, _cgroup_dirs(main)
        except OSError:
            return None

    def pid(self, name: str) -> int | None:
        """Host PID of the workload's main process while it runs."""
        found = self._procs(self._get(name))
        return found[0] if found else None

    # --- readiness and health -------------------------------------------------------------

    def _probe_ok(self, spec: WorkloadSpec, probe: Probe) -> bool:
        port = spec.placement.ports[probe.port]
        try:
            if probe.kind is ProbeKind.TCP:
                with socket.create_connection(("127.0.0.1", port), timeout=probe.timeout):
                    return True
            verify: ssl.SSLContext | bool = False
            if probe.kind is ProbeKind.HTTPS:
                ctx = ssl.create_default_context(
                    cafile=str(spec.files[probe.ca_file]) if probe.ca_file else None
                )
                ctx.check_hostname = False
                if probe.ca_file is None:  # like kubelet: no CA, no verification
                    ctx.verify_mode = ssl.CERT_NONE
                if probe.cert_file is not None and probe.key_file is not None:
                    ctx.load_cert_chain(
                        str(spec.files[probe.cert_file]), str(spec.files[probe.key_file])
                    )
                verify = ctx
            url = f"{probe.kind.value}://127.0.0.1:{port}{probe.path}"
            with httpx.Client(verify=verify, timeout=probe.timeout) as http:
                return 200 <= http.get(url).status_code < 400
        except (OSError, httpx.HTTPError, ssl.SSLError, KeyError):
            return False

    def _probe_loop(self, w: _Workload, probe: Probe) -> None:
        """The liveness verdict (kubelet reports none); SIGKILL when kubelet cannot probe."""
        assert w.spec is not None
        failures, seen = 0, ""
        while not w.closing.wait(probe.interval):
            with self._cond:
                cs = self._container(w)
                alive = cs is not None and cs.state.running is not None
                cid = cs.container_id or "" if cs is not None else ""
            if not alive or w.pause_seq is not None:
                continue
            if cid != seen:
                failures, seen = 0, cid
            ok = self._probe_ok(w.spec, probe)
            failures = 0 if ok else failures + 1
            if ok or failures >= probe.failure_threshold:
                w.healthy = ok
            if probe.cert_file is not None and failures == probe.failure_threshold:
                log.info("%s: liveness failed %d times: killing", w.spec.name, failures)
                found = self._procs(w)
                if found is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(found[0], signal.SIGKILL)

    def wait_ready(self, name: str, timeout: float) -> None:
        w = self._get(name)
        assert w.spec is not None
        spec = w.spec
        by_harness = spec.readiness is not None and spec.readiness.cert_file is not None

        def ready() -> bool:
            with self._cond:
                if self._dead(w):
                    return True
                cs = self._container(w)
                if cs is None or cs.state.running is None:
                    return False
                if not by_harness:
                    return bool(cs.ready)
            assert spec.readiness is not None
            return self._probe_ok(spec, spec.readiness)

        try:
            wait_until(ready, timeout=timeout, interval=0.1, what=f"{name} ready")
            with self._cond:
                dead, code = self._dead(w), self._last_exit(w)[0]
            if dead:
                raise ComponentStartError(f"{name} exited with code {code} before it was ready")
        except (WaitTimeout, ComponentStartError) as err:
            if w.tail is not None:
                w.tail.drain()
            exc = ComponentStartError(f"{name} did not become ready: {err}")
            exc.add_note(f"log tail of {name}:\n{log_tail(self.log_path(name))}")
            raise exc from err

    # --- lifecycle ----------------------------------------------------------------------------

    def _delete_pod(self, name: str, grace: int) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=grace)
        except ApiException as err:
            if err.status != 404:
                raise

    def _wait_gone(self, w: _Workload, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        uid = w.uid
        try:
            self._wait(lambda: uid in w.gone, timeout=timeout, what=f"Pod {uid} deleted")
        except WaitTimeout:
            # The watch may have missed it (reconnecting): ask the API.
            assert w.spec is not None
            try:
                pod = self.core.read_namespaced_pod(w.spec.name, self.namespace)
            except ApiException as err:
                if err.status == 404:
                    with self._cond:
                        w.gone.add(uid or "")
                    return
                raise
            if pod.metadata.uid == uid:
                raise
            with self._cond:
                w.gone.add(uid or "")

    def stop(self, name: str, timeout: float = 10.0) -> None:
        w = self._get(name)
        with self._cond:
            w.want_running = False
            if w.uid in w.gone:
                return
        self.resume(name)  # a frozen process cannot act on the stop signal
        self._delete_pod(name, max(1, math.ceil(timeout)))
        self._wait_gone(w, timeout + 60)
        if w.tail is not None:
            w.tail.drain()

    def kill(self, name: str, signum: int = 9) -> None:
        """Signal the main process from the host (like a crash: the policy applies).

        A paused workload is thawed after, so it acts on the signal; an exited
        one is left alone (as on the local backend).
        """
        w = self._get(name)
        found = self._procs(w)
        if found is None:
            log.info("kill %s: not running", name)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(found[0], signum)
        if w.pause_seq is not None and signum not in (signal.SIGSTOP, signal.SIGCONT):
            self.resume(name)

    def pause(self, name: str) -> None:
        """Freeze the container's cgroup (kubelet-level: ``exec`` needs a shell in the image)."""
        w = self._get(name)
        if w.pause_seq is not None:
            return
        found = self._procs(w)
        if found is None:
            raise ConfigError(f"workload {name!r}", "is not running: cannot pause it")
        dirs = found[1]
        if "freezer" in dirs:
            path, frozen, thawed = dirs["freezer"] / "freezer.state", "FROZEN", "THAWED"
        elif "v2" in dirs and (dirs["v2"] / "cgroup.freeze").exists():
            path, frozen, thawed = dirs["v2"] / "cgroup.freeze", "1", "0"
        else:
            raise BackendUnavailable(f"a freezer cgroup for {name}", "mount the freezer cgroup")
        w.pause_seq = self.run.ledger.record(
            f"freeze container of {name}", {"op": "write_file", "path": str(path), "value": thawed}
        )
        path.write_text(frozen)
        if frozen == "FROZEN":
            wait_until(lambda: path.read_text().strip() == "FROZEN", timeout=5, interval=0.01)
        self.run.ledger.applied(w.pause_seq, path=str(path))

    def resume(self, name: str) -> None:
        w = self._get(name)
        if w.pause_seq is not None:
            self.run.ledger.revert(w.pause_seq)
            w.pause_seq = None

    def restart(self, name: str) -> None:
        """Delete the Pod and create it again with the same spec (a counted restart)."""
        w = self._get(name)
        assert w.spec is not None
        self.stop(name)
        with self._cond:
            cs = self._container(w)
            w.restarts_before += cs.restart_count if cs is not None else 0
            w.manual_restarts += 1
        self._create_pod(w, self._image(w.spec))

    def _last_exit(self, w: _Workload) -> tuple[int | None, bool]:
        if not w.terminations:
            return None, False
        _, code, oom = max(w.terminations.values())
        return code, oom

    def restart_waits(self, policy: RestartPolicy, count: int) -> list[float]:
        """Kubelet's CrashLoopBackOff, whatever the policy's backoff says: the first
        restart at once, then 10 s doubling up to 300 s. These are the least waits:
        kubelet restarts a container in back-off when it next syncs its Pod, which
        it retries every 10-15 s (KUBELET_RESYNC_S), so a wait is up to that late."""
        return [0.0, *(min(10.0 * 2**n, 300.0) for n in range(count - 1))][:count]

    def status(self, name: str) -> WorkloadStatus:
        w = self._get(name)
        with self._cond:
            cs = self._container(w)
            code, oom = self._last_exit(w)
            return WorkloadStatus(
                running=self._running(w),
                paused=w.pause_seq is not None,
                exit_code=code,
                oom_killed=oom,
                oom_kills=sum(1 for _, _, o in w.terminations.values() if o),
                restarts=w.restarts_before + w.manual_restarts + (cs.restart_count if cs else 0),
                healthy=w.healthy if w.spec is not None and w.spec.liveness else None,
            )

    # --- resources --------------------------------------------------------------------------

    def stats(self, name: str) -> ResourceStats:
        w = self._get(name)
        ooms = self.status(name).oom_kills
        found = self._procs(w)
        if found is None:  # not running: nothing uses anything
            return ResourceStats(0, w.memory, 0.0, 0, 0.0, ooms)
        dirs = found[1]
        try:
            if "memory" in dirs:  # v1
                mem = parse_flat_keyed((dirs["memory"] / "memory.stat").read_text())
                usage = _read_int(dirs["memory"] / "memory.usage_in_bytes")
                memory = max(0, usage - mem.get("total_inactive_file", 0))
                limit = _read_int(dirs["memory"] / "memory.limit_in_bytes")
                cpu = parse_flat_keyed((dirs["cpu"] / "cpu.stat").read_text())
                cpu_seconds = _read_int(dirs["cpuacct"] / "cpuacct.usage") / 1e9
                periods, throttled = cpu.get("nr_throttled", 0), cpu.get("throttled_time", 0) / 1e9
            else:
                d = dirs["v2"]
                mem = parse_flat_keyed((d / "memory.stat").read_text())
                memory = max(0, _read_int(d / "memory.current") - mem.get("inactive_file", 0))
                text = (d / "memory.max").read_text().strip()
                limit = _host_memory() if text == "max" else int(text)
                cpu = parse_flat_keyed((d / "cpu.stat").read_text())
                cpu_seconds = cpu.get("usage_usec", 0) / 1e6
                periods, throttled = cpu.get("nr_throttled", 0), cpu.get("throttled_usec", 0) / 1e6
        except (OSError, KeyError, ValueError):  # exited while being read
            return ResourceStats(0, w.memory, 0.0, 0, 0.0, ooms)
        return ResourceStats(
            memory_bytes=memory,
            memory_limit=None if limit >= _host_memory() else limit,
            cpu_seconds=cpu_seconds,
            throttled_periods=periods,
            throttled_seconds=throttled,
            oom_kills=ooms,
        )

    def set_limits(
        self,
        name: str,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        cpu_period_us: int | None = None,
    ) -> None:
        """Resize the Pod in place, wait until the container's cgroup has the limits;
        then write a period other than kubelet's into it (see the module docstring)."""
        from kubernetes.client.exceptions import ApiException

        w = self._get(name)
        if cpu is not None and cpu <= 0:
            raise ConfigError("cpu", f"{cpu} cores", expected="> 0 or None for unlimited")
        if memory is not None and memory <= 0:
            raise ConfigError("memory", f"{memory} bytes", expected="> 0 or None for unlimited")
        period = cpu_period_us or _CPU_PERIOD_US
        if not 1_000 <= period <= 1_000_000:
            raise ConfigError("cpu_period_us", f"{period}", expected="1000..1000000 microseconds")
        host = _host_cores()
        cores = cpu if cpu is not None else float(host)
        mem = memory if memory is not None else _host_memory()
        pod_cpu = cleanup.kube_pod_cpu(cores, period, host)
        found = self._procs(w)
        if found is not None and w.period != _CPU_PERIOD_US:
            # Kubelet's own values first: a resize that changes nothing leaves them alone.
            with contextlib.suppress(OSError):
                cleanup.set_cfs(_cpu_dir(found[1]), _kube_quota(w.kube_cpu), _CPU_PERIOD_US)
        try:
            cleanup.kube_resize(self.core, self.namespace, name, pod_cpu, mem)
        except ApiException as err:
            raise FaultError(f"cannot resize {name} (cpu={cpu}, memory={memory}): {err}") from err
        w.cpu, w.memory, w.kube_cpu, w.period = cpu, memory, pod_cpu, _CPU_PERIOD_US
        quota = _kube_quota(pod_cpu)

        def applied() -> bool:
            found = self._procs(w)
            if found is None:
                return True  # not running: the next container starts with the new limits
            dirs = found[1]
            try:
                mem_file = dirs["memory"] / "memory.limit_in_bytes" if "memory" in dirs else None
                mem_now = (
                    _read_int(mem_file)
                    if mem_file is not None
                    else (dirs["v2"] / "memory.max").read_text().strip()
                )
                return cleanup.read_cfs(_cpu_dir(dirs))[0] == quota and str(mem_now) in (
                    str(mem),
                    "max",
                )
            except (OSError, KeyError, ValueError):
                return True  # exited meanwhile

        try:
            wait_until(applied, timeout=30, interval=0.1, what=f"resize of {name}")
        except WaitTimeout as err:
            pod = self.core.read_namespaced_pod(name, self.namespace)
            conditions = [(c.type, c.reason, c.message) for c in pod.status.conditions or []]
            raise FaultError(f"resize of {name} not applied after 30 s: {conditions}") from err
        if period == _CPU_PERIOD_US:
            return
        found = self._procs(w)
        if found is not None:
            try:
                cleanup.set_cfs(_cpu_dir(found[1]), round(cores * period), period)
            except OSError as err:
                raise FaultError(f"cannot set a {period} us CFS period on {name}: {err}") from err
            w.period = period

    def limits(self, name: str) -> tuple[float | None, int, int | None]:
        """(cores or None, CFS period in us, memory bytes or None) the container has now.

        Read from the container's cgroup (what the kernel enforces); all the
        host's cores or RAM is None (unlimited). A container not running:
        what the harness last asked for.
        """
        w = self._get(name)
        found = self._procs(w)
        if found is None:
            return w.cpu, w.period, w.memory
        dirs = found[1]
        quota, period = cleanup.read_cfs(_cpu_dir(dirs))
        if "memory" in dirs:
            memory = _read_int(dirs["memory"] / "memory.limit_in_bytes")
        else:
            text = (dirs["v2"] / "memory.max").read_text().strip()
            memory = _host_memory() if text == "max" else int(text)
        cores = None if quota < 0 or quota >= _host_cores() * period else quota / period
        return cores, period, None if memory >= _host_memory() else memory

    def limits_inverse(
        self, name: str, saved: tuple[float | None, int, int | None]
    ) -> dict[str, Any]:
        """The ledger inverse that sets the Pod back to ``saved`` (from :meth:`limits`)."""
        found = self._procs(self._get(name))
        cores, period, memory = saved
        return {
            "op": "kube_set_limits",
            "run_id": self.run.run_id,
            "namespace": self.namespace,
            "kubeconfig": str(self.kubeconfig),
            "pod": name,
            "cpu": cores,
            "memory": memory,
            "period": period,
            "cgroup": str(_cpu_dir(found[1])) if found is not None else None,
        }

    # --- network --------------------------------------------------------------------------------

    def _cgroup2(self, w: _Workload) -> tuple[str, int | None]:
        """The container's own cgroup2 path (for iptables), made by faultline if needed.

        On a hybrid host, runc leaves containers at the cgroup2 root: the
        container's processes are then moved into ``faultline/<run_id>/<name>``
        (no controllers live there, so nothing about its limits changes).
        Returns the path and the ledger entry of the directory made, if any.
        """
        assert w.spec is not None
        found = self._procs(w)
        if found is None:
            raise ConfigError(f"workload {w.spec.name!r}", "is not running: cannot isolate it")
        v2 = found[1].get("v2")
        if v2 is None:
            raise BackendUnavailable(
                "the cgroup2 hierarchy (sockets are matched by cgroup2 path)",
                "mount cgroup2 (unified or hybrid, e.g. at /sys/fs/cgroup/unified)",
            )
        root = _CGROUP_ROOT if (_CGROUP_ROOT / "cgroup.controllers").exists() else v2
        while root != _CGROUP_ROOT and root.parent != root and root.name != "unified":
            root = root.parent
        rel = v2.relative_to(root).as_posix()
        if rel not in ("", "."):
            return "/" + rel, None
        base = root / "faultline"
        paths = [str(base), str(base / self.run.run_id)]
        if self._cgroup_parents is None:
            self._cgroup_parents = self.run.ledger.record(
                "faultline cgroup2 parents", {"op": "remove_empty_cgroups", "paths": paths}
            )
        mine = base / self.run.run_id / w.spec.name
        seq = self.run.ledger.record(
            f"cgroup2 of {w.spec.name} (socket matching)",
            {"op": "release_cgroup2", "path": str(mine), "root": str(root)},
        )
        mine.mkdir(parents=True, exist_ok=True)
        # The container's processes: those of its cgroup in any v1 hierarchy.
        v1 = next(d for c, d in found[1].items() if c != "v2")
        for pid in (v1 / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # exited meanwhile
                (mine / "cgroup.procs").write_text(pid)
        self.run.ledger.applied(seq)
        return f"/faultline/{self.run.run_id}/{w.spec.name}", seq

    def isolate(self, name: str, peers: Sequence[str]) -> None:
        w = self._get(name)
        others = [self._get(p) for p in peers]
        if name in peers:
            raise ConfigError("peers", f"{name!r} cannot be isolated from itself")
        if w.isolation is not None:
            raise ConfigError(f"workload {name!r}", "is already isolated", expected="heal() first")
        if shutil.which("iptables") is None:
            raise BackendUnavailable("iptables", "apt-get install -y iptables")
        groups, cg_seqs = [], []
        for x in (w, *others):
            path, seq = self._cgroup2(x)
            groups.append(path)
            if seq is not None:
                cg_seqs.append(seq)
        self._chains += 1
        chain = f"{chain_prefix(self.run.run_id)}k{self._chains}"
        seq = self.run.ledger.record(
            f"isolate {name} from {', '.join(peers)}",
            {"op": "remove_iptables_chain", "chain": chain, "parents": CHAIN_PARENTS},
        )
        w.isolation = (chain, seq, cg_seqs)
        install_drop_chain(
            chain,
            (groups[0], w.placement.ports.values()),
            [(g, x.placement.ports.values()) for x, g in zip(others, groups[1:], strict=True)],
        )
        self.run.ledger.applied(seq, chain=chain)

    def heal(self, name: str) -> None:
        w = self._get(name)
        if w.isolation is None:
            return
        _, seq, cg_seqs = w.isolation
        self.run.ledger.revert(seq)
        for cg_seq in cg_seqs:
            self.run.ledger.revert(cg_seq)
        w.isolation = None

    # --- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Thaw, heal, delete the namespace (and wait until it is gone); idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for name, w in self._workloads.items():
            w.closing.set()
            if w.spec is None:
                continue
            try:
                self.resume(name)
                self.heal(name)
            except Exception as err:  # noqa: BLE001 - every workload gets its teardown
                errors.append(f"{name}: {err}")
        for w in self._workloads.values():
            if w.tail is not None:
                w.tail.drain()
        # Before the namespace goes (>= 5 s: the namespace controller's grace): the
        # watch ends within its 5 s server-side timeout meanwhile, so the join is free.
        self._stop_watch.set()
        if self._ns_seq is not None:
            try:
                self.run.ledger.revert(self._ns_seq)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(str(err))
        if self._cgroup_parents is not None:
            with contextlib.suppress(Exception):
                self.run.ledger.revert(self._cgroup_parents)
        for w in self._workloads.values():
            if w.tail is not None:
                w.tail.done.set()
                w.tail.join(timeout=5)
            if w.prober is not None:
                w.prober.join(timeout=5)
            for lease in w.leases:
                lease.release(self.run.ledger)
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.api.close()
        if errors:
            log.error("kubernetes backend left things behind: %s", "; ".join(errors))


_BACKOFF = "CrashLoopBackOff"
# Waiting reasons that never resolve by themselves: start() fails at once.
_FATAL_WAITING = ("ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "RunContainerError")  # fmt: skip


def _cpu_quantity(cores: float) -> str:
    return f"{cleanup.kube_millicores(cores)}m"


def _kube_quota(cores: float) -> int:
    """The CFS quota (us) kubelet gives a Pod of ``cores`` at its 100 ms period."""
    return cleanup.kube_millicores(cores) * _CPU_PERIOD_US // 1000


def _cpu_dir(dirs: dict[str, Path]) -> Path:
    """The directory whose CFS files limit a container: v1 ``cpu``, else cgroup2."""
    return dirs.get("cpu") or dirs["v2"]
