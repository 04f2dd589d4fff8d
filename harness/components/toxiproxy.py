"""The real Toxiproxy server as a workload of the run, and proxies made through its API.

Toxiproxy (github.com/Shopify/toxiproxy) is a TCP proxy whose "toxics" add
latency, cut bandwidth, hold or reset connections. Faultline starts
``toxiproxy-server`` through the backend (so it is tagged, logged and reaped
like any workload), and creates proxies on 127.0.0.1 only; a scenario points
an etcd peer or orderd at :attr:`Proxy.listen` instead of the real upstream.
Toxics themselves are faults: see :mod:`harness.faults.network`.

>>> with Toxiproxy(backend, run) as tp:                          # doctest: +SKIP
...     proxy = tp.proxy("etcd0-peer", upstream="127.0.0.1:2380")
...     proxy.listen                  # '127.0.0.1:41234'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx

from harness import gobuild, safety
from harness.backends.base import (
    Backend,
    Placement,
    Probe,
    ProbeKind,
    WorkloadSpec,
    dial_address,
)
from harness.components.base import Component, log_tail
from harness.errors import ComponentStartError, ConfigError
from harness.run import Run

__all__ = ["TOXIPROXY_VERSION", "Proxy", "Toxiproxy", "toxiproxy_binary"]

log = logging.getLogger(__name__)

TOXIPROXY_VERSION = "v2.12.0"
_BINARY = "toxiproxy-server"
_PACKAGE = "github.com/Shopify/toxiproxy/v2/cmd/server"


def toxiproxy_binary(*, build: bool = True) -> str:
    """Path of ``toxiproxy-server``: PATH, then the faultline bin cache.

    When absent and ``build`` is set, ``go install`` builds the pinned version
    into the cache (about a minute, once); MissingDependency when it cannot.
    """
    return str(gobuild.go_install(_PACKAGE, TOXIPROXY_VERSION, _BINARY, build=build))


@dataclass(frozen=True)
class Proxy:
    """One proxy: clients connect to ``listen`` and reach ``upstream`` through the toxics."""

    api: str  # the server's API base URL, on 127.0.0.1
    name: str  # always starts with "faultline" (the inverses refuse anything else)
    listen: str  # host:port the harness reaches
    upstream: str

    @property
    def listen_hostport(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host, int(port)

    def state(self) -> dict[str, Any]:
        """The proxy as the server sees it now (``enabled``, ``toxics``...)."""
        resp = httpx.get(f"{self.api}/proxies/{self.name}", timeout=5)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def toxic_names(self) -> list[str]:
        return [str(t["name"]) for t in self.state().get("toxics", [])]


class Toxiproxy(Component):
    """``toxiproxy-server`` run by ``backend`` with its API on 127.0.0.1.

    ``ports`` names extra ports to reserve for proxy listeners (needed where a
    backend must publish them, e.g. docker); without one, a proxy listens on
    an ephemeral 127.0.0.1 port (local backend).
    """

    def __init__(
        self, backend: Backend, run: Run, *, name: str = "toxiproxy", ports: Sequence[str] = ()
    ) -> None:
        self.backend = backend
        self.run = run
        self.name = name
        self.ports = tuple(ports)
        self._placement: Placement | None = None
        self._started = False

    @property
    def api(self) -> str:
        if self._placement is None:
            raise RuntimeError("Toxiproxy is not started")
        return self._placement.external_url("api")

    def start(self) -> Self:
        binary = toxiproxy_binary()
        placement = self.backend.plan(self.name, ["api", *self.ports])
        self._placement = placement
        spec = WorkloadSpec(
            name=self.name,
            command=(binary, "-host", placement.bind_host, "-port", str(placement.port("api"))),
            placement=placement,
            env=self.run.child_env(self.name),
            readiness=Probe(ProbeKind.HTTP, "api", path="/version", interval=0.1),
        )
        self._started = True
        self.backend.start(spec)
        try:
            self.backend.wait_ready(self.name, timeout=15)
        except ComponentStartError as err:
            err.add_note(log_tail(self.backend.log_path(self.name)))
            raise
        log.info("toxiproxy %s ready at %s", self.name, self.api)
        return self

    def proxy(self, name: str, upstream: str, *, port: str | None = None) -> Proxy:
        """Create proxy ``faultline-<name>`` to ``upstream`` (loopback or own address)."""
        safety.check_hostport(upstream, field=f"toxiproxy.proxy({name}).upstream")
        if self._placement is None:
            raise RuntimeError("Toxiproxy is not started")
        if port is not None and port not in self.ports:
            raise ConfigError(
                f"toxiproxy.proxy({name}).port",
                f"{port!r} was not reserved",
                expected=f"one of {', '.join(self.ports) or '(none)'}",
            )
        full = name if name.startswith("faultline") else f"faultline-{name}"
        bind_port = self._placement.port(port) if port is not None else 0
        resp = httpx.post(
            f"{self.api}/proxies",
            json={
                "name": full,
                "listen": f"{self._placement.bind_host}:{bind_port}",
                # Toxiproxy dials it: in a container, the upstream's run-network address.
                "upstream": dial_address(self.backend, upstream),
                "enabled": True,
            },
            timeout=5,
        )
        if resp.status_code != 201:
            raise ComponentStartError(
                f"toxiproxy: creating proxy {full}: HTTP {resp.status_code} {resp.text.strip()}"
            )
        listen = str(resp.json()["listen"])
        if port is not None:
            host, ext = self._placement.external(port)
            listen = f"{host}:{ext}"
        return Proxy(api=self.api, name=full, listen=listen, upstream=upstream)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.backend.stop(self.name)
