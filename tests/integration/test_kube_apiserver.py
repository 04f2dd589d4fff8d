"""KubeApiServer on a real etcd cluster: ready over HTTPS, its storage in etcd, kubectl.

Runs on the backend pytest was given (``--backend``, default local); skips, saying
how to build it, without the Kubernetes components (``.ci/setup`` builds them).
"""

from __future__ import annotations

import pytest

from harness.backends.base import Backend
from harness.components.etcd import EtcdCluster
from harness.components.kube_apiserver import KubeApiServer
from harness.pki import Pki
from harness.run import Run

pytestmark = [pytest.mark.timeout(180)]


def test_kubectl_creates_through_the_api_server_into_the_etcd_cluster(
    backend: Backend, run: Run, pki: Pki
) -> None:
    with (
        EtcdCluster(backend, run, pki, size=1) as etcd,
        KubeApiServer(backend, run, pki, etcd=etcd) as api,
    ):
        assert api.healthy()  # anonymous /readyz over HTTPS, verified against health_ca
        assert api.ready("etcd")  # a check RBAC lets only the admin read
        made = api.kubectl("create", "namespace", "faultline-probe")
        assert made.returncode == 0, made.stderr
        listed = api.kubectl("get", "namespaces", "-o", "name")
        assert "namespace/faultline-probe" in listed.stdout.split(), listed.stderr
        # The object is in the cluster's storage, where the scenario's fault hits it.
        with etcd.client() as kv:
            assert kv.get("/registry/namespaces/faultline-probe") is not None
        assert api.kubeconfig.stat().st_mode & 0o777 == 0o600
