"""EtcdClient's endpoint choice (pure logic: the HTTP call is replaced)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import UnsafeTargetError
from harness.etcd_client import EtcdClient, EtcdError, _Unreachable


def test_calls_stick_to_the_endpoint_that_answered_last(monkeypatch: pytest.MonkeyPatch) -> None:
    client = EtcdClient(["https://127.0.0.1:1", "https://127.0.0.1:2", "https://127.0.0.1:3"])
    down = {"https://127.0.0.1:1"}
    tried: list[str] = []

    def post(endpoint: str, path: str, body: dict[str, Any], *, what: str) -> dict[str, Any]:
        tried.append(endpoint)
        if endpoint in down:
            raise _Unreachable(f"{endpoint} down")
        return {"header": {"revision": "7"}}

    monkeypatch.setattr(client, "_post", post)
    assert client.put("k", "v") == 7
    assert client.put("k", "v") == 7
    # The dead first endpoint cost one try, not one per call.
    assert tried == ["https://127.0.0.1:1", "https://127.0.0.1:2", "https://127.0.0.1:2"]
    down.add("https://127.0.0.1:2")
    tried.clear()
    client.put("k", "v")
    assert tried == ["https://127.0.0.1:2", "https://127.0.0.1:3"]
    down.add("https://127.0.0.1:3")
    with pytest.raises(EtcdError, match="no endpoint reachable"):
        client.put("k", "v")
    client.close()


def test_non_loopback_endpoints_are_refused() -> None:
    with pytest.raises(UnsafeTargetError):
        EtcdClient(["https://10.0.0.1:2379"])
