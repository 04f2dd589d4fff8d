"""R5: faultline touches only what it owns.

Sentinels made beforehand, none named as faultline names its things: an
iptables chain with a rule, hooked from INPUT; cgroups (cpu, memory, pids,
frozen freezer with a process inside, and cgroup2) with non-default values;
a network namespace; an untagged process and a process tagged with the id of
a run that does not exist; a running container without faultline labels
(when a Docker engine is up). A victim harness run (all faults injected) is
SIGKILLed without its watchdog and ``faultline clean`` reaps it; every
sentinel must then read back byte for byte as before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cleanup
from tests.reliability.conftest import Victim, clean_cli, leftovers, require_local

CG = Path("/sys/fs/cgroup")
# (controller dir, files compared, values written first)
_CGROUP_FILES: dict[str, tuple[list[str], dict[str, str]]] = {
    "cpu": (["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares", "cgroup.procs"],
            {"cpu.cfs_quota_us": "30000"}),
    "memory": (["memory.limit_in_bytes", "cgroup.procs"], {"memory.limit_in_bytes": "268435456"}),
    "pids": (["pids.max", "cgroup.procs"], {"pids.max": "77"}),
    "freezer": (["freezer.state", "cgroup.procs"], {}),
    "unified": (["cgroup.procs", "cgroup.freeze"], {}),
}  # fmt: skip


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


class Sentinels:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.chain = f"sentinel-{tag}"
        self.netns = f"sentinel-{tag}"
        self.cgroups = {c: CG / c / f"sentinel-{tag}" for c in _CGROUP_FILES}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.container: object | None = None
        self.undo: list[Callable[[], object]] = []

    def make(self) -> None:
        _run("iptables", "-w", "-N", self.chain)
        self.undo.append(lambda: _run("iptables", "-w", "-X", self.chain))
        self.undo.append(lambda: _run("iptables", "-w", "-F", self.chain))
        _run("iptables", "-w", "-A", self.chain, "-s", "127.0.0.98/32", "-j", "RETURN")
        _run("iptables", "-w", "-A", "INPUT", "-s", "127.0.0.98/32", "-j", self.chain)
        self.undo.append(
            lambda: _run("iptables", "-w", "-D", "INPUT", "-s", "127.0.0.98/32", "-j", self.chain)
        )
        _run("ip", "netns", "add", self.netns)
        self.undo.append(lambda: _run("ip", "netns", "delete", self.netns))
        for ctl, path in self.cgroups.items():
            if not path.parent.is_dir():
                continue
            path.mkdir()
            self.undo.append(path.rmdir)
            for f, value in _CGROUP_FILES[ctl][1].items():
                (path / f).write_text(value)
        # An untagged process inside every sentinel cgroup, frozen by the freezer sentinel.
        plain = subprocess.Popen(["sleep", "600"])
        # A process tagged with a run id that has no run: no reaper may take it for one.
        fake = subprocess.Popen(
            ["sleep", "600"], env={**os.environ, cleanup.RUN_TAG: f"20000101-000000-{self.tag}"}
        )
        self.procs = [plain, fake]
        self.undo.append(self._kill_procs)
        for path in self.cgroups.values():
            if path.is_dir():
                (path / "cgroup.procs").write_text(str(plain.pid))
        if self.cgroups["freezer"].is_dir():
            (self.cgroups["freezer"] / "freezer.state").write_text("FROZEN")
        self._make_container()

    def _make_container(self) -> None:
        try:
            import docker

            client = docker.from_env(timeout=30)
            client.ping()
        except Exception:  # noqa: BLE001 - no engine: the container sentinel is skipped
            return
        from harness.backends.images import image_for_binary

        image = image_for_binary(client, "sleep")
        c = client.containers.run(image, ["sleep", "600"], name=f"sentinel-{self.tag}", detach=True)
        self.container = c
        self.undo.append(lambda: c.remove(force=True))
        self.undo.append(client.close)

    def _kill_procs(self) -> None:
        frozen = self.cgroups["freezer"]
        if frozen.is_dir():
            (frozen / "freezer.state").write_text("THAWED")
        for p in self.procs:
            p.kill()
            p.wait()

    def snapshot(self) -> dict[str, str]:
        snap = {
            "chain": _run("iptables", "-w", "-S", self.chain),
            # INPUT/OUTPUT less faultline's own jumps (other runs may come and go meanwhile).
            "hooks": "".join(
                line + "\n"
                for parent in ("INPUT", "OUTPUT")
                for line in _run("iptables", "-w", "-S", parent).splitlines()
                if "-j FL-" not in line
            ),
            "netns": "\n".join(
                sorted(n for n in _run("ip", "netns", "list").splitlines() if "faultline" not in n)
            ),
        }
        for ctl, path in self.cgroups.items():
            for f in _CGROUP_FILES[ctl][0] if path.is_dir() else []:
                with contextlib.suppress(FileNotFoundError):
                    snap[f"{ctl}/{f}"] = (path / f).read_text()
        for p in self.procs:
            snap[f"proc {p.pid}"] = Path(f"/proc/{p.pid}/stat").read_text().split()[2]
        if self.container is not None:
            c = self.container
            c.reload()  # type: ignore[attr-defined]
            attrs = c.attrs  # type: ignore[attr-defined]
            snap["container"] = repr(
                (attrs["Id"], attrs["State"], attrs["Config"]["Labels"], attrs["RestartCount"])
            )
        return snap

    def remove(self) -> None:
        for fn in reversed(self.undo):
            with contextlib.suppress(Exception):
                fn()


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    require_local()
    s = Sentinels(secrets.token_hex(3))
    try:
        s.make()
        yield s
    finally:
        s.remove()


@pytest.mark.timeout(120)
def test_r5_sentinels_are_byte_identical_after_a_run_and_clean(
    sentinels: Sentinels, tmp_path: Path, state_root: Path
) -> None:
    before = sentinels.snapshot()
    assert before["freezer/freezer.state"].strip() == "FROZEN"
    victim = Victim.run_script(tmp_path / "v", state_root, VICTIM_WATCHDOG="0", VICTIM_HOLD="30")
    victim.wait_stage("hold", timeout=60)
    victim.kill()
    rid = victim.run_id()
    assert rid is not None
    res = clean_cli(state_root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not leftovers(rid, state_root)
    after = sentinels.snapshot()
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, f"sentinels changed: {changed}"
    assert all(p.poll() is None for p in sentinels.procs)
    print(f"\nR5: {len(before)} sentinel readings identical (docker: {'container' in before})")


def test_r5_no_reaper_kills_a_process_tagged_for_a_run_without_a_ledger(
    sentinels: Sentinels, state_root: Path
) -> None:
    # clean reaps only runs it finds under the state root; a stray tag is not a licence.
    assert clean_cli(state_root).stdout.startswith("nothing to clean")
    assert sentinels.procs[1].poll() is None
