"""etcd cert takeover: a follower with a bad peer cert cannot take over; leader loss loses quorum.

Seed 000 ch.1: leadership moved off an overloaded etcd member, "but the new
leader rejected the takeover on certificate verification": the cluster could
not settle and API servers lost their majority. Here, on one machine:

- a 3-member etcd cluster (mutual TLS on clients and peers, election timeout
  1 s) takes 20 puts/s through its TLS client port; a real Prometheus scrapes
  every member each second with fixtures/alerts/ (incl. etcd_tls.yml);
- after a baseline, one follower's peer certificate is swapped for a broken
  one (``untrusted``: signed by another CA; ``expired``) and the member is
  restarted on it: the control window. Its peers refuse its handshakes, it is
  cut off, and the other two keep quorum;
- then the leader is SIGKILLed: the only candidates left are the good
  follower and the cut-off one, so no majority can form;
- mitigation: the good certificate is put back (the member restarts on it),
  then the old leader is started again.

Proven: the certificate was broken in the stated way (the peers' logs reject
it with "certificate signed by unknown authority" / "certificate has expired",
and the member itself is told "bad certificate"); the cut-off member was seen
(no peer links to it, ``EtcdNoLeader`` on that member only) while the cluster
kept its leader and its writes, with ``EtcdQuorumLost`` and
``EtcdInsufficientMembers`` quiet (no false positive); with the leader gone,
the cluster had no leader and writes stopped, and ``EtcdQuorumLost`` and
``EtcdNoLeader`` fired within the detection budget; after the certificate was
restored writes flowed and ``EtcdQuorumLost`` resolved within the recovery
budget, and all three members were healthy once the old leader was back.
``EtcdInsufficientMembers`` (scrape-based) never fires here: every member but
the killed one still answers scrapes. The report carries the seed-style table:
members following a leader, live peer links and writes/s, normal / control /
worst / recovered.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Mapping
from pathlib import Path

import pytest

from harness.backends.base import Backend
from harness.checks import (
    Budget,
    CheckResult,
    Status,
    alert_fired_within,
    alert_quiet,
    fault_took_effect,
    recovered_within,
)
from harness.components.etcd import EtcdCluster
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.etcd_client import EtcdClient
from harness.faults.base import Scope
from harness.faults.cert import CertFault
from harness.faults.process import ProcessKill
from harness.observe.etcd import LeaderWatcher
from harness.observe.poller import Poller
from harness.observe.prom import AlertWatcher, SeriesSampler
from harness.pki import Pki
from harness.run import Run
from harness.scenario import Incident, MakeIncident
from harness.timeline import Event, Timeline
from harness.traffic import KvWriter
from harness.wait import wait_for

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(240)]

log = logging.getLogger(__name__)

ELECTION_MS = 1000
WRITE_RATE = 20.0
BASELINE_S = 4.0
CONTROL_S = 7.0
FAULT_S = 7.0
RECOVERY_MAX_S = 30.0
BUDGET = Budget(max_ttd=10.0, max_ttr=15.0, must_fire=("EtcdQuorumLost", "EtcdNoLeader"))
QUIET_THROUGH_CONTROL = ("EtcdQuorumLost", "EtcdInsufficientMembers")
# What the peers' TLS stack says about each kind of broken certificate (Go's x509 errors).
STATED = {
    "untrusted": "certificate signed by unknown authority",
    "expired": "certificate has expired",
}
# What the holder of the broken certificate is told by the peers that refuse it.
REFUSED = "tls: bad certificate"
DETECTOR = "peer_tls_rejected"
SERIES = {
    "etcd.members_with_leader": 'sum(etcd_server_has_leader{job="etcd"})',
    "etcd.peer_links_up": 'sum(etcd_network_active_peers{job="etcd"})',
    "etcd.peer_send_failures_per_s": (
        'sum(rate(etcd_network_peer_sent_failures_total{job="etcd"}[5s]))'
    ),
}


class PeerTlsRejections(Poller):
    """Tail etcd's JSON logs for TLS failures; one ``detector.hit`` ``peer_tls_rejected``
    per member and distinct reason (detail: ``workload``, ``error``), with counts kept."""

    def __init__(
        self, timeline: Timeline, logs: Mapping[str, Path], *, interval: float = 0.2
    ) -> None:
        super().__init__()
        self.timeline = timeline
        self.logs = dict(logs)
        self.interval = interval
        self.counts: dict[str, int] = dict.fromkeys(self.logs, 0)
        self._offsets = dict.fromkeys(self.logs, 0)
        self._partial = dict.fromkeys(self.logs, "")
        self._seen: set[tuple[str, str]] = set()

    def stop(self) -> None:
        super().stop()
        self.poll()  # what was logged just before stop counts too

    def poll(self) -> None:
        now = self.timeline.now()
        for member, path in self.logs.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < self._offsets[member]:  # truncated by a restart: read it again
                self._offsets[member], self._partial[member] = 0, ""
            with path.open("rb") as fh:
                fh.seek(self._offsets[member])
                chunk = fh.read()
            self._offsets[member] += len(chunk)
            *lines, self._partial[member] = (
                self._partial[member] + chunk.decode(errors="replace")
            ).split("\n")
            for line in lines:
                error = _tls_error(line)
                if error is None:
                    continue
                self.counts[member] += 1
                # Go's expiry message carries the current time: one reason, many texts.
                reason = error.split(": current time", 1)[0]
                if (member, reason) not in self._seen:
                    self._seen.add((member, reason))
                    self.timeline.event(
                        "detector.hit", DETECTOR, at=now, workload=member, error=reason
                    )
                    log.info("TLS failure in %s log: %s", member, reason)


def _tls_error(line: str) -> str | None:
    """The ``error`` of an etcd zap JSON log line if it is a TLS/x509 failure."""
    if '"error"' not in line:
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    error = entry.get("error") if isinstance(entry, dict) else None
    if isinstance(error, str) and ("x509:" in error or "tls:" in error):
        return error
    return None


@pytest.mark.parametrize("kind", ["untrusted", "expired"])
def test_bad_peer_cert_on_a_follower_turns_leader_loss_into_quorum_loss(
    kind: str, make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        f"etcd-cert-takeover-{kind}",
        title=f"a follower with an {kind} peer certificate cannot take over from a lost leader",
        seed="seed 000 ch.1 (the new leader rejected the takeover on certificate verification)",
        budget=BUDGET,
    )
    incident.key_series = [
        "writes.ok",
        "writes.failed",
        "etcd.members_with_leader",
        "etcd.peer_links_up",
        "etcd.leader",
    ]
    tl = run.timeline
    with (
        EtcdCluster(backend, run, pki, size=3, election_timeout_ms=ELECTION_MS) as cluster,
        Prometheus(
            backend,
            run,
            [
                ScrapeTarget.from_url("etcd", m.metrics_url, labels={"member": m.name})
                for m in cluster.members()
            ],
        ) as prom,
    ):
        scope = Scope(run=run, backend=backend, cluster=cluster)
        # The broken certificate goes to a follower picked now, so the writer can be told.
        leader = wait_for(cluster.leader_name, timeout=10, what="an etcd leader")
        bad = scope.rng.choice(sorted(m for m in cluster.member_names if m != leader))
        bad_cert = CertFault(
            scope,
            bad,
            kind=kind,
            which="peer",
            max_duration=CONTROL_S + FAULT_S + RECOVERY_MAX_S + 60,
            name=f"{kind}-peer-cert",
        )
        kill = ProcessKill(
            scope, "leader", max_duration=FAULT_S + RECOVERY_MAX_S + 60, name="kill-leader"
        )
        tls_log = PeerTlsRejections(tl, {m: cluster.log_path(m) for m in cluster.member_names})
        # The writer fails over like clientv3's balancer would: the cut-off member last.
        # (EtcdClient tries its endpoints in order on every call, and a TLS handshake with
        # the cut-off member can wait out the whole timeout: first in line, it would
        # throttle the writer to ~1 put/s while the cluster itself writes fine.)
        order = [m for m in cluster.member_names if m != bad] + [bad]
        tls = cluster.client_tls()
        with (
            EtcdClient(
                [cluster.member(m).client_url for m in order],
                tls.ca,
                tls.cert,
                tls.key,
                timeout=1.0,
            ) as writes_client,
            incident.observing(
                KvWriter(writes_client, tl, rate=WRITE_RATE, max_duration=150),
                LeaderWatcher(cluster.leader_name, tl, interval=0.25),
                AlertWatcher(prom.url, tl),
                SeriesSampler(prom.url, tl, SERIES),
                tls_log,
            ),
        ):
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            leader_before = cluster.leader_name()
            with bad_cert:
                with incident.phase("control"):
                    # One follower cut off: the other two must keep quorum and writes.
                    incident.hold(CONTROL_S)
                    health_in_control = cluster.health()
                    leader_in_control = cluster.leader_name()
                with kill:
                    (old_leader,) = kill.targets
                    with incident.phase("fault"):
                        incident.hold(FAULT_S)
                    with incident.phase("recovery"):
                        mitigated = tl.now()
                        # The mitigation: the good certificate back (the member restarts
                        # on it and rejoins); the old leader is still down.
                        bad_cert.revert()
                        kill.revert()  # then the old leader starts again
                        healthy = incident.hold_until(
                            lambda: (
                                all(cluster.health().values())
                                and bool(_resolved_after(tl, "EtcdQuorumLost", mitigated))
                            ),
                            timeout=RECOVERY_MAX_S,
                            what="every member healthy and EtcdQuorumLost resolved",
                        )
                        incident.hold(5.0)  # writes observed after recovery, for the hold window
            leader_after = cluster.leader_name()

    _figures(incident, control=incident.window("control"))
    incident.figure("TLS failures logged", control=float(sum(tls_log.counts.values())))
    baseline = incident.window("baseline") or (0.0, 0.0)
    control = incident.window("control") or (0.0, 0.0)
    fault = incident.window("fault") or (0.0, 0.0)
    incident.check(
        fault_took_effect(
            tl,
            "detector.hit",
            fault=bad_cert.name,
            evidence_name=DETECTOR,
            within=incident.budget.ttd,
        ),
        _broken_as_stated(tl, kind=kind, bad=bad, fault=bad_cert.name, until=mitigated),
        _cut_off(tl, bad=bad, control=control, health=health_in_control),
        _quorum_kept(tl, control=control, leader_before=leader_before, leader=leader_in_control),
        _no_leader_alert_for(tl, bad=bad, fault=bad_cert.name, budget=incident.budget),
        _no_leader_alert_only_for(tl, bad=bad, window=control),
        *[alert_quiet(tl, a, (baseline[0], control[1])) for a in QUIET_THROUGH_CONTROL],
        alert_quiet(tl, "EtcdNoLeader", baseline),
        fault_took_effect(tl, "etcd.quorum_lost", fault=kill.name, within=incident.budget.ttd),
        _writes_stopped(tl, fault=fault),
        *[
            alert_fired_within(tl, a, fault=kill.name, budget=incident.budget)
            for a in incident.budget.must_fire
        ],
        recovered_within(
            tl.series("writes.ok"),
            after=mitigated,
            ok=lambda ok: ok >= 0.5 * WRITE_RATE,
            hold=3.0,
            budget=incident.budget,
            name="writes/s >= half the offered rate",
        ),
        _alert_resolved_within(tl, "EtcdQuorumLost", after=mitigated, budget=incident.budget),
        CheckResult(
            "all_members_healthy_with_the_old_leader_back",
            Status.PASSED if healthy is not None and leader_after is not None else Status.FAILED,
            f"leader before {leader_before}, after recovery {leader_after}; old leader "
            f"{old_leader}, cut-off member {bad}; "
            + ("all members healthy" if healthy is not None else "NOT all members healthy"),
            {"old_leader": old_leader, "new_leader": leader_after, "cut_off": bad},
        ),
    )
    incident.note(
        f"{bad} held the {kind} peer certificate; {old_leader} was the leader killed; "
        f"TLS failures logged per member: {tls_log.counts}"
    )
    incident.assert_passed()


def _in(events: list[Event], lo: float, hi: float) -> list[Event]:
    return [e for e in events if lo <= e.t <= hi]


def _member(e: Event) -> str | None:
    labels = e.detail.get("labels")
    return labels.get("member") if isinstance(labels, dict) else None


def _resolved_after(tl: Timeline, alert: str, after: float) -> Event | None:
    return next((e for e in tl.events("alert.resolved", alert) if e.t >= after), None)


def _figures(incident: Incident, *, control: tuple[float, float] | None) -> None:
    """Seed-style rows: normal (baseline), control (median of its last whole seconds, once
    the member is cut off), worst, recovered."""
    rows = {
        "members following a leader": ("etcd.members_with_leader", "min"),
        "live peer links (of 6)": ("etcd.peer_links_up", "min"),
        "writes/s": ("writes.ok", "min"),
    }
    for metric, (series, worst) in rows.items():
        incident.figure_from_series(metric, series, worst=worst, tail=3.0)
        tail = [
            s.value
            for s in incident.timeline.series(series)
            if control is not None and control[1] - 4.0 <= s.t <= control[1] - 1.0
        ]
        incident.figure(metric, control=statistics.median(tail) if tail else None)


def _broken_as_stated(
    tl: Timeline, *, kind: str, bad: str, fault: str, until: float
) -> CheckResult:
    """The peers refused the member's certificate for the stated reason, and the member
    was told so: the fault is the certificate, not a crash or a partition."""
    injected = tl.events("fault.injected", fault)
    since = injected[0].t if injected else until
    hits = _in(tl.events("detector.hit", DETECTOR), since, until)
    stated = [e for e in hits if e.detail["workload"] != bad and STATED[kind] in e.detail["error"]]
    refused = [e for e in hits if e.detail["workload"] == bad and REFUSED in e.detail["error"]]
    ok = bool(stated) and bool(refused)
    return CheckResult(
        f"cert_broken_as_stated:{kind}",
        Status.PASSED if ok else Status.FAILED,
        f"peers' logs {'show' if stated else 'do NOT show'} {STATED[kind]!r}; {bad}'s log "
        f"{'shows' if refused else 'does NOT show'} {REFUSED!r}"
        + (
            f" (e.g. {stated[0].detail['workload']}: {stated[0].detail['error']})" if stated else ""
        ),
        {"peer_reports": float(len(stated)), "member_reports": float(len(refused))},
    )


def _last(tl: Timeline, series: str, at: float) -> float | None:
    before = [s.value for s in tl.series(series) if s.t <= at]
    return before[-1] if before else None


def _cut_off(
    tl: Timeline, *, bad: str, control: tuple[float, float], health: Mapping[str, bool]
) -> CheckResult:
    """By the end of the control window no peer link reaches the member (of 6 directed
    links only the good pair's 2 remain), it follows no leader, and /health says so."""
    links = _last(tl, "etcd.peer_links_up", control[1])
    following = _last(tl, "etcd.members_with_leader", control[1])
    ok = links == 2 and following == 2 and not health.get(bad, True)
    return CheckResult(
        "control:bad_cert_member_cut_off",
        Status.PASSED if ok else Status.FAILED,
        f"at the end of the control window: {links} live peer links (expected 2 of 6), "
        f"{following} members following a leader (expected 2), {bad} "
        f"{'unhealthy' if not health.get(bad, True) else 'HEALTHY'}",
        {"peer_links": links, "members_with_leader": following},
    )


def _quorum_kept(
    tl: Timeline, *, control: tuple[float, float], leader_before: str | None, leader: str | None
) -> CheckResult:
    """The two good members kept the leader and the writes through the control window."""
    lost = _in(tl.events("etcd.quorum_lost"), *control)
    changes = _in(tl.events("etcd.leader_changed"), *control)
    # Whole seconds only: the first and last are cut by the window edges.
    ok_per_s = [s.value for s in tl.series("writes.ok") if control[0] + 1 <= s.t <= control[1] - 1]
    worst = min(ok_per_s, default=0.0)
    ok = not lost and not changes and leader == leader_before and worst >= 0.5 * WRITE_RATE
    return CheckResult(
        "control:quorum_kept_with_one_member_cut_off",
        Status.PASSED if ok else Status.FAILED,
        f"leader {leader_before} -> {leader}, {len(changes)} leader change(s), "
        f"{len(lost)} quorum loss(es); worst {worst:.0f} writes/s of {WRITE_RATE:.0f}",
        {"worst_writes_per_s": worst, "leader_changes": float(len(changes))},
    )


def _no_leader_alert_for(tl: Timeline, *, bad: str, fault: str, budget: Budget) -> CheckResult:
    """EtcdNoLeader fired for the cut-off member (its own view: no leader) within budget."""
    injected = tl.events("fault.injected", fault)
    fired = [
        e
        for e in tl.events("alert.firing", "EtcdNoLeader")
        if injected and e.t >= injected[0].t and _member(e) == bad
    ]
    ttd = round(fired[0].t - injected[0].t, 3) if fired and injected else None
    ok = ttd is not None and budget.ttd is not None and ttd <= budget.ttd
    return CheckResult(
        f"cut_off_detected:EtcdNoLeader{{member={bad}}}",
        Status.PASSED if ok else Status.FAILED,
        f"EtcdNoLeader for {bad} "
        + (f"fired {ttd:.2f}s after {fault}" if ttd is not None else "never fired")
        + f" (budget {budget.ttd}s)",
        {"ttd_s": ttd, "budget_s": budget.ttd},
    )


def _no_leader_alert_only_for(
    tl: Timeline, *, bad: str, window: tuple[float, float]
) -> CheckResult:
    """In the control window EtcdNoLeader speaks of the cut-off member only: the members
    that hold quorum never page (no false positive)."""
    others = sorted(
        {m or "?" for e in _in(tl.events("alert.firing", "EtcdNoLeader"), *window)
         if (m := _member(e)) != bad}
    )  # fmt: skip
    return CheckResult(
        "control:EtcdNoLeader_quiet_on_the_quorum",
        Status.FAILED if others else Status.PASSED,
        f"EtcdNoLeader fired for {', '.join(others)} with quorum held"
        if others
        else f"EtcdNoLeader quiet on the two members holding quorum ({bad} excepted)",
        {"members_paged": float(len(others))},
    )


def _writes_stopped(tl: Timeline, *, fault: tuple[float, float]) -> CheckResult:
    """With the leader gone and no majority possible, no write committed for at least
    half the fault window (an election that had succeeded would have let them through)."""
    dead = [s for s in tl.series("writes.ok") if fault[0] + 1 <= s.t <= fault[1] and s.value == 0]
    need = (fault[1] - fault[0]) / 2
    return CheckResult(
        "takeover_failed:writes_stopped",
        Status.PASSED if len(dead) >= need else Status.FAILED,
        f"{len(dead)} second(s) without a committed write in {fault[1] - fault[0]:.0f}s "
        f"without the leader (expected >= {need:.0f})",
        {"seconds_without_writes": float(len(dead))},
    )


def _alert_resolved_within(
    tl: Timeline, alert: str, *, after: float, budget: Budget
) -> CheckResult:
    resolved = _resolved_after(tl, alert, after)
    ttr = None if resolved is None else round(resolved.t - after, 3)
    ok = ttr is not None and budget.ttr is not None and ttr <= budget.ttr
    return CheckResult(
        f"alert_resolved_within:{alert}",
        Status.PASSED if ok else Status.FAILED,
        f"{alert} "
        + (f"resolved {ttr:.2f}s after the mitigation" if ttr is not None else "never resolved")
        + f" (budget {budget.ttr}s)",
        {"ttr_s": ttr, "budget_s": budget.ttr},
    )
