"""Inverse operations: what undoes each kind of mutation faultline makes.

Every inverse is a plain function of JSON arguments, so any process can run
it: the harness, the watchdog, ``faultline clean``. Each is idempotent (what
is already gone is fine) and refuses to touch anything faultline did not
create: paths must carry ``faultline`` in their name, processes must carry the
run's tag in their environment, chains and namespaces must carry the prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "INVERSES",
    "IPTABLES_PREFIX",
    "NETNS_PREFIX",
    "RUN_TAG",
    "WORKLOAD_TAG",
    "inverse",
    "run_inverse",
    "tagged_pids",
]

log = logging.getLogger(__name__)

RUN_TAG = "FAULTLINE_RUN_ID"
WORKLOAD_TAG = "FAULTLINE_WORKLOAD"
IPTABLES_PREFIX = "FL-"
NETNS_PREFIX = "faultline-"

Inverse = Callable[..., None]
INVERSES: dict[str, Inverse] = {}


def inverse(fn: Inverse) -> Inverse:
    """Register ``fn`` as an inverse op under its own name."""
    INVERSES[fn.__name__] = fn
    return fn


def run_inverse(inverse: dict[str, Any]) -> None:
    args = dict(inverse)
    op = args.pop("op")
    try:
        fn = INVERSES[op]
    except KeyError:
        raise ValueError(f"unknown inverse op {op!r}") from None
    fn(**args)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def tagged_pids(run_id: str, workload: str | None = None) -> list[int]:
    """Processes whose environment carries this run's tag (and workload's)."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, me):
            continue
        env = _environ(int(entry.name))
        if env.get(RUN_TAG) != run_id:
            continue
        if workload is not None and env.get(WORKLOAD_TAG) != workload:
            continue
        out.append(int(entry.name))
    return out


def _thaw_own_freezers(pid: int) -> None:
    # A task in a frozen v1 freezer cgroup cannot die until thawed.
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "faultline" not in path:
            continue
        if "freezer" in controllers.split(","):
            with contextlib.suppress(OSError):
                Path(f"/sys/fs/cgroup/freezer{path}/freezer.state").write_text("THAWED")
        elif controllers == "":
            with contextlib.suppress(OSError):
                Path(f"/sys/fs/cgroup{path}/cgroup.freeze").write_text("0")


@inverse
def kill_tagged(run_id: str, workload: str | None = None, timeout: float = 5.0) -> None:
    """SIGKILL every process carrying the run's (and workload's) tag; wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        pids = tagged_pids(run_id, workload)
        if not pids:
            return
        for pid in pids:
            _thaw_own_freezers(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            # Reap it if it is our child, so it does not linger as a zombie.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of run {run_id} still alive: {pids}")
        time.sleep(0.05)


@inverse
def signal_tagged(run_id: str, workload: str, signum: int) -> None:
    """Send a signal (e.g. SIGCONT to undo a pause) to a workload's processes."""
    for pid in tagged_pids(run_id, workload):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _require_owned(path: str) -> Path:
    p = Path(path)
    if "faultline" not in p.as_posix():
        raise ValueError(f"refusing to touch {path}: not created by faultline")
    return p


@inverse
def remove_cgroup(paths: list[str]) -> None:
    """Kill what is left inside faultline's cgroups, thaw them, and rmdir them (leaf first)."""
    for path in sorted(paths, key=len, reverse=True):
        p = _require_owned(path)
        if not p.exists():
            continue
        for freeze, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            with contextlib.suppress(OSError):
                (p / freeze).write_text(value)
        for _ in range(100):
            try:
                procs = [int(x) for x in (p / "cgroup.procs").read_text().split()]
            except OSError:
                procs = []
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                p.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cgroup {p} could not be removed")


@inverse
def write_file(path: str, value: str) -> None:
    """Restore a value (a cgroup limit) in a file faultline owns."""
    p = _require_owned(path)
    with contextlib.suppress(FileNotFoundError):
        p.write_text(value)


@inverse
def copy_file(src: str, dst: str) -> None:
    """Put a saved file back (a certificate swapped by a fault)."""
    s, d = _require_owned(src), _require_owned(dst)
    if s.exists():
        shutil.copy2(s, d)


@inverse
def remove_tree(path: str) -> None:
    """Remove a directory faultline made (a run directory, a temp dir)."""
    shutil.rmtree(_require_owned(path), ignore_errors=True)


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


@inverse
def remove_iptables_chain(chain: str, parents: list[str], table: str = "filter") -> None:
    """Unhook faultline's chain from its parents, flush it and delete it."""
    if not chain.startswith(IPTABLES_PREFIX):
        raise ValueError(f"refusing to touch iptables chain {chain}: not faultline's")
    for parent in parents:
        # Delete every jump to our chain; -D fails once none is left.
        while _iptables("-t", table, "-D", parent, "-j", chain).returncode == 0:
            pass
    if _iptables("-t", table, "-L", chain, "-n").returncode != 0:
        return
    _iptables("-t", table, "-F", chain)
    res = _iptables("-t", table, "-X", chain)
    if res.returncode != 0:
        raise RuntimeError(f"iptables -X {chain}: {res.stderr.strip()}")


@inverse
def remove_netns(name: str) -> None:
    if not name.startswith(NETNS_PREFIX):
        raise ValueError(f"refusing to touch netns {name}: not faultline's")
    if Path(f"/run/netns/{name}").exists():
        res = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if res.returncode != 0 and Path(f"/run/netns/{name}").exists():
            raise RuntimeError(f"ip netns delete {name}: {res.stderr.strip()}")


@inverse
def remove_docker_labeled(run_id: str) -> None:
    """Remove containers, networks and volumes labelled with this run's id."""
    try:
        import docker  # imported here: the docker SDK is only needed for docker runs
        from docker.errors import DockerException, NotFound
    except ImportError:
        return
    try:
        client = docker.from_env(timeout=30)
    except DockerException:
        return  # no engine: nothing of ours can be running there
    label = f"faultline.run={run_id}"
    with client:
        for c in client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(NotFound):
                c.remove(force=True, v=True)
        for n in client.networks.list(filters={"label": label}):
            with contextlib.suppress(NotFound):
                n.remove()
        for v in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(NotFound):
                v.remove(force=True)
