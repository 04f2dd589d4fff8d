"""The Kubernetes API server on faultline's etcd: a TLS storm takes its quorum, kubectl fails.

Seed 000 ch.1, the customer impact: a TLS handshake storm drove the etcd nodes'
CPU to saturation, Raft heartbeats were late, "the API Server could not reach
a majority" and the controllers lost the API until etcd had its quorum back.
Here, on one machine:

- a real kube-apiserver (v1.34, built by ``faultline cluster``) stores its
  objects in a 3-member etcd cluster (mutual TLS on clients and peers;
  heartbeat 50 ms, election timeout 500 ms); a real Prometheus scrapes the
  members every second with the rules in fixtures/alerts/;
- what a user sees is probed twice a second: ``kubectl get namespaces`` and the
  API server's own ``/readyz/etcd``;
- after a baseline, both followers get a CFS quota of 0.03 core per 1 s period
  (the control: CPU pressure alone); then ``tlsstorm`` joins it on their
  **peer** ports for 12 s; then both are reverted.

Proven: under CPU pressure alone etcd keeps its quorum, kubectl and
``/readyz/etcd`` never fail and the etcd alerts stay quiet (no false positive);
with the storm the fault takes effect (etcd has no leader: quorum lost),
kubectl and ``/readyz/etcd`` fail within the budget and the quorum alerts fire;
after the revert both answer again within the recovery budget. The report
gives the time to lose and the time to regain each.
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
from harness.components.kube_apiserver import KubeApiServer
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.faults.base import Scope
from harness.faults.process import CpuThrottle
from harness.faults.storm import TlsStorm
from harness.observe.etcd import LeaderWatcher
from harness.observe.health import HealthWatcher
from harness.observe.prom import AlertWatcher
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Timeline

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(360)]

BASELINE_S = 8.0
CONTROL_S = 10.0
FAULT_S = 12.0
RECOVERY_MAX_S = 45.0
ELECTION_S = 0.5
HOLD_S = 5.0
SQUEEZE_CORES = 0.03  # per 1 s CFS period, on both followers, in the control and the fault
PROBES = ("kubectl", "apiserver.readyz-etcd")  # what a user of the API server sees
ETCD_ALERTS = ("EtcdNoLeader", "EtcdQuorumLost", "EtcdLeaderChanged")
BUDGET = Budget(
    max_ttd=20.0,
    max_ttr=30.0,
    must_fire=("EtcdNoLeader", "EtcdQuorumLost", "EtcdLeaderChanged"),
)


def test_tls_storm_on_the_followers_takes_the_quorum_and_the_api_server_with_it(
    make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        "kube-apiserver-quorum",
        title="TLS handshake storm on both etcd followers under CPU pressure: "
        "quorum lost, the Kubernetes API server with it",
        seed="seed 000 ch.1 (the API server could not reach a majority of etcd)",
        budget=BUDGET,
    )
    incident.key_series = [
        "kubectl.healthy",
        "apiserver.readyz-etcd.healthy",
        "etcd.leader",
        "storm.handshakes_per_s",
    ]
    tl = run.timeline
    with (
        EtcdCluster(
            backend, run, pki, size=3, heartbeat_ms=50, election_timeout_ms=int(ELECTION_S * 1000)
        ) as etcd,
        KubeApiServer(backend, run, pki, etcd=etcd) as api,
        Prometheus(
            backend, run, [ScrapeTarget.from_url("etcd", m.metrics_url) for m in etcd.members()]
        ) as prom,
    ):
        scope = Scope(run=run, backend=backend, cluster=etcd)
        squeeze = CpuThrottle(
            scope,
            "followers",
            cores=SQUEEZE_CORES,
            period_us=1_000_000,
            max_duration=CONTROL_S + FAULT_S + 30,
            name="cpu-squeeze",
        )
        storm = TlsStorm(
            scope,
            "followers",
            port="peer",
            rate=5000,
            concurrency=64,
            duration=FAULT_S,
            name="tls-storm",
        )
        with incident.observing(
            HealthWatcher(
                lambda _t: api.kubectl("get", "namespaces", "-o", "name").returncode == 0,
                tl,
                PROBES[0],
            ),
            HealthWatcher(lambda t: api.ready("etcd", timeout=max(t, 1.0)), tl, PROBES[1]),
            # Quorum lost: no leader for two election timeouts (an election takes one).
            LeaderWatcher(etcd.leader_name, tl, interval=0.25, min_leaderless=2 * ELECTION_S),
            AlertWatcher(prom.url, tl),
        ):
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            with squeeze:
                # The control: the same CPU pressure without the storm keeps the
                # quorum, and the API server serves throughout.
                with incident.phase("control"):
                    incident.hold(CONTROL_S)
                with incident.phase("fault"), storm:
                    incident.hold(FAULT_S)
            reverted = tl.now()
            with incident.phase("recovery"):
                incident.hold_until(
                    lambda: api.ready("etcd") and api.kubectl("get", "namespaces").returncode == 0,
                    timeout=RECOVERY_MAX_S,
                    what="kubectl get and /readyz/etcd answering",
                )
                # The API must stay back, not just touch the line: HOLD_S of probes
                # (one every ~0.6 s) after the first that succeeds.
                incident.hold(HOLD_S + 2.0)

    baseline = incident.window("baseline") or (0.0, 0.0)
    control = incident.window("control") or (0.0, 0.0)
    fault = incident.window("fault") or (0.0, 0.0)
    end = (incident.window("recovery") or (0.0, 0.0))[1]
    for probe in PROBES:
        incident.figure(
            f"{probe} succeeding (% of probes)",
            normal=_share_ok(tl, probe, baseline),
            worst=_share_ok(tl, probe, fault),
            recovered=_share_ok(tl, probe, (end - HOLD_S, end)),
        )
    quiet = (baseline[0], control[1])
    incident.check(
        _quorum_held(tl, quiet),
        *[_probe_never_failed(tl, p, quiet) for p in PROBES],
        *[alert_quiet(tl, a, quiet) for a in ETCD_ALERTS],
        fault_took_effect(tl, "etcd.quorum_lost", fault=storm.name, within=incident.budget.ttd),
        *[
            detected_within(
                tl, fault=storm.name, kind="health.failed", name=p, budget=incident.budget
            )
            for p in PROBES
        ],
        *[
            alert_fired_within(tl, a, fault=storm.name, budget=incident.budget)
            for a in incident.budget.must_fire
        ],
        *[
            recovered_within(
                tl.series(f"{p}.healthy"),
                after=reverted,
                ok=lambda v: v >= 1.0,
                hold=HOLD_S,
                budget=incident.budget,
                name=f"{p} succeeding",
            )
            for p in PROBES
        ],
    )
    incident.assert_passed()


def _in(tl: Timeline, kind: str, window: tuple[float, float], name: str | None = None) -> int:
    return len([e for e in tl.events(kind, name) if window[0] <= e.t <= window[1]])


def _share_ok(tl: Timeline, probe: str, window: tuple[float, float]) -> float | None:
    """Percent of ``probe``'s polls in ``window`` that succeeded."""
    samples = [s.value for s in tl.series(f"{probe}.healthy") if window[0] <= s.t <= window[1]]
    return round(100.0 * sum(samples) / len(samples), 1) if samples else None


def _quorum_held(tl: Timeline, window: tuple[float, float]) -> CheckResult:
    """The control: no quorum loss and no leader change before the storm."""
    lost = _in(tl, "etcd.quorum_lost", window)
    changed = _in(tl, "etcd.leader_changed", window)
    return CheckResult(
        "control:quorum_held_under_cpu_pressure_alone",
        Status.PASSED if lost == changed == 0 else Status.FAILED,
        f"{lost} quorum loss(es), {changed} leader change(s) in {window[1] - window[0]:.0f}s "
        "of baseline and CPU pressure without the storm",
        {"quorum_losses": float(lost), "leader_changes": float(changed)},
    )


def _probe_never_failed(tl: Timeline, probe: str, window: tuple[float, float]) -> CheckResult:
    """The control: every probe of ``probe`` succeeded before the storm."""
    samples = [s.value for s in tl.series(f"{probe}.healthy") if window[0] <= s.t <= window[1]]
    failed = samples.count(0.0)
    status = Status.UNKNOWN if not samples else Status.PASSED if failed == 0 else Status.FAILED
    return CheckResult(
        f"control:{probe}_never_failed",
        status,
        f"{failed} of {len(samples)} {probe} probes failed before the storm",
        {"probes": float(len(samples)), "failed": float(failed)},
    )
