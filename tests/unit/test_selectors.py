"""Selector resolution against a cluster's roles (pure logic: the cluster is a plain object)."""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import ConfigError, UnsafeTargetError
from harness.faults.selectors import member_name, resolve
from harness.run import Run


@dataclass(frozen=True)
class Member:
    name: str


class Cluster:
    """Just the two methods selectors read: members() and leader()."""

    def __init__(self, size: int, leader: int = 0) -> None:
        self._members = [Member(f"etcd-{i}") for i in range(size)]
        self._leader = self._members[leader]

    def members(self) -> list[Member]:
        return self._members

    def leader(self) -> Member:
        return self._leader


def pick(selector: str, cluster: Cluster | None = None, **kw: object) -> list[str]:
    return resolve(selector, field="f.target", cluster=cluster, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def test_leader_follower_any() -> None:
    c = Cluster(3, leader=1)
    assert pick("leader", c) == ["etcd-1"]
    assert pick("follower", c)[0] in ("etcd-0", "etcd-2")
    assert pick("any", c)[0] in ("etcd-0", "etcd-1", "etcd-2")


@pytest.mark.parametrize(("size", "count"), [(3, 1), (5, 2)])
def test_minority_keeps_quorum_and_the_leader(size: int, count: int) -> None:
    c = Cluster(size, leader=0)
    picked = pick("minority", c)
    assert len(picked) == count
    assert "etcd-0" not in picked


@pytest.mark.parametrize("size", [3, 5])
def test_followers_are_every_member_but_the_leader(size: int) -> None:
    picked = pick("followers", Cluster(size, leader=1))
    assert picked == [f"etcd-{i}" for i in range(size) if i != 1]


def test_a_one_member_cluster_has_no_follower() -> None:
    with pytest.raises(ConfigError, match="no followers"):
        pick("follower", Cluster(1))


def test_names_of_members_and_workloads() -> None:
    assert pick("etcd-2", Cluster(3)) == ["etcd-2"]
    assert pick("orderd", None, workloads=["orderd"]) == ["orderd"]
    assert member_name("x") == "x"


@pytest.mark.parametrize("selector", ["leaderr", "etcd-9", "", "majority"])
def test_unknown_selector_is_named(selector: str) -> None:
    with pytest.raises(ConfigError) as err:
        pick(selector, Cluster(3), workloads=["orderd"])
    assert "f.target" in str(err.value)
    assert repr(selector) in str(err.value)


def test_role_selector_without_cluster() -> None:
    with pytest.raises(ConfigError, match="needs a cluster"):
        pick("leader", None)


def test_pid_selectors(tmp_path: Path) -> None:
    run = Run.open(tmp_path, watchdog=False)
    try:
        with pytest.raises(UnsafeTargetError, match="never a valid target"):
            pick("pid:1", run_id=run.run_id)
        with pytest.raises(UnsafeTargetError, match="not started by faultline"):
            pick(f"pid:{os.getpid()}", run_id=run.run_id)
        with pytest.raises(ConfigError, match="pid:N"):
            pick("pid:abc", run_id=run.run_id)
        proc = subprocess.Popen(["sleep", "30"], env={**os.environ, **run.child_env("napper")})
        try:
            assert pick(f"pid:{proc.pid}", run_id=run.run_id) == ["napper"]
        finally:
            proc.kill()
            proc.wait()
    finally:
        assert run.close() == []
