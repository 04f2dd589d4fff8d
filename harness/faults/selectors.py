"""Selectors: which workload(s) a fault hits, resolved at inject time.

``leader``, ``follower``, ``followers`` (every member but the leader),
``minority``, ``any`` need a cluster (an
``EtcdCluster``: ``members()`` and ``leader()``); a workload name must be a
member of that cluster or one of the scope's workloads; ``pid:N`` names the
workload of a process this run started (PID 1 and foreign processes are
refused). Anything else is a :class:`ConfigError` naming the selector.

>>> resolve("minority", cluster=etcd, field="partition.target")   # doctest: +SKIP
['etcd-1']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from harness import cleanup, safety
from harness.errors import ConfigError
from harness.faults.base import Cluster

__all__ = ["ROLE_SELECTORS", "member_name", "resolve"]

ROLE_SELECTORS = ("leader", "follower", "followers", "minority", "any")


def member_name(member: Any) -> str:
    """A cluster member's workload name (members are objects with ``name``, or names)."""
    if isinstance(member, str):
        return member
    name = getattr(member, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"cluster member {member!r} has no name")
    return name


def resolve(
    selector: str,
    *,
    field: str,
    cluster: Cluster | None = None,
    workloads: Sequence[str] = (),
    run_id: str | None = None,
    rng: random.Random | None = None,
) -> list[str]:
    """Workload names ``selector`` picks now; ConfigError/UnsafeTargetError otherwise."""
    rng = rng or random.Random()
    if not isinstance(selector, str) or not selector:
        raise ConfigError(field, f"{selector!r} is not a selector", expected=_expected())
    if selector.startswith("pid:"):
        return [_resolve_pid(selector, field=field, run_id=run_id)]
    members = sorted(member_name(m) for m in cluster.members()) if cluster is not None else []
    if selector in ROLE_SELECTORS:
        if cluster is None:
            raise ConfigError(
                field,
                f"selector {selector!r} needs a cluster",
                expected="a workload name when there is no cluster",
            )
        if not members:
            raise ConfigError(field, f"selector {selector!r}: the cluster has no members")
        leader = member_name(cluster.leader())
        followers = [m for m in members if m != leader]
        if selector == "leader":
            return [leader]
        if selector == "any":
            return [rng.choice(members)]
        if not followers:
            raise ConfigError(
                field,
                f"selector {selector!r}: a 1-member cluster has no followers",
                expected="a cluster of 3 or more members",
            )
        if selector == "follower":
            return [rng.choice(followers)]
        if selector == "followers":
            return followers  # without them the leader is a minority: quorum is theirs
        # A minority that keeps quorum: followers only, so the leader stays.
        size = (len(members) - 1) // 2
        return sorted(rng.sample(followers, size))
    if selector in members or selector in workloads:
        return [selector]
    raise ConfigError(
        field, f"unknown selector {selector!r}", expected=_expected(members, workloads)
    )


def _expected(members: Sequence[str] = (), workloads: Sequence[str] = ()) -> str:
    names = [*members, *workloads]
    roles = ", ".join(ROLE_SELECTORS)
    return f"one of {roles}, pid:N" + (f", or a workload: {', '.join(names)}" if names else "")


def _resolve_pid(selector: str, *, field: str, run_id: str | None) -> str:
    raw = selector.removeprefix("pid:")
    if not raw.isdigit():
        raise ConfigError(field, f"{selector!r} has no process id", expected="pid:N")
    if run_id is None:
        raise ConfigError(field, "pid selectors need the run", expected="a scope with a run")
    pid = safety.check_pid(int(raw), run_id, field=field)
    workload = cleanup._environ(pid).get(cleanup.WORKLOAD_TAG)
    if not workload:
        raise ConfigError(field, f"process {pid} carries no workload tag")
    return workload
