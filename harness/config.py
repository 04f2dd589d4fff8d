"""Settings resolved once per session: marker > CLI > environment > ini > default.

Every value remembers where it came from, so a bad one is reported with its
source (``--budget-scale``, ``FAULTLINE_BUDGET_SCALE``, ``ini faultline_budget_scale``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

__all__ = ["BACKENDS", "IMPLEMENTED_BACKENDS", "Settings", "parse_backend", "parse_budget_scale"]

BACKENDS = ("local", "docker", "kubernetes")
# Kubernetes is designed (backends/base.py) but not built yet.
IMPLEMENTED_BACKENDS = ("local", "docker")


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    report_dir: Path = Path("faultline-reports")
    budget_scale: float = 1.0
    keep_artifacts: bool = False


def parse_backend(value: str, source: str) -> str:
    if value not in BACKENDS:
        raise ConfigError(source, f"unknown backend {value!r}", expected=" | ".join(BACKENDS))
    return value


def parse_budget_scale(value: str | float, source: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        raise ConfigError(source, f"{value!r} is not a number", expected="a number >= 1") from None
    if not 1.0 <= scale <= 100.0:
        raise ConfigError(source, f"{scale} is out of range", expected="1 <= scale <= 100")
    return scale


def first_set(*candidates: tuple[str | None, str]) -> tuple[str, str] | None:
    """The first (value, source) whose value is set."""
    for value, source in candidates:
        if value not in (None, ""):
            assert value is not None
            return value, source
    return None


def env(name: str) -> tuple[str | None, str]:
    return os.environ.get(name), f"environment {name}"
