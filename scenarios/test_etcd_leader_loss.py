"""etcd leader loss: the leader is SIGKILLed, or frozen past the election timeout, under writes.

Seed 000 ch.1 (the quorum incident) begins with a leader that stops answering.
This is its simplest form: under bounded write traffic (20 puts/s through the
cluster's TLS client port) the leader of a 3-member TLS cluster is killed, or
frozen (freezer cgroup), for 8 s, then started again or thawed. A real
Prometheus scrapes every member each second with fixtures/alerts/etcd.yml.

Proven: the fault took effect (the leader changed), a new leader came within
the time-to-detect budget, ``EtcdMemberDown`` fired within it and was quiet on
the baseline, writes flowed again within the time-to-recover budget, and the
old leader rejoined as a follower.
"""

from __future__ import annotations

import pytest

from harness.backends.base import Backend
from harness.checks import (
    Budget,
    CheckResult,
    Status,
    alert_fired_within,
    alert_quiet,
    detected_within,
    fault_took_effect,
    recovered_within,
)
from harness.components.etcd import EtcdCluster
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.faults.base import Fault, Scope
from harness.faults.process import ProcessKill, ProcessPause
from harness.observe.etcd import LeaderWatcher
from harness.observe.prom import AlertWatcher
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.traffic import KvWriter

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(240)]

ELECTION_MS = 1000
WRITE_RATE = 20.0
FAULT_S = 8.0
BUDGET = Budget(max_ttd=6.0, max_ttr=8.0, must_fire=("EtcdMemberDown",))
QUIET_ON_BASELINE = ("EtcdMemberDown", "EtcdNoLeader", "EtcdInsufficientMembers")


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_leader_loss_elects_a_new_leader_and_writes_resume(
    how: str, make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        f"etcd-leader-loss-{how}",
        title=f"etcd leader {'SIGKILLed' if how == 'kill' else 'frozen'} for {FAULT_S:.0f}s"
        " under writes",
        seed="seed 000 ch.1 (leader stops answering; quorum must move)",
        budget=BUDGET,
    )
    incident.key_series = ["writes.ok", "writes.failed", "etcd.leader"]
    tl = run.timeline
    with (
        EtcdCluster(backend, run, pki, size=3, election_timeout_ms=ELECTION_MS) as cluster,
        Prometheus(
            backend,
            run,
            [ScrapeTarget.from_url("etcd", m.metrics_url) for m in cluster.members()],
        ) as prom,
    ):
        scope = Scope(run=run, backend=backend, cluster=cluster)
        fault: Fault = (
            ProcessKill(scope, "leader", max_duration=60, name="kill-leader")
            if how == "kill"
            else ProcessPause(scope, "leader", seconds=FAULT_S, name="pause-leader")
        )
        with incident.observing(
            KvWriter(cluster.client(timeout=1.0), tl, rate=WRITE_RATE, max_duration=120),
            LeaderWatcher(cluster.leader_name, tl, interval=0.2),
            AlertWatcher(prom.url, tl),
        ):
            with incident.phase("baseline"):
                incident.hold(5.0)
            old = cluster.leader_name()
            with incident.phase("fault"), fault:
                incident.hold(FAULT_S)
            with incident.phase("recovery"):
                healthy = incident.hold_until(
                    lambda: all(cluster.health().values()),
                    timeout=30,
                    what="every member healthy again",
                )
                incident.hold(5.0)  # writes observed after recovery, for the hold window
            new = cluster.leader_name()
    incident.figure_from_series("writes/s", "writes.ok", worst="min", tail=3.0)
    injected = tl.events("fault.injected", fault.name)[0].t
    baseline = incident.window("baseline") or (0.0, 0.0)
    incident.check(
        fault_took_effect(tl, "etcd.leader_changed", fault=fault.name, within=BUDGET.ttd),
        detected_within(tl, fault=fault.name, kind="etcd.leader_changed", budget=incident.budget),
        *[
            alert_fired_within(tl, a, fault=fault.name, budget=incident.budget)
            for a in incident.budget.must_fire
        ],
        *[alert_quiet(tl, a, baseline) for a in QUIET_ON_BASELINE],
        recovered_within(
            tl.series("writes.ok"),
            after=injected,
            ok=lambda ok: ok >= 0.5 * WRITE_RATE,
            hold=3.0,
            budget=incident.budget,
            name="writes/s >= half the offered rate",
        ),
        CheckResult(
            "old_leader_rejoined_as_follower",
            Status.PASSED if healthy is not None and new not in (None, old) else Status.FAILED,
            f"leader before {old}, after recovery {new}; "
            + ("all members healthy" if healthy is not None else "NOT all members healthy"),
            {"old_leader": old, "new_leader": new},
        ),
    )
    incident.assert_passed()
