"""A small etcd v3 client over etcd's gRPC-JSON gateway (HTTPS + client certs).

etcd 3.4 serves the gateway at ``/v3/``; keys and values travel base64-encoded
and 64-bit integers as strings. We use it instead of the ``etcd3`` package,
which is unmaintained and breaks on current protobuf. Only loopback endpoints
(or addresses this run owns) are accepted, checked before any request.

>>> with EtcdClient(cluster.endpoints(), *cluster.client_tls()) as etcd:   # doctest: +SKIP
...     rev = etcd.put("orders/1", "new")
...     kv = etcd.get("orders/1")
...     etcd.txn("orders/1", "paid", if_mod_revision=kv.mod_revision).succeeded
True
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from harness.errors import ConfigError, HarnessError
from harness.safety import check_hostport

__all__ = ["EtcdClient", "EtcdError", "KeyValue", "MemberInfo", "MemberStatus", "TxnResult"]

log = logging.getLogger(__name__)


class EtcdError(HarnessError):
    """An etcd request failed; the message says what was attempted, where, and why."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the transaction


@dataclass(frozen=True)
class MemberStatus:
    """One member's own view (``/v3/maintenance/status``); leader 0 = none known."""

    endpoint: str
    member_id: int
    leader_id: int
    raft_term: int
    raft_index: int
    version: str
    db_size: int


@dataclass(frozen=True)
class MemberInfo:
    member_id: int
    name: str  # empty for a member added but never started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _int(obj: dict[str, Any], key: str) -> int:
    # The gateway omits zero values and sends 64-bit integers as strings.
    return int(obj.get(key, 0))


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("endpoints", f"{url!r} is not an etcd URL", expected="https://host:port")
    check_hostport(parts.netloc, field="endpoints")
    return f"{parts.scheme}://{parts.netloc}"


class EtcdClient:
    """Key-value, transaction and maintenance calls against a list of endpoints.

    Requests go to the first endpoint that answers; a connection failure moves
    on to the next one. An answer with an error (no leader, timeout inside
    etcd) is raised as :class:`EtcdError` without retrying: the caller decides.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ConfigError("endpoints", "no endpoint given", expected="at least one URL")
        self.endpoints = [_check_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self._preferred = 0  # index of the endpoint that answered last
        # httpx only presents a client certificate reliably through an SSLContext.
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        self._http = httpx.Client(verify=ctx, timeout=timeout)

    # Key-value -----------------------------------------------------------------------

    def put(self, key: str | bytes, value: str | bytes) -> int:
        """Write ``key``; return the revision of the write."""
        body = {"key": _b64(key), "value": _b64(value)}
        resp = self._call("/v3/kv/put", body, what=f"put {key!r}")
        return _int(resp.get("header", {}), "revision")

    def get(self, key: str | bytes) -> KeyValue | None:
        """Read ``key``; None if it does not exist."""
        kvs = self._range({"key": _b64(key)}, what=f"get {key!r}")
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str | bytes) -> list[KeyValue]:
        """Every key starting with ``prefix``, in key order."""
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        body = {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))}
        return self._range(body, what=f"get prefix {prefix!r}")

    def delete(self, key: str | bytes) -> int:
        """Delete ``key``; return how many keys were deleted (0 or 1)."""
        resp = self._call("/v3/kv/deleterange", {"key": _b64(key)}, what=f"delete {key!r}")
        return _int(resp, "deleted")

    def txn(
        self,
        key: str | bytes,
        value: str | bytes,
        *,
        if_value: str | bytes | None = None,
        if_mod_revision: int | None = None,
    ) -> TxnResult:
        """Compare-and-swap: put ``value`` only if the key's value (or mod revision) matches.

        ``if_mod_revision=0`` means "only if the key does not exist yet".
        """
        if (if_value is None) == (if_mod_revision is None):
            raise ConfigError(
                "txn", "give exactly one condition", expected="if_value or if_mod_revision"
            )
        compare: dict[str, Any] = {"key": _b64(key), "result": "EQUAL"}
        if if_value is not None:
            compare |= {"target": "VALUE", "value": _b64(if_value)}
        else:
            compare |= {"target": "MOD", "mod_revision": str(if_mod_revision)}
        body = {
            "compare": [compare],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        }
        resp = self._call("/v3/kv/txn", body, what=f"txn on {key!r}")
        return TxnResult(
            succeeded=bool(resp.get("succeeded", False)),
            revision=_int(resp.get("header", {}), "revision"),
        )

    # Cluster and maintenance ---------------------------------------------------------

    def status(self, endpoint: str | None = None) -> MemberStatus:
        """The status of one member (``endpoint``, default the first endpoint)."""
        target = _check_endpoint(endpoint) if endpoint else self.endpoints[0]
        resp = self._post(target, "/v3/maintenance/status", {}, what="status")
        header = resp.get("header", {})
        return MemberStatus(
            endpoint=target,
            member_id=_int(header, "member_id"),
            leader_id=_int(resp, "leader"),
            raft_term=_int(resp, "raftTerm"),
            raft_index=_int(resp, "raftIndex"),
            version=str(resp.get("version", "")),
            db_size=_int(resp, "dbSize"),
        )

    def member_list(self) -> list[MemberInfo]:
        resp = self._call("/v3/cluster/member/list", {}, what="member list")
        return [
            MemberInfo(
                member_id=_int(m, "ID"),
                name=str(m.get("name", "")),
                peer_urls=tuple(m.get("peerURLs", ())),
                client_urls=tuple(m.get("clientURLs", ())),
            )
            for m in resp.get("members", [])
        ]

    # Plumbing ------------------------------------------------------------------------

    def _range(self, body: dict[str, str], *, what: str) -> list[KeyValue]:
        resp = self._call("/v3/kv/range", body, what=what)
        return [
            KeyValue(
                key=_unb64(kv.get("key", "")),
                value=_unb64(kv.get("value", "")),
                create_revision=_int(kv, "create_revision"),
                mod_revision=_int(kv, "mod_revision"),
                version=_int(kv, "version"),
            )
            for kv in resp.get("kvs", [])
        ]

    def _call(self, path: str, body: dict[str, Any], *, what: str) -> dict[str, Any]:
        # Start from the endpoint that last answered (as etcd's Go client sticks to
        # a working connection): an unreachable first endpoint then costs its
        # timeout once, not on every call.
        n = len(self.endpoints)
        failures = []
        for i in range(n):
            index = (self._preferred + i) % n
            try:
                data = self._post(self.endpoints[index], path, body, what=what)
            except _Unreachable as err:
                failures.append(str(err))
                continue
            self._preferred = index
            return data
        raise EtcdError(f"{what}: no endpoint reachable ({'; '.join(failures)})")

    def _post(self, endpoint: str, path: str, body: dict[str, Any], *, what: str) -> dict[str, Any]:
        try:
            resp = self._http.post(endpoint + path, json=body)
        except httpx.TransportError as err:
            raise _Unreachable(f"{what} at {endpoint}: unreachable: {err!r}") from err
        try:
            data: dict[str, Any] = resp.json()
        except ValueError:
            data = {"error": resp.text[:200]}
        if resp.status_code != 200 or "error" in data:
            raise EtcdError(
                f"{what} at {endpoint}: HTTP {resp.status_code}: {data.get('error') or data}"
            )
        return data

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Unreachable(EtcdError):
    """A connection-level failure: worth trying the next endpoint."""


def _prefix_end(prefix: bytes) -> bytes:
    # etcd's range_end for "every key with this prefix": the prefix with its last
    # byte incremented (dropping trailing 0xff bytes); all keys if that leaves nothing.
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"
