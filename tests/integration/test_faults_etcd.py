"""Faults on a real 3-member TLS etcd cluster (LocalBackend), targets chosen by selector;
each effect measured on the cluster (leader change, member unreachable, handshake
rejected, handshake rate reached) and each revert checked on the real state."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from harness import cleanup
from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.components.etcd import EtcdCluster
from harness.components.toxiproxy import Toxiproxy, toxiproxy_binary
from harness.errors import MissingDependency
from harness.faults import (
    CertFault,
    Latency,
    Partition,
    ProcessKill,
    ProcessPause,
    Scope,
    TlsStorm,
)
from harness.faults.storm import SERIES
from harness.gobuild import build
from harness.pki import Pki
from harness.run import Run, clean_runs
from harness.wait import wait_for, wait_until
from tests.integration.conftest import spawn_harness, wait_reaped

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        shutil.which("etcd") is None,
        reason="etcd not installed: apt-get install -y etcd-server etcd-client",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="partitions and freezing need root"),
]

ELECTION = 20.0  # seconds allowed for a new leader on a busy 2-core machine


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[tuple[Run, LocalBackend, EtcdCluster]]:
    run = Run.open(state_dir, watchdog=False)
    backend = LocalBackend(run)
    try:
        with EtcdCluster(backend, run, Pki.create(run), size=3) as etcd:
            yield run, backend, etcd
    finally:
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


@pytest.fixture
def scope(cluster: tuple[Run, LocalBackend, EtcdCluster]) -> Iterator[Scope]:
    run, backend, etcd = cluster
    healthy(etcd)
    yield Scope(run, backend, cluster=etcd)
    healthy(etcd)  # every fault leaves the cluster as it found it


def healthy(etcd: EtcdCluster) -> None:
    wait_until(
        lambda: etcd.leader() is not None and all(etcd.health().values()),
        timeout=ELECTION,
        what="a healthy cluster with a leader",
    )


def new_leader(etcd: EtcdCluster, old: str) -> str:
    """Wait until a member other than ``old`` says it leads; return it."""

    def probe() -> str | None:
        for name, s in etcd.statuses().items():
            if name != old and s is not None and s.leader_id == s.member_id != 0:
                return name
        return None

    return wait_for(probe, timeout=ELECTION, what=f"a leader other than {old}")


def test_kill_the_leader(scope: Scope) -> None:
    etcd = scope.cluster
    assert isinstance(etcd, EtcdCluster)
    with ProcessKill(scope, "leader") as fault:
        (old,) = fault.targets
        assert new_leader(etcd, old) != old
    assert scope.backend is not None and scope.backend.status(old).running


def test_partition_the_leader(scope: Scope) -> None:
    etcd = scope.cluster
    assert isinstance(etcd, EtcdCluster)
    with Partition(scope, "leader", from_="peers", max_duration=60) as fault:
        (old,) = fault.targets
        chain = fault._chains[0]
        assert subprocess.run(["iptables", "-w", "-S", chain], capture_output=True).returncode == 0
        assert new_leader(etcd, old) != old
    assert subprocess.run(["iptables", "-w", "-S", chain], capture_output=True).returncode != 0


def test_pause_a_follower_makes_it_unreachable(scope: Scope) -> None:
    etcd = scope.cluster
    assert isinstance(etcd, EtcdCluster)
    with ProcessPause(scope, "follower", seconds=30) as fault:
        (paused,) = fault.targets
        wait_until(lambda: etcd.statuses()[paused] is None, timeout=10, what="no answer")
    wait_until(lambda: etcd.statuses()[paused] is not None, timeout=10, what="answers again")


def handshake(etcd: EtcdCluster, member: str) -> None:
    """A verified mutual-TLS handshake with the member's peer port (served from the start,
    while the client port waits until the member has joined)."""
    tls = etcd.client_tls()
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    url = urlsplit(etcd.member(member).peer_url)
    assert url.hostname is not None and url.port is not None
    with (
        socket.create_connection((url.hostname, url.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=url.hostname),
    ):
        pass


@pytest.mark.parametrize("kind", ["expired", "untrusted", "wrong_san"])
def test_a_broken_certificate_is_rejected_then_restored(scope: Scope, kind: str) -> None:
    etcd = scope.cluster
    assert isinstance(etcd, EtcdCluster)
    with CertFault(scope, "follower", kind=kind, which="peer", max_duration=60) as fault:
        (member,) = fault.targets

        def rejected() -> ssl.SSLCertVerificationError | None:
            try:
                handshake(etcd, member)  # refused connections: restarting, not yet
            except ssl.SSLCertVerificationError as err:
                return err
            return None

        err = wait_for(rejected, timeout=ELECTION, what=f"{member} presenting the {kind} cert")
        # expired, unknown issuer, hostname or IP address mismatch
        assert err.verify_code in (10, 20, 62, 64)
    handshake(etcd, member)


def test_tls_storm_on_the_leaders_peer_port(scope: Scope) -> None:
    try:
        storm = TlsStorm(scope, "leader", port="peer", rate=200, concurrency=8, duration=3)
        with storm:
            summary = storm.wait(timeout=30)
    except MissingDependency as err:
        pytest.skip(f"tlsstorm cannot be built: {err.fix}")
    assert summary["handshakes_per_s"] >= 100  # half the asked rate, on a busy machine
    assert storm.detail["handshakes_per_s"] == summary["handshakes_per_s"]
    assert len(scope.run.timeline.series(SERIES)) >= 2
    assert cleanup.tagged_pids(scope.run.run_id, storm.workload) == []


CHILD = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from harness.backends.local import LocalBackend
    from harness.components.etcd import EtcdCluster
    from harness.faults import CertFault, Scope
    from harness.pki import Pki
    from harness.run import Run

    max_duration = float(sys.argv[1])
    run = Run.open()
    backend = LocalBackend(run)
    try:
        etcd = EtcdCluster(backend, run, Pki.create(run), size=1).start()
        fault = CertFault(Scope(run, backend, cluster=etcd), "etcd-0", kind="expired",
                          max_duration=max_duration)
        live = str(etcd._placements["etcd-0"].path("member.crt"))
        good = hashlib.sha256(open(live, "rb").read()).hexdigest()
        with fault:
            print(json.dumps({"run_id": run.run_id, "run_dir": str(run.dir), "live": live,
                              "good": good}), flush=True)
            time.sleep(60)
    finally:
        print(json.dumps({"restored": hashlib.sha256(open(live, "rb").read()).hexdigest()
                          == good}), flush=True)
        backend.close()
        print(json.dumps({"left": run.close()}), flush=True)
    """
)


def sha(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def start_child(
    state_dir: Path, max_duration: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    child, info = spawn_harness(CHILD, str(max_duration), state_dir=state_dir)
    assert sha(info["live"]) != info["good"]
    return child, info


def test_sigint_restores_the_certificate(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=60)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    lines = [json.loads(x) for x in out.splitlines()]
    assert {"restored": True} in lines
    assert {"left": []} in lines
    assert cleanup.tagged_pids(info["run_id"]) == []


def test_a_hung_harness_has_the_certificate_restored_at_the_deadline(state_dir: Path) -> None:
    child, info = start_child(state_dir, max_duration=2)
    try:
        child.send_signal(signal.SIGSTOP)
        wait_until(lambda: sha(info["live"]) == info["good"], timeout=2 + 15, what="restore")
        assert cleanup.tagged_pids(info["run_id"], "etcd-0") != [], "the member lives on"
    finally:
        child.kill()
        child.wait()
    wait_reaped(info, timeout=15, what="watchdog reaping")
    assert clean_runs(state_dir / "children") == []


def test_latency_between_orderd_and_etcd_through_toxiproxy(
    cluster: tuple[Run, LocalBackend, EtcdCluster], scope: Scope
) -> None:
    run, backend, etcd = cluster
    try:
        orderd = str(build("orderd"))
        toxiproxy_binary()
    except MissingDependency as err:
        pytest.skip(f"orderd or toxiproxy-server unavailable: {err.fix}")
    leader = etcd.leader()
    assert leader is not None
    with Toxiproxy(backend, run, name="toxiproxy-etcd") as tp:
        proxy = tp.proxy("orderd-etcd", urlsplit(leader.client_url).netloc)
        tls = etcd.client_tls()
        p = backend.plan("orderd", ["http", "grpc", "admin"])
        args = [f"--{port}-addr=127.0.0.1:{p.port(port)}" for port in ("http", "grpc", "admin")]
        args += [
            f"--etcd-endpoints=https://{proxy.listen}",
            f"--etcd-cacert={tls.ca}",
            f"--etcd-cert={tls.cert}",
            f"--etcd-key={tls.key}",
            "--etcd-timeout=5s",
        ]
        readiness = Probe(ProbeKind.HTTP, "http", path="/readyz", interval=0.05)
        backend.start(WorkloadSpec("orderd", (orderd, *args), p, readiness=readiness))
        try:
            backend.wait_ready("orderd", timeout=20)

            def set_stock() -> float:
                start = time.monotonic()
                resp = httpx.put(
                    p.external_url("admin", path="/stock/sku-1"), json={"qty": 5}, timeout=10
                )
                resp.raise_for_status()
                return time.monotonic() - start

            assert set_stock() < 0.3
            with Latency(scope, proxy, ms=300, max_duration=30):
                assert set_stock() >= 0.3  # orderd's write to etcd went through the toxic
            assert set_stock() < 0.3
        finally:
            backend.stop("orderd")
