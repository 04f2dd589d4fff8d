"""``OrderService``: the orderd Go target (go_targets/cmd/orderd) as a component.

orderd is an order-fulfillment service with switchable bugs from the seeds
(goroutine leak, channel and mutex deadlocks, global deadlock, map race,
memory leak, check-then-act oversell). It stores orders in an
:class:`~harness.components.etcd.EtcdCluster` over mutual TLS, or in memory
without one. Ready when ``/readyz`` answers 200 (which includes etcd).

>>> svc = OrderService(backend, run, etcd=cluster, bugs={"goroutine_leak": 2})  # doctest: +SKIP
>>> with svc:
...     svc.set_bug("goroutine_leak", enabled=False)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from harness import gobuild
from harness.backends.base import (
    Backend,
    Placement,
    Probe,
    ProbeKind,
    RestartPolicy,
    WorkloadSpec,
    dial_address,
)
from harness.components.base import Component, log_tail
from harness.components.etcd import EtcdCluster
from harness.errors import ComponentStartError, ConfigError
from harness.observe.buildinfo import MAIN_ONLY, ProjectCode, read_buildinfo
from harness.run import Run

__all__ = ["BUGS", "OrderService"]

log = logging.getLogger(__name__)

BUGS = (
    "goroutine_leak",
    "channel_deadlock",
    "mutex_deadlock",
    "global_deadlock",
    "map_race",
    "memory_leak",
    "check_then_act",
)
_FILES = ("ca.crt", "client.crt", "client.key")


class OrderService(Component):
    """One orderd process; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        run: Run,
        *,
        name: str = "orderd",
        etcd: EtcdCluster | None = None,
        etcd_endpoints: Sequence[str] | None = None,
        bugs: Mapping[str, float] | None = None,
        race: bool = False,
        memory_limit: int | None = None,
        cpu_limit: float | None = None,
        restart: RestartPolicy | None = None,
        liveness: bool = False,
        health_timeout_s: float = 3.0,
        start_timeout: float = 30.0,
    ) -> None:
        for bug in bugs or {}:
            if bug not in BUGS:
                raise ConfigError(f"bugs.{bug}", "unknown bug", expected=", ".join(BUGS))
        self.backend = backend
        self.run = run
        self.name = name
        self.etcd = etcd
        # Where orderd dials etcd; default the members themselves. A scenario puts
        # Toxiproxy listeners here to add latency between orderd and etcd (TLS passes
        # through the proxy untouched; orderd then verifies the members' certificates
        # for "localhost", which every member's carries, not for the proxy's name).
        self.etcd_endpoints = list(etcd_endpoints) if etcd_endpoints is not None else None
        if self.etcd_endpoints is not None and etcd is None:
            raise ConfigError("etcd_endpoints", "given without the etcd cluster", expected="etcd=")
        self.bugs = dict(bugs or {})
        self.race = race
        self.memory_limit = memory_limit
        self.cpu_limit = cpu_limit
        self.restart_policy = restart or RestartPolicy()
        self.liveness = liveness
        self.health_timeout_s = health_timeout_s
        self.start_timeout = start_timeout
        self._placement: Placement | None = None
        self._http: httpx.Client | None = None
        # Its own code, from the binary's build info: what findings are attributed to.
        self.project: ProjectCode = MAIN_ONLY

    def start(self) -> Self:
        if self._placement is not None:
            return self
        binary = gobuild.build("orderd", race=self.race)
        self.project = ProjectCode.of(read_buildinfo(binary))
        files = _FILES if self.etcd else ()
        p = self.backend.plan(self.name, ports=["http", "grpc", "admin"], files=files)
        self._placement = p
        args = [
            str(binary),
            f"--http-addr={p.bind_host}:{p.port('http')}",
            f"--grpc-addr={p.bind_host}:{p.port('grpc')}",
            f"--admin-addr={p.bind_host}:{p.port('admin')}",
            f"--health-timeout={self.health_timeout_s}s",
        ]
        if p.bind_host != "127.0.0.1":
            args.append("--allow-non-loopback")
        spec_files = {}
        if self.etcd is not None:
            tls = self.etcd.client_tls()
            spec_files = {"ca.crt": tls.ca, "client.crt": tls.cert, "client.key": tls.key}
            args += [
                f"--etcd-cacert={p.path('ca.crt')}",
                f"--etcd-cert={p.path('client.crt')}",
                f"--etcd-key={p.path('client.key')}",
            ]
            if self.etcd_endpoints is None:
                args.append("--etcd-endpoints=" + ",".join(self.etcd.internal_endpoints()))
            else:
                proxied = [
                    u._replace(netloc=dial_address(self.backend, u.netloc)).geturl()
                    for u in map(urlsplit, self.etcd_endpoints)
                ]
                args += ["--etcd-endpoints=" + ",".join(proxied), "--etcd-server-name=localhost"]
        args += [f"--bug={bug}={intensity}" for bug, intensity in self.bugs.items()]
        spec = WorkloadSpec(
            name=self.name,
            command=tuple(args),
            placement=p,
            files=spec_files,
            memory_limit=self.memory_limit,
            cpu_limit=self.cpu_limit,
            restart=self.restart_policy,
            readiness=Probe(ProbeKind.HTTP, "http", path="/readyz"),
            liveness=(
                Probe(ProbeKind.HTTP, "http", path="/healthz", timeout=2.0, failure_threshold=3)
                if self.liveness
                else None
            ),
        )
        self._http = httpx.Client(timeout=5.0)
        self.backend.start(spec)
        try:
            self.backend.wait_ready(self.name, timeout=self.start_timeout)
        except ComponentStartError as err:
            err.add_note(log_tail(self.backend.log_path(self.name)))
            raise
        log.info("orderd %r ready at %s (bugs: %s)", self.name, self.url, self.bugs or "none")
        return self

    def stop(self) -> None:
        if self._placement is not None:
            self.backend.stop(self.name)
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def placement(self) -> Placement:
        if self._placement is None:
            raise ConfigError(self.name, "orderd has not been started")
        return self._placement

    @property
    def url(self) -> str:
        return self.placement.external_url("http")

    @property
    def admin_url(self) -> str:
        return self.placement.external_url("admin")

    @property
    def grpc_address(self) -> str:
        host, port = self.placement.external("grpc")
        return f"{host}:{port}"

    @property
    def metrics_address(self) -> str:
        host, port = self.placement.external("http")
        return f"{host}:{port}"

    def _client(self) -> httpx.Client:
        if self._http is None:
            raise ConfigError(self.name, "orderd has not been started")
        return self._http

    def bug_states(self) -> dict[str, Any]:
        resp = self._client().get(self.admin_url + "/bugs")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def set_bug(self, bug: str, *, enabled: bool, intensity: float | None = None) -> None:
        """Switch a bug on or off at run time through the admin listener."""
        if bug not in BUGS:
            raise ConfigError("bug", f"unknown bug {bug!r}", expected=", ".join(BUGS))
        body: dict[str, Any] = {"enabled": enabled}
        if intensity is not None:
            body["intensity"] = intensity
        resp = self._client().put(f"{self.admin_url}/bugs/{bug}", json=body)
        resp.raise_for_status()

    def goroutine_dump(self) -> str:
        """``/debug/pprof/goroutine?debug=2``: every goroutine with its stack and wait."""
        resp = self._client().get(self.url + "/debug/pprof/goroutine?debug=2", timeout=10.0)
        resp.raise_for_status()
        return resp.text
