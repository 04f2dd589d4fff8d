"""Wait strategies: poll a condition with a timeout instead of sleeping blindly.

>>> wait_until(lambda: port_open("127.0.0.1", 2379), timeout=10, what="etcd client port")
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Hopeless", "WaitTimeout", "port_open", "wait_for", "wait_until"]

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A condition did not hold in time; the message names it and its last error."""


class Hopeless(Exception):
    """Raised by a probe when waiting longer cannot help (the process exited): it
    ends the wait at once and propagates, where any other exception means "not yet"."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something other than None/False; return it.

    Exceptions raised by the probe count as "not yet" (but :class:`Hopeless`, which
    propagates at once); the last one is named in the :class:`WaitTimeout` raised
    when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except Hopeless:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = err
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f": last error: {last_error!r}" if last_error else ""
            raise WaitTimeout(f"{what} not reached within {timeout:.1f}s{detail}")
        time.sleep(interval)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Like :func:`wait_for` for a boolean condition."""
    wait_for(lambda: condition() or None, timeout=timeout, interval=interval, what=what)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
