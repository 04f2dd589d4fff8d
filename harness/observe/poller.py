"""A background thread that calls ``poll()`` every ``interval`` seconds until stopped."""

from __future__ import annotations

import abc
import logging
import threading
from types import TracebackType
from typing import Self

__all__ = ["Poller"]

log = logging.getLogger(__name__)


class Poller(abc.ABC):
    """Base of the observers: ``start()``/``stop()`` or ``with``; ``poll()`` does one round.

    A failing poll is logged and the next one runs: an observer must outlive a
    target that is down, which is what the scenario is about.
    """

    interval: float = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def poll(self) -> None:
        """One round of observation."""

    def start(self) -> Self:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name=type(self).__name__, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - keep observing whatever happens
                log.debug("%s poll failed: %r", type(self).__name__, err)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
