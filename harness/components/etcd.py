"""A TLS etcd cluster (1, 3 or 5 members) started through any backend.

Peers and clients use mutual TLS against the run's CA; each member also
serves plain-HTTP metrics and ``/health`` on 127.0.0.1 so Prometheus scrapes
it without certificates. Data directories and logs live in the run directory.

>>> with EtcdCluster(backend, run, pki, size=3) as etcd:          # doctest: +SKIP
...     old = etcd.leader()
...     etcd.kill(old.name)
...     wait_for(lambda: (l := etcd.leader()) and l.name != old.name, timeout=10)
...     etcd.start_member(old.name)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from harness.backends.base import Backend, Placement, WorkloadSpec
from harness.components.base import Component, log_tail
from harness.errors import ComponentStartError, ConfigError
from harness.etcd_client import EtcdClient, EtcdError, MemberStatus
from harness.pki import CertPaths, Pki
from harness.run import Run
from harness.wait import WaitTimeout, wait_for

__all__ = ["EtcdCluster", "EtcdMember"]

log = logging.getLogger(__name__)

SIZES = (1, 3, 5)
# Per-request timeout of the status polls behind leader(): short, so a paused
# member costs little, long enough for a busy 2-core machine.
STATUS_TIMEOUT = 1.0
_FILES = ("ca.crt", "member.crt", "member.key")


@dataclass(frozen=True)
class EtcdMember:
    """One member as the harness reaches it (URLs on 127.0.0.1) and as etcd names it."""

    name: str
    client_url: str
    peer_url: str
    metrics_url: str
    member_id: int  # 0 until the cluster has started


class EtcdCluster(Component):
    """See the module docstring. ``start()`` returns once every member agrees on a leader."""

    def __init__(
        self,
        backend: Backend,
        run: Run,
        pki: Pki,
        size: int = 3,
        name: str = "etcd",
        election_timeout_ms: int = 1000,
        heartbeat_ms: int = 100,
        extra_args: Sequence[str] = (),
        *,
        start_timeout: float = 30.0,
    ) -> None:
        if size not in SIZES:
            raise ConfigError("size", f"{size!r} members", expected="1, 3 or 5")
        for field, value, upper in (
            ("heartbeat_ms", heartbeat_ms, 10_000),
            ("election_timeout_ms", election_timeout_ms, 50_000),
        ):
            # etcd takes whole milliseconds; NaN and infinity would reach its flags.
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
                raise ConfigError(field, f"{value!r}", expected=f"whole milliseconds, 1..{upper}")
        # etcd itself refuses an election timeout below 5 heartbeats; say so before starting.
        if election_timeout_ms < 5 * heartbeat_ms:
            raise ConfigError(
                "election_timeout_ms",
                f"{election_timeout_ms} is less than 5 heartbeats of {heartbeat_ms} ms",
                expected=f">= {5 * heartbeat_ms}",
            )
        self.backend = backend
        self.run = run
        self.pki = pki
        self.size = size
        self.name = name
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.member_names = [f"{name}-{i}" for i in range(size)]
        self._placements: dict[str, Placement] = {}
        self._specs: dict[str, WorkloadSpec] = {}
        self._ids: dict[str, int] = {}
        self._client_tls: CertPaths | None = None
        self._status_client: EtcdClient | None = None
        self._clients: list[EtcdClient] = []
        self._started: list[str] = []  # what stop() must stop, even after a partial start
        self._metrics_http: httpx.Client | None = None

    # Lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        if self._specs:
            return self
        for m in self.member_names:
            self._placements[m] = self.backend.plan(
                m, ports=["client", "peer", "metrics"], files=_FILES
            )
        self._client_tls = self.pki.client(f"{self.name}-client")
        initial = ",".join(f"{m}=https://{p.internal('peer')}" for m, p in self._placements.items())
        for m, placement in self._placements.items():
            self._specs[m] = self._spec(m, placement, initial)
        tls = self._client_tls
        self._status_client = EtcdClient(
            self.endpoints(), tls.ca, tls.cert, tls.key, timeout=STATUS_TIMEOUT
        )
        self._metrics_http = httpx.Client(timeout=STATUS_TIMEOUT)
        # All members start before any wait: a member alone cannot elect a leader.
        for m, spec in self._specs.items():
            self.backend.start(spec)
            self._started.append(m)
        self._ids = self._wait_ready(self.start_timeout)
        log.info("etcd cluster %r ready: %d members", self.name, self.size)
        return self

    def stop(self, name: str | None = None) -> None:
        """Stop member ``name`` gracefully, or (no name) the whole cluster; idempotent.

        A stopped cluster is not started again: make a new :class:`EtcdCluster`.
        """
        if name is not None:
            self.backend.stop(self.member(name).name)
            return
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self._status_client is not None:
            self._status_client.close()
            self._status_client = None
        if self._metrics_http is not None:
            self._metrics_http.close()
            self._metrics_http = None
        for m in self._started:
            self.backend.stop(m)

    def _spec(self, member: str, placement: Placement, initial_cluster: str) -> WorkloadSpec:
        internal = placement.internal_host
        try:
            ipaddress.ip_address(internal)
            ips, hosts = [internal], []
        except ValueError:  # a container or pod name: a DNS SAN
            ips, hosts = [], [internal]
        certs = self.pki.peer(member, hosts=hosts, ips=ips)
        data_dir = self.run.subdir(self.name) / member
        ca, cert, key = (placement.path(f) for f in _FILES)
        bind = placement.bind_host
        bind = f"[{bind}]" if ":" in bind else bind
        args = [
            "--name", member,
            "--data-dir", str(data_dir),
            "--listen-client-urls", f"https://{bind}:{placement.port('client')}",
            "--advertise-client-urls", f"https://{placement.internal('client')}",
            "--listen-peer-urls", f"https://{bind}:{placement.port('peer')}",
            "--initial-advertise-peer-urls", f"https://{placement.internal('peer')}",
            "--listen-metrics-urls", f"http://{bind}:{placement.port('metrics')}",
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", "new",
            # Unique per run, so members of parallel runs can never join each other.
            "--initial-cluster-token", f"{self.name}-{self.run.run_id}",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_timeout_ms),
            # etcd 3.4's gRPC gateway dials the member itself presenting the server
            # certificate, so the client listener needs a cert with clientAuth too.
            "--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key,
            "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
            "--peer-cert-file", cert, "--peer-key-file", key,
            "--logger", "zap", "--log-outputs", "stderr",
            *self.extra_args,
        ]  # fmt: skip
        return WorkloadSpec(
            name=member,
            command=("etcd", *args),
            placement=placement,
            files={"ca.crt": certs.ca, "member.crt": certs.cert, "member.key": certs.key},
        )

    def _wait_ready(self, timeout: float) -> dict[str, int]:
        """Wait until every member answers and names the same leader; return member ids."""

        def agreed() -> dict[str, int] | None:
            statuses = self.statuses()
            leaders = {s.leader_id if s else 0 for s in statuses.values()}
            if len(leaders) != 1 or 0 in leaders:
                return None
            return {m: s.member_id for m, s in statuses.items() if s is not None}

        try:
            return wait_for(
                agreed, timeout=timeout, interval=0.05, what=f"etcd cluster {self.name!r}"
            )
        except WaitTimeout as err:
            failure = ComponentStartError(
                f"etcd cluster {self.name!r} ({self.size} members) had no agreed leader "
                f"within {timeout:.0f}s"
            )
            for m in self.member_names:
                failure.add_note(f"--- {m} log tail ---\n{log_tail(self.backend.log_path(m))}")
            raise failure from err

    # Members and their state -----------------------------------------------------

    def members(self) -> list[EtcdMember]:
        return [self.member(m) for m in self.member_names]

    def member(self, name: str) -> EtcdMember:
        try:
            p = self._placements[name]
        except KeyError:
            raise ConfigError(
                "member", f"no member {name!r} in cluster {self.name!r} (or not started)",
                expected=", ".join(self.member_names),
            ) from None  # fmt: skip
        return EtcdMember(
            name=name,
            client_url=p.external_url("client", "https"),
            peer_url=f"https://{p.internal('peer')}",
            metrics_url=p.external_url("metrics"),
            member_id=self._ids.get(name, 0),
        )

    def endpoints(self) -> list[str]:
        """Client URLs as the harness reaches them (127.0.0.1)."""
        return [m.client_url for m in self.members()]

    def internal_endpoints(self) -> list[str]:
        """Client URLs as other workloads of the run reach them (container names on docker)."""
        self.member(self.member_names[0])  # a clear error before start()
        return [f"https://{self._placements[m].internal('client')}" for m in self.member_names]

    def client_tls(self) -> CertPaths:
        """CA, client cert and key for other components (``ca, cert, key = ...``)."""
        if self._client_tls is None:
            raise ConfigError("client_tls", "the cluster has not been started")
        return self._client_tls

    def client(self, member: str | None = None, timeout: float = 5.0) -> EtcdClient:
        """A client of every member (or of ``member`` only); closed by :meth:`stop`."""
        endpoints = [self.member(member).client_url] if member else self.endpoints()
        tls = self.client_tls()
        c = EtcdClient(endpoints, tls.ca, tls.cert, tls.key, timeout=timeout)
        self._clients.append(c)
        return c

    def statuses(self) -> dict[str, MemberStatus | None]:
        """Each member's own status, polled in parallel; None if it did not answer."""
        client = self._status_client
        if client is None:
            return dict.fromkeys(self.member_names)

        def one(m: str) -> MemberStatus | None:
            try:
                return client.status(self.member(m).client_url)
            except EtcdError:
                return None

        with ThreadPoolExecutor(max_workers=self.size) as pool:
            return dict(zip(self.member_names, pool.map(one, self.member_names), strict=True))

    def leader(self) -> EtcdMember | None:
        """The leader, if a quorum of members answers and every answer names it.

        None while an election is under way, without quorum, or when members
        disagree (a partitioned old leader that still thinks it leads).
        """
        named = {n: s for n, s in self.statuses().items() if s is not None}
        leaders = {s.leader_id for s in named.values()}
        if len(named) <= self.size // 2 or len(leaders) != 1 or 0 in leaders:
            return None
        (leader_id,) = leaders
        # The leader may not have answered itself (paused): fall back to the known ids.
        name = next((n for n, s in named.items() if s.member_id == leader_id), None) or next(
            (n for n, i in self._ids.items() if i == leader_id), None
        )
        return self.member(name) if name else None

    def leader_name(self) -> str | None:
        """:meth:`leader`'s name, or None: what a ``LeaderWatcher`` polls."""
        leader = self.leader()
        return leader.name if leader else None

    def health(self) -> dict[str, bool]:
        """Each member's ``/health`` on its metrics port (true only with a leader)."""
        out = {}
        for m in self.member_names:
            healthy = False
            if self._metrics_http is not None:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    resp = self._metrics_http.get(self.member(m).metrics_url + "/health")
                    healthy = resp.status_code == 200 and resp.json().get("health") == "true"
            out[m] = healthy
        return out

    # Per-member faults -------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.backend.kill(self.member(name).name, int(sig))

    def pause(self, name: str) -> None:
        self.backend.pause(self.member(name).name)

    def resume(self, name: str) -> None:
        self.backend.resume(self.member(name).name)

    def start_member(self, name: str, timeout: float = 30.0) -> None:
        """(Re)start a member on its own data dir and wait until it names a leader.

        A stopped or killed member is started; a running one is restarted, so
        it picks up files changed under it (a certificate fault's revert).
        The spec keeps ``--initial-cluster-state new`` on purpose: etcd ignores
        the initial-cluster flags once its data dir holds a WAL and comes back
        as the existing member (same member id), so ``Backend.restart`` with
        the same spec is the backend-neutral way to rejoin.
        """
        member = self.member(name).name
        self.backend.restart(member)
        client = self._status_client
        if client is None:
            raise ConfigError("start_member", "the cluster has not been started")
        url = self.member(member).client_url
        try:
            wait_for(
                lambda: client.status(url).leader_id != 0,
                timeout=timeout,
                interval=0.05,
                what=f"etcd member {member} rejoining",
            )
        except WaitTimeout as err:
            failure = ComponentStartError(f"etcd member {member} did not rejoin in {timeout}s")
            failure.add_note(
                f"--- {member} log tail ---\n{log_tail(self.backend.log_path(member))}"
            )
            raise failure from err

    def placement(self, name: str) -> Placement:
        """Where member ``name`` listens and reads its files (``member.crt``, ...)."""
        return self._placements[self.member(name).name]

    def log_path(self, name: str) -> Path:
        return self.backend.log_path(self.member(name).name)
