"""What every component shares: a testcontainers-style lifecycle.

The constructor has no side effects; :meth:`Component.start` blocks until the
component is ready; :meth:`Component.stop` is idempotent; used as a context
manager, a failed start is cleaned up before the error propagates, with the
component's log tail attached as an exception note.
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Component", "log_tail"]

log = logging.getLogger(__name__)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class Component(abc.ABC):
    """Base of EtcdCluster, GoService, Prometheus, Toxiproxy, LoadGenerator."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start and block until ready; raise ComponentStartError otherwise."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and release everything; safe to call twice or after a failed start."""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
