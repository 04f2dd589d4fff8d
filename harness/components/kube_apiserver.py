"""``KubeApiServer``: a real kube-apiserver whose storage is the run's :class:`EtcdCluster`.

Seed 000's customer impact was a Kubernetes API server that lost its etcd quorum:
``kubectl`` failed and the controllers lost the API. This component is that API
server, and nothing special: a :class:`Service` configured for kube-apiserver, as
:class:`~harness.components.orderd.OrderService` is for orderd. The binary is the
one ``faultline cluster`` builds from the Go module proxy (``.ci/setup`` builds
it; :func:`harness.kube.cluster.built`), so every backend runs the same program:
a process on ``local``, a ``FROM scratch`` image on ``docker`` and ``kubernetes``.

It talks to every member over mutual TLS with the cluster's client certificate,
serves HTTPS with a certificate from ``pki`` (whose CA also vouches for clients), and
authorises with RBAC (anonymous requests may read ``/readyz``; :attr:`kubeconfig`
holds an admin certificate, group ``system:masters``); no controller manager,
scheduler or kubelet run against it. Ready when ``/readyz`` answers 200, verified
against the run's CA.

>>> with KubeApiServer(backend, run, pki, etcd=cluster) as api:   # doctest: +SKIP
...     api.ready("etcd")                 # GET /readyz/etcd: can it reach its storage?
...     api.kubectl("get", "namespaces")  # what a user sees
"""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from typing import Self

import httpx

from harness.backends.base import Backend, Placement
from harness.components.etcd import EtcdCluster
from harness.components.service import Service
from harness.errors import BackendUnavailable, ConfigError
from harness.kube import cluster as kube
from harness.pki import CertPaths, Pki
from harness.run import Run

__all__ = ["KubeApiServer"]

_FILES = (
    "ca.crt",
    "etcd-ca.crt",
    "etcd-client.crt",
    "etcd-client.key",
    "tls.crt",
    "tls.key",
    "sa.crt",
    "sa.key",
)
SERVICE_CIDR = "10.96.0.0/24"  # required by the flag; nothing routes it


def _binaries() -> kube.Build:
    b = kube.built()
    if b is None:
        raise BackendUnavailable(
            f"kube-apiserver {kube.VERSION}",
            "build the Kubernetes components: bash .ci/setup (or .venv/bin/python -c "
            "'from harness.kube.cluster import build; build()'; cached once built)",
        )
    return b


class KubeApiServer(Service):
    """One kube-apiserver on ``etcd``; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        run: Run,
        pki: Pki,
        *,
        etcd: EtcdCluster,
        name: str = "kube-apiserver",
        request_timeout_s: float = 2.0,
        start_timeout: float = 90.0,
    ) -> None:
        if not request_timeout_s > 0:
            raise ConfigError("request_timeout_s", f"{request_timeout_s!r}", expected="> 0")
        self.pki = pki
        self.etcd = etcd
        self.request_timeout_s = request_timeout_s
        self._kubeconfig: Path | None = None
        self._admin_tls: ssl.SSLContext | None = None
        binaries = _binaries()
        self._kubectl = binaries.bin("kubectl")
        super().__init__(
            backend,
            run,
            name=name,
            command=[str(binaries.bin("kube-apiserver"))],
            ports=["https"],
            health="/readyz",
            health_ca="ca.crt",
            metrics_path=None,
            start_timeout=start_timeout,
        )

    def start(self) -> Self:
        if not self.files:
            # The cluster's client certificate exists once the cluster has started.
            tls = self.etcd.client_tls()
            serving = self.pki.server(self.name)
            signer = self.pki.client(f"{self.name}-service-accounts")  # its key signs tokens
            paths = (
                self.pki.ca_cert,
                *(tls.ca, tls.cert, tls.key),
                *(serving.cert, serving.key, signer.cert, signer.key),
            )
            self.files = dict(zip(_FILES, paths, strict=True))
        super().start()
        self._write_kubeconfig(self.pki.client("kube-admin", groups=["system:masters"]))
        return self

    def extra_args(self, placement: Placement) -> list[str]:
        f = placement.path
        return [
            f"--etcd-servers={','.join(self.etcd.internal_endpoints())}",
            f"--etcd-cafile={f('etcd-ca.crt')}",
            f"--etcd-certfile={f('etcd-client.crt')}",
            f"--etcd-keyfile={f('etcd-client.key')}",
            f"--etcd-healthcheck-timeout={self.request_timeout_s}s",
            f"--etcd-readycheck-timeout={self.request_timeout_s}s",
            "--bind-address={host}",
            "--advertise-address=127.0.0.1",
            "--secure-port={port:https}",
            f"--tls-cert-file={f('tls.crt')}",
            f"--tls-private-key-file={f('tls.key')}",
            f"--client-ca-file={f('ca.crt')}",
            f"--service-account-key-file={f('sa.crt')}",  # its public key verifies tokens
            f"--service-account-signing-key-file={f('sa.key')}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # RBAC's bootstrap roles let anonymous probes read /readyz; the admin
            # certificate (group system:masters) may do anything.
            "--authorization-mode=RBAC",
            # A loopback address may not be an endpoint: no reconciler for `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    # -- what a client sees ---------------------------------------------------------

    def ready(self, check: str = "", timeout: float | None = None) -> bool:
        """Whether ``/readyz`` (or ``/readyz/<check>``, e.g. ``etcd``) answers 200 now,
        asked as the admin (RBAC lets anonymous callers read ``/readyz`` alone)."""
        if self._admin_tls is None:
            raise ConfigError(f"{self.name}.ready", "the API server has not been started")
        path = "/readyz" + (f"/{check}" if check else "")
        url = self.placement.external_url("https", scheme="https", path=path)
        try:
            resp = httpx.get(url, verify=self._admin_tls, timeout=timeout or self.request_timeout_s)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig for this API server, in the run's pki directory (0600):
        ``kubectl --kubeconfig``."""
        if self._kubeconfig is None:
            raise ConfigError(f"{self.name}.kubeconfig", "the API server has not been started")
        return self._kubeconfig

    def _write_kubeconfig(self, admin: CertPaths) -> None:
        ctx = ssl.create_default_context(cafile=str(admin.ca))
        ctx.load_cert_chain(str(admin.cert), str(admin.key))
        self._admin_tls = ctx
        user = {"client-certificate": str(admin.cert), "client-key": str(admin.key)}
        server = self.placement.external_url("https", scheme="https")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {"server": server, "certificate-authority": str(admin.ca)},
                }
            ],
            "users": [{"name": "admin", "user": user}],
            "contexts": [{"name": "run", "context": {"cluster": self.name, "user": "admin"}}],
            "current-context": "run",
        }
        path = self.pki.dir / f"{self.name}.kubeconfig"
        path.touch(mode=0o600)
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML too
        self._kubeconfig = path

    def kubectl(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl <args>`` against this API server with a request timeout; never
        raises on kubectl's own failure (see ``returncode`` and ``stderr``; -9 when it
        had to be killed 5 s past the timeout)."""
        limit = timeout or self.request_timeout_s
        cmd = [
            str(self._kubectl),
            f"--kubeconfig={self.kubeconfig}",
            f"--request-timeout={limit}s",
            *args,
        ]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 5)
        except subprocess.TimeoutExpired as err:
            return subprocess.CompletedProcess(cmd, -9, "", f"kubectl timed out: {err}")
