"""Network faults as Toxiproxy toxics on a proxy of the run (see components/toxiproxy.py).

Each adds one toxic named ``faultline-<kind>-<hex>`` (ledger inverse
``remove_toxiproxy_toxic``); :class:`Down` disables the proxy instead (inverse
``enable_toxiproxy_proxy``). Reverts are verified by reading the proxy back
from the Toxiproxy API.
"""

from __future__ import annotations

import abc
import secrets
from typing import Any, ClassVar

import httpx

from harness import safety
from harness.components.toxiproxy import Proxy
from harness.errors import ConfigError, FaultError, UnsafeTargetError
from harness.faults.base import Fault, Scope, check_positive

__all__ = ["Bandwidth", "Down", "Latency", "ResetPeer", "Timeout", "ToxicFault"]

_DIRECTIONS = ("downstream", "upstream")


class _ProxyFault(Fault):
    def __init__(
        self, scope: Scope, proxy: Proxy, *, max_duration: float, name: str | None = None
    ) -> None:
        super().__init__(scope, max_duration=max_duration, name=name)
        self.proxy = proxy

    def _prepare(self) -> None:
        field = f"{self.name}.proxy"
        # The API and the upstream must both be ours: loopback (or an own address).
        safety.check_host(httpx.URL(self.proxy.api).host, field=f"{field}.api")
        safety.check_hostport(self.proxy.upstream, field=f"{field}.upstream")
        if not self.proxy.name.startswith("faultline"):
            raise UnsafeTargetError(field, f"proxy {self.proxy.name!r} was not made by faultline")
        self.targets = [self.proxy.name]


class ToxicFault(_ProxyFault):
    """One toxic on ``proxy``; subclasses give its type and attributes."""

    toxic_type: ClassVar[str]

    def __init__(
        self,
        scope: Scope,
        proxy: Proxy,
        *,
        max_duration: float,
        direction: str = "downstream",
        name: str | None = None,
    ) -> None:
        super().__init__(scope, proxy, max_duration=max_duration, name=name)
        if direction not in _DIRECTIONS:
            raise ConfigError(
                f"{self.name}.direction", f"{direction!r}", expected=" or ".join(_DIRECTIONS)
            )
        self.direction = direction
        self.toxic = f"faultline-{self.kind}-{secrets.token_hex(3)}"

    @abc.abstractmethod
    def attributes(self) -> dict[str, int]:
        """The toxic's attributes as Toxiproxy names them."""

    def knobs(self) -> dict[str, Any]:
        return {"direction": self.direction, **self.attributes()}

    def _apply(self) -> None:
        inverse = {
            "op": "remove_toxiproxy_toxic",
            "api": self.proxy.api,
            "proxy": self.proxy.name,
            "toxic": self.toxic,
        }
        self._step(f"toxic {self.toxic} on {self.proxy.name}", inverse, self._add)

    def _add(self) -> None:
        resp = httpx.post(
            f"{self.proxy.api}/proxies/{self.proxy.name}/toxics",
            json={
                "name": self.toxic,
                "type": self.toxic_type,
                "stream": self.direction,
                "toxicity": 1.0,
                "attributes": self.attributes(),
            },
            timeout=5,
        )
        if resp.status_code != 200:
            raise FaultError(
                f"{self.name}: toxiproxy refused the toxic: HTTP "
                f"{resp.status_code} {resp.text.strip()}"
            )

    def _leftovers(self) -> list[str]:
        try:
            names = self.proxy.toxic_names()
        except httpx.HTTPError:
            return []  # the proxy server is gone, and its toxics with it
        return [f"toxic {self.toxic} on {self.proxy.name}"] if self.toxic in names else []


class Latency(ToxicFault):
    """Adds ``ms`` (+- ``jitter``) to every chunk of data through the proxy."""

    kind = "latency"
    toxic_type = "latency"

    def __init__(
        self,
        scope: Scope,
        proxy: Proxy,
        *,
        ms: int,
        jitter: int = 0,
        max_duration: float,
        direction: str = "downstream",
        name: str | None = None,
    ) -> None:
        super().__init__(scope, proxy, max_duration=max_duration, direction=direction, name=name)
        self.ms = int(check_positive(f"{self.name}.ms", ms, upper=60_000))
        if jitter < 0 or jitter > self.ms:
            raise ConfigError(f"{self.name}.jitter", f"{jitter!r}", expected=f"0..{self.ms}")
        self.jitter = int(jitter)

    def attributes(self) -> dict[str, int]:
        return {"latency": self.ms, "jitter": self.jitter}


class Bandwidth(ToxicFault):
    """Limits the proxy to ``kbps`` kilobytes per second."""

    kind = "bandwidth"
    toxic_type = "bandwidth"

    def __init__(
        self,
        scope: Scope,
        proxy: Proxy,
        *,
        kbps: int,
        max_duration: float,
        direction: str = "downstream",
        name: str | None = None,
    ) -> None:
        super().__init__(scope, proxy, max_duration=max_duration, direction=direction, name=name)
        self.kbps = int(check_positive(f"{self.name}.kbps", kbps, upper=10_000_000))

    def attributes(self) -> dict[str, int]:
        return {"rate": self.kbps}


class Timeout(ToxicFault):
    """Stops all data and closes the connection after ``ms`` (never, with ``ms=0``)."""

    kind = "timeout"
    toxic_type = "timeout"

    def __init__(
        self,
        scope: Scope,
        proxy: Proxy,
        *,
        ms: int,
        max_duration: float,
        direction: str = "downstream",
        name: str | None = None,
    ) -> None:
        super().__init__(scope, proxy, max_duration=max_duration, direction=direction, name=name)
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 600_000:
            raise ConfigError(f"{self.name}.ms", f"{ms!r}", expected="0..600000 (0: hold forever)")
        self.ms = ms

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.ms}


class ResetPeer(ToxicFault):
    """Closes each connection with a TCP RST after ``ms``."""

    kind = "reset_peer"
    toxic_type = "reset_peer"

    def __init__(
        self,
        scope: Scope,
        proxy: Proxy,
        *,
        ms: int = 0,
        max_duration: float,
        direction: str = "downstream",
        name: str | None = None,
    ) -> None:
        super().__init__(scope, proxy, max_duration=max_duration, direction=direction, name=name)
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 600_000:
            raise ConfigError(f"{self.name}.ms", f"{ms!r}", expected="0..600000")
        self.ms = ms

    def attributes(self) -> dict[str, int]:
        return {"timeout": self.ms}


class Down(_ProxyFault):
    """Takes the proxy down: existing connections close, new ones are refused."""

    kind = "down"

    def knobs(self) -> dict[str, Any]:
        return {}

    def _apply(self) -> None:
        inverse = {"op": "enable_toxiproxy_proxy", "api": self.proxy.api, "proxy": self.proxy.name}
        self._step(f"disable {self.proxy.name}", inverse, self._disable)

    def _disable(self) -> None:
        resp = httpx.post(
            f"{self.proxy.api}/proxies/{self.proxy.name}", json={"enabled": False}, timeout=5
        )
        if resp.status_code != 200:
            raise FaultError(f"{self.name}: disabling {self.proxy.name}: HTTP {resp.status_code}")

    def _leftovers(self) -> list[str]:
        try:
            enabled = bool(self.proxy.state()["enabled"])
        except httpx.HTTPError:
            return []
        return [] if enabled else [f"proxy {self.proxy.name} disabled"]
