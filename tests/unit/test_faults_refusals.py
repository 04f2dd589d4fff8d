"""The allowlist (R6): every unsafe or unknown target is refused before anything is
touched, with a specific error and an empty ledger."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cleanup
from harness.components.toxiproxy import Proxy
from harness.errors import ConfigError, UnsafeTargetError
from harness.faults import (
    BugSwitch,
    CpuThrottle,
    Down,
    Fault,
    Latency,
    MemoryLimit,
    Partition,
    ProcessKill,
    ProcessPause,
    Restart,
    Scope,
    Timeout,
    TlsStorm,
)
from harness.run import Run


def outside_name() -> str:
    """A DNS name resolving outside loopback (a package registry this machine reaches)."""
    for name in ("pypi.org", "proxy.golang.org", "deb.debian.org"):
        try:
            socket.getaddrinfo(name, None)
            return name
        except OSError:
            continue
    return "pypi.org"  # unresolvable here: refused all the same ("cannot resolve")


OUTSIDE = outside_name()


@dataclass(frozen=True)
class Member:
    name: str


class Cluster:
    """Selectors only read members() and leader()."""

    def members(self) -> list[Member]:
        return [Member("etcd-0"), Member("etcd-1"), Member("etcd-2")]

    def leader(self) -> Member:
        return Member("etcd-0")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run.open(tmp_path / "faultline-state", watchdog=False)
    yield r
    r.close()


@pytest.fixture
def foreign() -> Iterator[int]:
    """A process faultline did not start (no run tag)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def other_run(tmp_path: Path) -> Iterator[int]:
    """A process of a different run."""
    env = {**os.environ, "FAULTLINE_RUN_ID": "someone-else", "FAULTLINE_WORKLOAD": "w"}
    proc = subprocess.Popen(["sleep", "60"], env=env)
    yield proc.pid
    proc.kill()
    proc.wait()


def proxy(
    api: str = "http://127.0.0.1:8474", upstream: str = "127.0.0.1:2380", name: str = "faultline-p"
) -> Proxy:
    return Proxy(api=api, name=name, listen="127.0.0.1:1", upstream=upstream)


def refused(run: Run, fault: Fault, error: type[Exception], *words: str) -> None:
    with pytest.raises(error) as err:
        fault.inject()
    for w in words:
        assert w in str(err.value)
    assert run.ledger.entries() == [], "nothing may be recorded for a refused fault"
    assert not fault.injected


ADDRESSES = ["10.0.0.1", "8.8.8.8", "[2001:db8::1]", OUTSIDE]


@pytest.mark.parametrize("host", ADDRESSES)
def test_storm_outside_loopback(run: Run, host: str) -> None:
    storm = TlsStorm(Scope(run), f"{host}:443", rate=10, duration=1)
    refused(run, storm, UnsafeTargetError, "tls_storm.target")


@pytest.mark.parametrize("host", ["10.0.0.1", "8.8.8.8", OUTSIDE])
def test_proxy_upstream_outside_loopback(run: Run, host: str) -> None:
    fault = Latency(Scope(run), proxy(upstream=f"{host}:2380"), ms=100, max_duration=5)
    refused(run, fault, UnsafeTargetError, "latency.proxy.upstream")


def test_proxy_api_outside_loopback(run: Run) -> None:
    fault = Timeout(Scope(run), proxy(api="http://10.0.0.1:8474"), ms=0, max_duration=5)
    refused(run, fault, UnsafeTargetError, "timeout.proxy.api")


def test_a_proxy_faultline_did_not_make(run: Run) -> None:
    refused(
        run, Down(Scope(run), proxy(name="prod-db"), max_duration=5), UnsafeTargetError, "prod-db"
    )


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8081", "http://8.8.8.8", f"http://{OUTSIDE}:8081"]
)
def test_bug_switch_outside_loopback(run: Run, url: str) -> None:
    refused(
        run, BugSwitch(Scope(run), url, "map_race", max_duration=5), UnsafeTargetError, "admin_url"
    )


def test_bug_switch_needs_an_http_url(run: Run) -> None:
    refused(
        run,
        BugSwitch(Scope(run), "file:///etc/passwd", "x", max_duration=5),
        ConfigError,
        "admin_url",
    )


PROCESS_FAULTS: dict[str, Callable[[Scope, str], Fault]] = {
    "kill": lambda s, t: ProcessKill(s, t),
    "pause": lambda s, t: ProcessPause(s, t, seconds=5),
    "cpu": lambda s, t: CpuThrottle(s, t, cores=0.1, max_duration=5),
    "memory": lambda s, t: MemoryLimit(s, t, bytes=64 << 20, max_duration=5),
    "restart": lambda s, t: Restart(s, t),
    "partition": lambda s, t: Partition(s, t, from_=["etcd-1"], max_duration=5),
}


@pytest.mark.parametrize("kind", sorted(PROCESS_FAULTS))
def test_pid_1(run: Run, kind: str) -> None:
    refused(run, PROCESS_FAULTS[kind](Scope(run), "pid:1"), UnsafeTargetError, "pid 1")


@pytest.mark.parametrize("kind", ["kill", "pause", "memory"])
def test_a_foreign_process(run: Run, foreign: int, kind: str) -> None:
    refused(
        run,
        PROCESS_FAULTS[kind](Scope(run), f"pid:{foreign}"),
        UnsafeTargetError,
        "not started by faultline",
    )
    state = Path(f"/proc/{foreign}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state in ("R", "S"), "the foreign process must be untouched (alive, not stopped)"


def test_a_process_of_another_run(run: Run, other_run: int) -> None:
    refused(
        run,
        ProcessKill(Scope(run), f"pid:{other_run}", signal=signal.SIGKILL),
        UnsafeTargetError,
        "not started by faultline",
    )
    assert os.waitpid(other_run, os.WNOHANG) == (0, 0), "still alive"


@pytest.mark.parametrize("kind", sorted(PROCESS_FAULTS))
def test_unknown_selector(run: Run, kind: str) -> None:
    scope = Scope(run, cluster=Cluster())
    refused(run, PROCESS_FAULTS[kind](scope, "etcd-9"), ConfigError, "unknown selector 'etcd-9'")


def test_role_selector_without_a_cluster(run: Run) -> None:
    refused(run, ProcessPause(Scope(run), "leader", seconds=5), ConfigError, "needs a cluster")


def test_storm_selector_without_a_cluster(run: Run) -> None:
    storm = TlsStorm(Scope(run), "follower", rate=10, duration=1)
    refused(run, storm, ConfigError, "unknown selector 'follower'")


def test_partition_from_an_unknown_peer(run: Run) -> None:
    fault = Partition(Scope(run, cluster=Cluster()), "etcd-1", from_=["etcd-7"], max_duration=5)
    refused(run, fault, ConfigError, "partition.from_")


@pytest.mark.parametrize(
    "make",
    [
        lambda s: TlsStorm(s, "127.0.0.1:1", rate=0, duration=1),
        lambda s: TlsStorm(s, "127.0.0.1:1", rate=10, duration=601),
        lambda s: TlsStorm(s, "127.0.0.1:1", rate=10, duration=1, port="admin"),
        lambda s: TlsStorm(s, "127.0.0.1:1", rate=10, duration=1, tls="1.1"),
        lambda s: TlsStorm(s, "127.0.0.1:1", rate=10, duration=1, concurrency=0),
        lambda s: CpuThrottle(s, "x", cores=0, max_duration=5),
        lambda s: CpuThrottle(s, "x", cores=0.1, period_us=10, max_duration=5),
        lambda s: CpuThrottle(s, "x", cores=0.001, period_us=100_000, max_duration=5),
        lambda s: MemoryLimit(s, "x", bytes=1000, max_duration=5),
        lambda s: ProcessPause(s, "x", seconds=0),
        lambda s: ProcessKill(s, "x", signal=999),
        lambda s: Latency(s, proxy(), ms=0, max_duration=5),
        lambda s: Latency(s, proxy(), ms=10, jitter=20, max_duration=5),
        lambda s: Latency(s, proxy(), ms=10, direction="sideways", max_duration=5),
        lambda s: Timeout(s, proxy(), ms=-1, max_duration=5),
        lambda s: BugSwitch(s, "http://127.0.0.1:1", "x", intensity=-1, max_duration=5),
    ],
)
def test_bad_knobs_are_config_errors(run: Run, make: Callable[[Scope], Fault]) -> None:
    with pytest.raises(ConfigError):
        make(Scope(run))
    assert run.ledger.entries() == []


@pytest.mark.parametrize(
    "inverse",
    [
        {
            "op": "remove_toxiproxy_toxic",
            "api": "http://10.0.0.1:8474",
            "proxy": "faultline-p",
            "toxic": "faultline-t",
        },
        {
            "op": "remove_toxiproxy_toxic",
            "api": "http://127.0.0.1:8474",
            "proxy": "prod-db",
            "toxic": "faultline-t",
        },
        {
            "op": "remove_toxiproxy_toxic",
            "api": "http://127.0.0.1:8474",
            "proxy": "faultline-p",
            "toxic": "latency_downstream",
        },
        {"op": "enable_toxiproxy_proxy", "api": f"http://{OUTSIDE}:8474", "proxy": "faultline-p"},
        {"op": "enable_toxiproxy_proxy", "api": "http://127.0.0.1:8474", "proxy": "shared"},
        {"op": "disable_service_bug", "admin_url": "http://8.8.8.8:8081", "bug": "map_race"},
    ],
)
def test_fault_inverses_refuse_what_faultline_did_not_make(inverse: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="refusing"):
        cleanup.run_inverse(inverse)


@pytest.mark.parametrize(
    "inverse",
    [
        {
            "op": "remove_toxiproxy_toxic",
            "api": "http://127.0.0.1:1",
            "proxy": "faultline-p",
            "toxic": "faultline-t",
        },
        {"op": "enable_toxiproxy_proxy", "api": "http://127.0.0.1:1", "proxy": "faultline-p"},
        {"op": "disable_service_bug", "admin_url": "http://127.0.0.1:1", "bug": "map_race"},
        {"op": "resume_tagged", "run_id": "no-such-run", "workload": "w"},
        {"op": "nothing_to_undo", "reason": "a kill"},
    ],
)
def test_fault_inverses_are_idempotent_when_nothing_is_left(inverse: dict[str, str]) -> None:
    cleanup.run_inverse(inverse)  # nothing listens / nothing tagged: nothing to undo, no error
    cleanup.run_inverse(inverse)
