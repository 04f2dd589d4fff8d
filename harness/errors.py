"""Errors by who is to blame, all under one :class:`HarnessError`.

The CLI and the pytest plugin map them to outcomes: a :class:`ConfigError`
(bad input: the user's to fix) exits 2 and names the field; a
:class:`BackendUnavailable` becomes a skip whose reason says how to get the
missing piece; everything else is a failure of the run.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ComponentStartError",
    "ConfigError",
    "FaultError",
    "HarnessError",
    "MissingDependency",
    "RevertError",
    "UnsafeTargetError",
]


class HarnessError(Exception):
    """Base of every error faultline raises on purpose."""


class ConfigError(HarnessError):
    """Bad input: a malformed scenario, an unknown fault, a bad option value.

    ``field`` names where the bad value came from (``"--backend"``,
    ``"scenario.faults[0].rate"``, ``"ini: faultline_budget_scale"``).
    """

    def __init__(self, field: str, problem: str, *, expected: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.expected = expected
        text = f"{field}: {problem}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class UnsafeTargetError(ConfigError):
    """A target outside what faultline may touch (non-loopback, foreign process...)."""


class BackendUnavailable(HarnessError):
    """Something this backend needs is absent; ``fix`` says how to get it."""

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} is not available: {fix}")


class MissingDependency(BackendUnavailable):
    """A binary or package is missing; ``fix`` is the command that installs it."""


class ComponentStartError(HarnessError):
    """A component did not become ready; notes carry its log tail."""


class FaultError(HarnessError):
    """A fault could not be injected."""


class RevertError(FaultError):
    """A fault could not be reverted: ``leftover`` names what is still in place."""

    def __init__(self, message: str, leftover: str) -> None:
        self.leftover = leftover
        super().__init__(f"{message}; still in place: {leftover}")
