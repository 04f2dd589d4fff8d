"""Settings resolved once per session: marker > CLI > environment > ini > default.

Every value remembers where it came from, so a bad one is reported with its
source (``--budget-scale``, ``FAULTLINE_BUDGET_SCALE``, ``ini faultline_budget_scale``).

Every ``FAULTLINE_*`` environment variable faultline reads goes through
:func:`env_setting` where it is read: an unset or empty variable gives the
default, a bad value a :class:`ConfigError` naming the variable, expected vs
actual (the CLI exits 2, pytest stops with a usage error)::

    scale = env_setting("FAULTLINE_BUDGET_SCALE", parse_budget_scale, 1.0)
    state = env_setting("FAULTLINE_STATE_DIR", parse_abs_path, Path("/tmp/faultline"))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from harness.errors import ConfigError

__all__ = [
    "BACKENDS",
    "IMPLEMENTED_BACKENDS",
    "Settings",
    "env_setting",
    "parse_abs_path",
    "parse_backend",
    "parse_bool",
    "parse_budget_scale",
    "parse_count",
    "parse_dir",
]

T = TypeVar("T")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

BACKENDS = ("local", "docker", "kubernetes")
IMPLEMENTED_BACKENDS = ("local", "docker", "kubernetes")


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


def parse_bool(value: str, source: str) -> bool:
    low = value.strip().lower()
    if low not in _TRUE + _FALSE:
        raise ConfigError(source, repr(value), expected=" | ".join(_TRUE + _FALSE))
    return low in _TRUE


def parse_count(value: str, source: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(
            source, f"{value!r} is not a whole number", expected="an integer >= 1"
        ) from None
    if count < 1:
        raise ConfigError(source, f"{count} is out of range", expected="an integer >= 1")
    return count


def parse_abs_path(value: str, source: str) -> Path:
    # Relative paths would name different places for the run, its watchdog and `clean`.
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(source, f"{value!r} is a relative path", expected="an absolute path")
    return path


def parse_dir(value: str, source: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise ConfigError(source, f"{value!r} is not a directory", expected="an existing directory")
    return path


def env_setting(name: str, parse: Callable[[str, str], T], default: T) -> T:
    """Environment variable ``name`` parsed by ``parse(value, source)``; ``default`` when
    unset or empty. A bad value raises :class:`ConfigError` naming the variable."""
    value, source = env(name)
    if value is None or value == "":
        return default
    return parse(value, source)
