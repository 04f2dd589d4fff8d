"""The allowlist checked before any mutation: where load and faults may go.

Targets may be loopback (127.0.0.0/8, ::1), or an address faultline itself
made for this run (a namespace's veth, a container it started) registered with
:func:`allow_owned_address`. Processes may be touched only when they carry the
run's tag. Everything else is refused with :class:`UnsafeTargetError` before
anything is changed.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

from harness import cleanup
from harness.errors import UnsafeTargetError

__all__ = [
    "allow_owned_address",
    "check_host",
    "check_hostport",
    "check_pid",
    "forget_owned_addresses",
]

_owned: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
_owned_lock = threading.Lock()


def allow_owned_address(address: str) -> None:
    """Register an address faultline created (own netns or container) as a target."""
    with _owned_lock:
        _owned.add(ipaddress.ip_address(address))


def forget_owned_addresses() -> None:
    with _owned_lock:
        _owned.clear()


def _resolve(host: str, field: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    host = host.strip("[]")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as err:
        raise UnsafeTargetError(field, f"cannot resolve {host!r}: {err}") from err
    return [ipaddress.ip_address(str(info[4][0])) for info in infos]


def check_host(host: str, *, field: str = "target") -> str:
    """Return ``host`` if every address it resolves to is allowed, else refuse."""
    for addr in _resolve(host, field):
        if addr.is_loopback:
            continue
        with _owned_lock:
            if addr in _owned:
                continue
        raise UnsafeTargetError(
            field,
            f"{host!r} resolves to {addr}, outside what faultline may target",
            expected="127.0.0.0/8, ::1, or an address of a namespace or container this run created",
        )
    return host


def check_hostport(target: str, *, field: str = "target") -> tuple[str, int]:
    """Split and check ``host:port`` (``[::1]:port`` for IPv6)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UnsafeTargetError(field, f"{target!r} is not host:port", expected="host:port")
    return check_host(host, field=field), int(port)


def check_pid(pid: int, run_id: str, *, field: str = "target") -> int:
    """Refuse PID 1, and any process that does not carry this run's tag."""
    if pid <= 1:
        raise UnsafeTargetError(field, f"pid {pid} is never a valid target")
    if pid not in cleanup.tagged_pids(run_id):
        raise UnsafeTargetError(field, f"pid {pid} was not started by faultline run {run_id}")
    return pid
