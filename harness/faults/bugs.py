"""Switch an injectable bug of a faultline Go target on, and off again.

The target (orderd, deadlockd...) serves ``GET /bugs`` and ``PUT /bugs/{name}``
on its admin address, which must be loopback. Inject switches the bug on at
``intensity``; revert (or the ledger inverse ``disable_service_bug``) switches
it off; the revert is verified with ``GET /bugs``.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness import safety
from harness.errors import ConfigError, FaultError
from harness.faults.base import Fault, Scope

__all__ = ["BugSwitch"]


class BugSwitch(Fault):
    """``BugSwitch(scope, "http://127.0.0.1:8081", "map_race", intensity=1, max_duration=30)``."""

    kind = "bug_switch"

    def __init__(
        self,
        scope: Scope,
        admin_url: str,
        bug: str,
        *,
        intensity: float | None = None,
        max_duration: float,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, max_duration=max_duration, name=name or f"bug:{bug}")
        if intensity is not None and (
            isinstance(intensity, bool)
            or not isinstance(intensity, int | float)
            or not 0 <= intensity < float("inf")
        ):
            raise ConfigError(f"{self.name}.intensity", f"{intensity!r}", expected="a number >= 0")
        self.admin_url = admin_url.rstrip("/")
        self.bug = bug
        self.intensity = intensity

    def knobs(self) -> dict[str, Any]:
        return {"bug": self.bug, "intensity": self.intensity, "admin_url": self.admin_url}

    def bugs(self) -> dict[str, Any]:
        """The target's switches now, as ``GET /bugs`` returns them."""
        resp = httpx.get(f"{self.admin_url}/bugs", timeout=5)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def _prepare(self) -> None:
        url = httpx.URL(self.admin_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"{self.name}.admin_url", f"{self.admin_url!r}", expected="http://127.0.0.1:PORT"
            )
        safety.check_host(url.host, field=f"{self.name}.admin_url")
        try:
            known = self.bugs()
        except httpx.HTTPError as err:
            raise FaultError(f"{self.name}: GET {self.admin_url}/bugs: {err}") from err
        if self.bug not in known:
            raise ConfigError(
                f"{self.name}.bug",
                f"unknown bug {self.bug!r}",
                expected=f"one of {', '.join(sorted(known))}",
            )
        self.targets = [f"{self.admin_url}#{self.bug}"]

    def _apply(self) -> None:
        inverse = {"op": "disable_service_bug", "admin_url": self.admin_url, "bug": self.bug}
        self._step(f"switch on {self.bug}", inverse, self._switch_on)

    def _switch_on(self) -> None:
        body: dict[str, Any] = {"enabled": True}
        if self.intensity is not None:
            body["intensity"] = self.intensity
        resp = httpx.put(f"{self.admin_url}/bugs/{self.bug}", json=body, timeout=5)
        if resp.status_code != 200:
            raise FaultError(
                f"{self.name}: PUT /bugs/{self.bug}: HTTP {resp.status_code} {resp.text.strip()}"
            )
        self.detail["state"] = resp.json().get(self.bug)

    def _leftovers(self) -> list[str]:
        try:
            state = self.bugs().get(self.bug, {})
        except httpx.HTTPError:
            return []  # the service is gone, and its bug with it
        return [f"bug {self.bug} still enabled"] if state.get("enabled") else []
