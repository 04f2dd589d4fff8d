"""Shared machinery of the reliability suite (RELIABILITY.md, R1-R6 and R8-R12).

The suite treats the harness as a black box under hostile exits: victims
(``victims/victim_*.py``) are real harness runs in subprocesses that the tests
SIGKILL, interrupt or starve; what they leave is then looked for on the host
itself (``/proc``, cgroupfs, ``iptables -S``, the state root), never in the
harness's own bookkeeping. Every run uses a private state root under
``tmp_path``, so only this suite's runs are inspected or reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import cleanup
from harness.backends.cgroups import detect_layout
from harness.backends.local import chain_prefix
from harness.config import env_setting, parse_count
from harness.wait import wait_until

__all__ = [
    "VICTIMS",
    "Victim",
    "clean_audited",
    "clean_cli",
    "leftovers",
    "require_local",
]

VICTIMS = Path(__file__).parent / "victims"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def require_local() -> None:
    """Skip unless the local backend can do everything the victims use."""
    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups, freezer, iptables): run the suite as root")
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables: apt-get install -y iptables")
    layout = detect_layout()
    if layout.version == "none" or layout.v2_root is None:
        pytest.skip(
            "needs a cgroup2 hierarchy (iptables matches sockets by cgroup2 path): "
            "mount cgroup2 at /sys/fs/cgroup or /sys/fs/cgroup/unified"
        )


def env_int(name: str, default: int) -> int:
    """A campaign size from the environment (e.g. FAULTLINE_R1_ITERATIONS)."""
    return env_setting(name, parse_count, default)


# -- what a run can leave behind --------------------------------------------------------


def _cgroup_dirs(run_id: str) -> list[Path]:
    found = []
    for hierarchy in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()]:
        d = hierarchy / "faultline" / run_id
        if d.is_dir():
            found.append(d)
    return found


def _stopped(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def leftovers(run_id: str, root: Path) -> list[str]:
    """Everything of run ``run_id`` still on the host, as read from the host itself.

    Processes carrying the run's tag (workloads, storms, its watchdog; paused
    ones are marked), its cgroups in every hierarchy, its iptables chains and
    jumps, netns and containers named after it, its run directory and the
    port lock files it holds.
    """
    found = []
    for pid in cleanup.tagged_pids(run_id):
        wl = cleanup._environ(pid).get(cleanup.WORKLOAD_TAG, "?")
        found.append(f"process {pid} ({wl}{', STOPPED' if _stopped(pid) else ''})")
    found += [f"cgroup {d}" for d in _cgroup_dirs(run_id)]
    rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    found += [f"iptables {r}" for r in rules.splitlines() if chain_prefix(run_id) in r]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in netns.splitlines() if run_id in n]
    run_dir = root / "runs" / f"faultline-{run_id}"
    if run_dir.exists():
        found.append(f"run dir {run_dir}")
    ports = root / "ports"
    for lock in sorted(ports.glob("*.lock")) if ports.is_dir() else []:
        try:
            if lock.read_text().strip() == run_id:
                found.append(f"port lock {lock}")
        except FileNotFoundError:
            pass
    return found


def docker_leftovers(run_ids: list[str]) -> list[str]:
    """Containers, networks and volumes labelled with one of ``run_ids`` (none without engine)."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:  # noqa: BLE001 - no engine: nothing can be left there
        return []
    found = []
    try:
        for rid in run_ids:
            label = {"label": f"faultline.run={rid}"}
            found += [
                f"container {c.name}" for c in client.containers.list(all=True, filters=label)
            ]
            found += [f"network {n.name}" for n in client.networks.list(filters=label)]
            found += [f"volume {v.name}" for v in client.volumes.list(filters=label)]
    finally:
        client.close()
    return found


def wait_no_leftovers(run_id: str, root: Path, timeout: float) -> float:
    """Seconds until ``run_id`` left nothing; fails naming what is left after ``timeout``."""
    t0 = time.monotonic()
    try:
        wait_until(lambda: not leftovers(run_id, root), timeout=timeout, interval=0.1)
    except TimeoutError:
        pytest.fail(f"run {run_id} left after {timeout:.0f}s: {leftovers(run_id, root)}")
    return time.monotonic() - t0


# -- the CLI -------------------------------------------------------------------------------


def _faultline_cmd() -> list[str]:
    script = Path(sys.executable).parent / "faultline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]


def clean_cli(root: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``faultline clean`` (the console script) against the state root ``root``."""
    return subprocess.run(
        [*_faultline_cmd(), "clean"],
        env={**os.environ, "FAULTLINE_STATE_DIR": str(root)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Audit events that change something outside the process. "open" counts only
# when it can write (flags or mode), and never for bytecode caches.
_MUTATING = (
    "os.kill",
    "os.killpg",
    "os.remove",
    "os.rmdir",
    "os.rename",
    "os.mkdir",
    "os.chmod",
    "os.truncate",
    "shutil.rmtree",
    "shutil.copyfile",
    "subprocess.Popen",
)
_AUDIT = f"""
import os, sys
from harness.cli import main
MUTATING = {_MUTATING!r}
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def hook(event, args):
    if event == "open" and args:
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE)
        if writes and "__pycache__" not in str(path):
            print("AUDIT open", path, file=sys.stderr)
    elif event in MUTATING:
        print("AUDIT", event, repr(args)[:200], file=sys.stderr)
sys.addaudithook(hook)
sys.exit(main(["clean"]))
"""


def clean_audited(root: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``faultline clean`` (``harness.cli.main``) with every mutating syscall-level event logged.

    Returns the process and the audit lines: what the clean changed on the host.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _AUDIT],
        env={**os.environ, "FAULTLINE_STATE_DIR": str(root), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    audit = [line for line in proc.stderr.splitlines() if line.startswith("AUDIT")]
    return proc, audit


# -- victims ---------------------------------------------------------------------------------


@dataclass
class Victim:
    """A victim process (a harness run or a pytest session) and its progress file."""

    proc: subprocess.Popen[bytes]
    progress: Path
    out: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def spawn(cls, workdir: Path, root: Path, args: list[str], **env: str) -> Victim:
        workdir.mkdir(parents=True, exist_ok=True)
        progress = workdir / "progress.jsonl"
        out = workdir / "output.log"
        tmp = workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        full_env = {
            **os.environ,
            "FAULTLINE_STATE_DIR": str(root),
            "TMPDIR": str(tmp),
            "VICTIM_PROGRESS": str(progress),
            "PYTHONDONTWRITEBYTECODE": "1",
            **env,
        }
        with open(out, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, *args],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        return cls(proc, progress, out)

    @classmethod
    def run_script(cls, workdir: Path, root: Path, **env: str) -> Victim:
        return cls.spawn(workdir, root, [str(VICTIMS / "victim_run.py")], **env)

    @classmethod
    def pytest_session(
        cls, workdir: Path, root: Path, test: str, *extra: str, **env: str
    ) -> Victim:
        """``python -m pytest victims/FILE::TEST`` with the faultline plugin, as users run it."""
        path, _, name = test.partition("::")
        target = str(VICTIMS / path) + (f"::{name}" if name else "")
        args = ["-m", "pytest", target, "-p", "no:cacheprovider", "-q", "-s",
                "--confcutdir", str(VICTIMS), "--rootdir", str(VICTIMS),
                "-o", "timeout=120", *extra]  # fmt: skip
        return cls.spawn(workdir, root, args, **env)

    def stages(self) -> list[dict[str, Any]]:
        try:
            lines = self.progress.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by the kill
                out.append(json.loads(line))
        return out

    def last_stage(self) -> str:
        s = self.stages()
        return s[-1]["stage"] if s else "not started"

    def run_id(self) -> str | None:
        return next((s["run_id"] for s in self.stages() if "run_id" in s), None)

    def wait_stage(self, name: str, timeout: float = 60) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not any(s["stage"] == name for s in self.stages()):
                raise AssertionError(
                    f"victim exited with {self.proc.returncode} before {name!r}:\n{self.output()}"
                )
            return next((s for s in self.stages() if s["stage"] == name), None)

        t0 = time.monotonic()
        while True:
            got = seen()
            if got is not None:
                return got
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"victim never reached {name!r}:\n{self.output()}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


def run_ids_under(root: Path) -> list[str]:
    runs = root / "runs"
    return (
        sorted(d.name.removeprefix("faultline-") for d in runs.glob("faultline-*"))
        if runs.is_dir()
        else []
    )


def watchdog_pids(run_id: str) -> list[int]:
    return cleanup.tagged_pids(run_id, "watchdog")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state root for this test's runs (in-process and victims)."""
    root = tmp_path / "state"
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(root))
    yield root
    # Whatever a failed test left: reap it, so the next tests and engineers start clean.
    if any(True for _ in run_ids_under(root)):
        clean_cli(root)
