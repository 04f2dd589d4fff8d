"""KubeApiServer: what it refuses before anything starts (pure logic)."""

from __future__ import annotations

from typing import cast

import pytest

from harness.backends.base import Backend
from harness.components.etcd import EtcdCluster
from harness.components.kube_apiserver import KubeApiServer
from harness.errors import BackendUnavailable, ConfigError
from harness.kube import cluster
from harness.pki import Pki
from harness.run import Run

# The constructor only validates: it never touches the backend, the run, the Pki or etcd.
NOTHING = cast(Backend, None)


def test_without_the_kubernetes_build_it_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster, "built", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"bash \.ci/setup"):
        KubeApiServer(NOTHING, cast(Run, None), cast(Pki, None), etcd=cast(EtcdCluster, None))


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_a_request_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ConfigError, match="request_timeout_s"):
        KubeApiServer(
            NOTHING,
            cast(Run, None),
            cast(Pki, None),
            etcd=cast(EtcdCluster, None),
            request_timeout_s=timeout,
        )
