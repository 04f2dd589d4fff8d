"""A real TLS etcd cluster through LocalBackend: start, mTLS, leader changes, rejoin, cleanup."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cleanup
from harness.backends.base import Backend
from harness.components.etcd import EtcdCluster, EtcdMember
from harness.errors import ComponentStartError, ConfigError
from harness.etcd_client import EtcdClient, EtcdError
from harness.pki import CertKind, Pki
from harness.run import Run
from harness.wait import wait_for

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        shutil.which("etcd") is None,
        reason="etcd not installed: apt-get install -y etcd-server etcd-client",
    ),
]

# Election timeout 1 s: a new leader is expected within a few of them on a busy machine.
ELECTION = 15.0


def local_backend(run: Run) -> Backend:
    try:
        from harness.backends.local import LocalBackend
    except ImportError as err:
        pytest.skip(f"LocalBackend not importable yet ({err}): harness/backends/local.py")
    backend: Backend = LocalBackend(run)
    return backend


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("faultline-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAULTLINE_STATE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[EtcdCluster]:
    run = Run.open(state_dir, watchdog=False)
    backend = local_backend(run)
    try:
        with EtcdCluster(backend, run, Pki.create(run), size=3) as etcd:
            yield etcd
    finally:
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


def new_leader(etcd: EtcdCluster, old: EtcdMember) -> EtcdMember:
    def probe() -> EtcdMember | None:
        leader = etcd.leader()
        return leader if leader is not None and leader.name != old.name else None

    return wait_for(probe, timeout=ELECTION, interval=0.1, what="a new etcd leader")


def all_follow(etcd: EtcdCluster, leader: EtcdMember) -> None:
    """Every member, the one that came back included, names ``leader``."""

    def agreed() -> bool:
        statuses = etcd.statuses().values()
        return {s.leader_id if s else None for s in statuses} == {leader.member_id}

    wait_for(agreed, timeout=ELECTION, interval=0.2, what=f"all members following {leader.name}")


def test_put_get_txn_over_mutual_tls(cluster: EtcdCluster) -> None:
    c = cluster.client()
    rev = c.put("faultline/k", "v1")
    kv = c.get("faultline/k")
    assert kv is not None and kv.value == b"v1" and kv.mod_revision == rev
    assert c.txn("faultline/k", "v2", if_value="v1").succeeded
    assert not c.txn("faultline/k", "v3", if_value="v1").succeeded
    assert not c.txn("faultline/k", "v3", if_mod_revision=rev).succeeded  # moved on
    assert c.txn("faultline/new", "x", if_mod_revision=0).succeeded  # create-if-absent
    assert [kv.value for kv in c.get_prefix("faultline/")] == [b"v2", b"x"]
    assert c.delete("faultline/k") == 1
    assert c.get("faultline/k") is None
    members = c.member_list()
    assert {m.name for m in members} == set(cluster.member_names)
    # What etcd advertises is what other workloads are told to dial.
    advertised = {url for m in members for url in m.client_urls}
    assert advertised == set(cluster.internal_endpoints())


def test_clients_without_a_good_cert_are_refused(cluster: EtcdCluster) -> None:
    tls = cluster.client_tls()
    rogue = cluster.pki.untrusted("rogue-client", CertKind.CLIENT)
    expired = cluster.pki.expired("expired-client", CertKind.CLIENT)
    refused: list[tuple[Path, Path | None, Path | None]] = [
        (tls.ca, None, None),  # no client certificate at all
        (rogue.ca, rogue.cert, rogue.key),
        (expired.ca, expired.cert, expired.key),
    ]
    for ca, cert, key in refused:
        with (
            EtcdClient(cluster.endpoints(), ca, cert, key, timeout=2) as c,
            pytest.raises(EtcdError, match="bad certificate"),
        ):
            c.put("faultline/refused", "x")
    assert cluster.client().get("faultline/refused") is None


def test_leader_is_one_member_that_every_member_names(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    assert leader is not None and leader.name in cluster.member_names
    all_follow(cluster, leader)
    assert cluster.health() == dict.fromkeys(cluster.member_names, True)
    assert len({m.member_id for m in cluster.members()}) == 3


def test_killed_leader_is_replaced_and_rejoins_as_follower(cluster: EtcdCluster) -> None:
    old = cluster.leader()
    assert old is not None
    cluster.kill(old.name)
    new = new_leader(cluster, old)
    assert new.member_id != old.member_id
    assert cluster.client().put("faultline/after-kill", "ok") > 0  # quorum of two serves
    cluster.start_member(old.name)
    all_follow(cluster, new)


def test_paused_leader_is_replaced_and_follows_after_resume(cluster: EtcdCluster) -> None:
    old = cluster.leader()
    assert old is not None
    cluster.pause(old.name)
    try:
        new = new_leader(cluster, old)
    finally:
        cluster.resume(old.name)
    all_follow(cluster, new)
    assert cluster.leader() == new


def test_stopped_member_restarts_on_its_data(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    follower = next(m for m in cluster.members() if m.name != leader.name)
    cluster.stop(follower.name)
    assert cluster.health()[follower.name] is False
    rev = cluster.client().put("faultline/while-stopped", "v")
    cluster.start_member(follower.name)
    # It comes back from its own data dir (same member id) and catches up on the write.
    direct = cluster.client(follower.name)
    assert direct.status().member_id == follower.member_id
    kv = wait_for(
        lambda: direct.get("faultline/while-stopped"),
        timeout=ELECTION,
        what="the write replicated to the restarted member",
    )
    assert kv.mod_revision == rev


def test_start_member_restarts_a_running_member_so_it_rereads_its_files(
    cluster: EtcdCluster,
) -> None:
    leader = cluster.leader()
    assert leader is not None
    follower = next(m for m in cluster.members() if m.name != leader.name)
    before = cluster.backend.status(follower.name).restarts
    assert cluster.placement(follower.name).path("member.crt").endswith("member.crt")
    cluster.start_member(follower.name)
    assert cluster.backend.status(follower.name).restarts == before + 1
    assert cluster.client(follower.name).status().member_id == follower.member_id
    # Without --pre-vote a rejoining member may, rarely, trigger an election: any agreed
    # leader will do, as long as the restarted member follows it too.
    agreed = wait_for(cluster.leader, timeout=ELECTION, what="an agreed leader")
    all_follow(cluster, agreed)


def test_single_member_cluster_and_nothing_left_behind(state_dir: Path) -> None:
    run = Run.open(state_dir, watchdog=False)
    backend = local_backend(run)
    try:
        etcd = EtcdCluster(backend, run, Pki.create(run), size=1, name="solo")
        with etcd:
            (only,) = etcd.members()
            assert etcd.leader() == only
            assert etcd.client().put("k", "v") > 0
            data_dir = run.dir / "solo" / "solo-0"
            assert data_dir.is_dir()
            pids = cleanup.tagged_pids(run.run_id)
            assert pids
        etcd.stop()  # idempotent
    finally:
        backend.close()
    assert run.close() == []
    assert cleanup.tagged_pids(run.run_id) == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not run.dir.exists()


def test_readiness_timeout_carries_every_member_log_and_cleans_up(state_dir: Path) -> None:
    run = Run.open(state_dir, watchdog=False)
    backend = local_backend(run)
    try:
        etcd = EtcdCluster(
            backend, run, Pki.create(run), size=3, name="broken",
            extra_args=["--no-such-flag"], start_timeout=3,
        )  # fmt: skip
        with pytest.raises(ComponentStartError) as info, etcd:
            pytest.fail("a cluster whose members cannot start must not be ready")
        notes = "\n".join(info.value.__notes__)
        for m in etcd.member_names:
            assert f"--- {m} log tail ---" in notes
        assert "no-such-flag" in notes  # etcd's own complaint, from its log
        assert cleanup.tagged_pids(run.run_id) == []
    finally:
        backend.close()
    assert run.close() == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": 0}, "size"),
        ({"size": 2}, "size"),
        ({"size": 4}, "size"),
        ({"size": 7}, "size"),
        ({"election_timeout_ms": 400, "heartbeat_ms": 100}, "election_timeout_ms"),
        ({"heartbeat_ms": 0}, "heartbeat_ms"),
    ],
)
def test_bad_settings_are_refused_before_any_side_effect(
    state_dir: Path, kwargs: dict[str, int], field: str
) -> None:
    with Run.open(state_dir, watchdog=False) as run:
        backend = local_backend(run)
        pki = Pki.create(run)
        before = run.ledger.entries()
        with pytest.raises(ConfigError) as info:
            EtcdCluster(backend, run, pki, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
        assert run.ledger.entries() == before
        backend.close()
