"""``OrderService``: the orderd Go target (go_targets/cmd/orderd) as a :class:`Service`.

Not a special case: orderd takes the generic path (a Go package built by
faultline, ports by placeholder, health probes, scrape target), and this class
only configures it: its flags, ports, health paths, and the etcd client
certificate and endpoints.

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

from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from harness.backends.base import Backend, Placement, RestartPolicy, dial_address
from harness.components.etcd import EtcdCluster
from harness.components.service import Service
from harness.errors import ConfigError
from harness.gobuild import GO_TARGETS_DIR
from harness.run import Run

__all__ = ["BUGS", "OrderService"]

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


class OrderService(Service):
    """One orderd process: a :class:`Service` configured for orderd (its package, ports,
    flags, health paths); see the module docstring."""

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
        self.etcd = etcd
        # Where orderd dials etcd; default the members themselves. A scenario puts
        # Toxiproxy listeners here to add latency between orderd and etcd (TLS passes
        # through the proxy untouched; orderd then verifies the members' certificates
        # for "localhost", which every member's carries, not for the proxy's name).
        self.etcd_endpoints = list(etcd_endpoints) if etcd_endpoints is not None else None
        if self.etcd_endpoints is not None and etcd is None:
            raise ConfigError("etcd_endpoints", "given without the etcd cluster", expected="etcd=")
        self.bugs = dict(bugs or {})
        self.health_timeout_s = health_timeout_s
        super().__init__(
            backend,
            run,
            name=name,
            go_package=GO_TARGETS_DIR / "cmd" / "orderd",
            race=race,
            args=[
                "--http-addr={addr:http}",
                "--grpc-addr={addr:grpc}",
                "--admin-addr={addr:admin}",
                f"--health-timeout={health_timeout_s}s",
                *(f"--bug={bug}={intensity}" for bug, intensity in self.bugs.items()),
            ],
            ports=["http", "grpc", "admin"],
            memory_limit=memory_limit,
            cpu_limit=cpu_limit,
            restart=restart,
            health="/readyz",  # includes etcd
            liveness="/healthz" if liveness else False,
            pprof_port="http",
            start_timeout=start_timeout,
        )

    def start(self) -> Self:
        if self.etcd is not None and not self.files:
            # The cluster's client certificate exists once the cluster has started.
            tls = self.etcd.client_tls()
            self.files = dict(zip(_FILES, (tls.ca, tls.cert, tls.key), strict=True))
        return super().start()

    def extra_args(self, placement: Placement) -> list[str]:
        """orderd refuses non-loopback listeners unless told; and where etcd is."""
        args = []
        if placement.bind_host != "127.0.0.1":
            args.append("--allow-non-loopback")
        if self.etcd is not None:
            args += [
                f"--etcd-cacert={placement.path('ca.crt')}",
                f"--etcd-cert={placement.path('client.crt')}",
                f"--etcd-key={placement.path('client.key')}",
            ]
            if self.etcd_endpoints is None:
                args.append("--etcd-endpoints=" + ",".join(self.etcd.internal_endpoints()))
            else:
                proxied = [
                    u._replace(netloc=dial_address(self.backend, u.netloc)).geturl()
                    for u in map(urlsplit, self.etcd_endpoints)
                ]
                args += ["--etcd-endpoints=" + ",".join(proxied), "--etcd-server-name=localhost"]
        return args

    @property
    def admin_url(self) -> str:
        return self.url_of("admin")

    @property
    def grpc_address(self) -> str:
        return self.address("grpc")

    @property
    def metrics_address(self) -> str:
        return self.address("http")

    def bug_states(self) -> dict[str, Any]:
        resp = httpx.get(self.admin_url + "/bugs", timeout=5.0)
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
        resp = httpx.put(f"{self.admin_url}/bugs/{bug}", json=body, timeout=5.0)
        resp.raise_for_status()
