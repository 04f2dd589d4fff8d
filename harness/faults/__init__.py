# ruff: noqa: E501 - the fault table is copied into the README as is
"""Faults with guaranteed revert.

Every fault is a context manager built on :class:`~harness.faults.base.Fault`:
the allowlist is checked and the target resolved before anything is touched
(a refused fault leaves the ledger empty); each mutation is written to the
run's ledger with its inverse and a deadline (``now + max_duration``) before
it is made, so the run's watchdog undoes it if the harness dies; revert runs
on every exit path (exceptions, Ctrl-C; a second Ctrl-C cannot cut it short),
then probes the real state and raises ``RevertError`` naming whatever is
left. Faults compose: ``with storm, squeeze:`` or ``with compose(storm, squeeze):``.
Injection and revert are events (``fault.injected`` / ``fault.reverted``) on
the run's timeline, with targets, knobs and achieved figures.

Targets are selectors resolved at inject time against the scope's cluster:
``leader``, ``follower``, ``minority`` (followers, quorum kept), ``any``, a
workload name, or ``pid:N`` (a process of this run; PID 1 and foreign
processes are refused). Addresses must be loopback or the run's own.

| fault | what it does | knobs | effect verified by | reverted by (ledger inverse) |
|---|---|---|---|---|
| `TlsStorm` | full TLS handshakes from the Go `tlsstorm` binary, a tagged process | `target` (selector or host:port), `port` client/peer, `rate`, `concurrency`, `duration`, `tls` 1.2/1.3, `client_cert` | achieved handshakes/s: summary in the fault detail, per-second series `storm.handshakes_per_s` | SIGINT (it prints its summary), then `kill_tagged` of its tag; it also stops by itself after `duration` |
| `CertFault` | swaps a member's cert for a broken one and restarts it | `member`, `kind` expired/untrusted/wrong_san, `which` peer/server | handshakes with the member fail | saved good files put back (`copy_file`), member restarted; files compared byte for byte |
| `CpuThrottle` | CFS quota on the target's cgroup (`backend.set_limits`) | `target`, `cores`, `period_us` | cgroup `nr_throttled` rises (`throttled_periods()`) | saved cgroup files written back (`write_file`); files re-read |
| `MemoryLimit` | lowers the memory limit at run time | `target`, `bytes` | OOM kills counted by `backend.status` (`oom_kills()`) | saved cgroup file written back (`write_file`); file re-read |
| `ProcessKill` | a signal (default SIGKILL) to the target | `target`, `signal` | process gone; for an etcd leader, a new leader | restart policy, else the member is started again; verified running (`nothing_to_undo`) |
| `Restart` | stop + start of the target | `target` | restart count rises, new pid | verified running |
| `ProcessPause` | freezes the target (freezer cgroup; SIGSTOP without one) | `target`, `seconds` (also the deadline) | frozen state, member unreachable | `backend.resume` (`resume_tagged`: thaw + SIGCONT); /proc state and freezer re-read |
| `Partition` | cuts the target off from its peers (iptables chain `FL-...` matched by cgroup) | `target`, `from_` ("peers" or names) | peers unreachable, leader changes | `backend.heal` (`remove_iptables_chain`); chain looked up with `iptables -S` |
| `Latency` | Toxiproxy `latency` toxic | `proxy`, `ms`, `jitter`, `direction` | round trip through the proxy | toxic deleted (`remove_toxiproxy_toxic`); proxy read back |
| `Bandwidth` | Toxiproxy `bandwidth` toxic | `proxy`, `kbps`, `direction` | transfer rate through the proxy | toxic deleted; proxy read back |
| `Timeout` | Toxiproxy `timeout` toxic (data stops, closed after ms; 0 = held) | `proxy`, `ms`, `direction` | no reply through the proxy | toxic deleted; proxy read back |
| `ResetPeer` | Toxiproxy `reset_peer` toxic (TCP RST after ms) | `proxy`, `ms`, `direction` | connections reset | toxic deleted; proxy read back |
| `Down` | disables the proxy | `proxy` | connections refused | proxy enabled (`enable_toxiproxy_proxy`); proxy read back |
| `BugSwitch` | turns an injectable bug of a Go target on | `admin_url` (loopback), `bug`, `intensity` | `GET /bugs` says enabled | switched off (`disable_service_bug`); `GET /bugs` |

Toxiproxy faults act on a :class:`~harness.components.toxiproxy.Proxy` the
scenario placed in a path: e.g. orderd's ``--etcd-endpoints`` pointed at
``proxy.listen`` instead of the etcd member (tests/integration/test_faults_etcd.py).

Every fault also takes ``max_duration`` (seconds, > 0 and <= 3600; required
where it has no natural length): the watchdog reverts the fault then even if
the harness is SIGKILLed (within about ``max_duration + 1`` s).

>>> scope = Scope(run, backend, cluster=etcd)                       # doctest: +SKIP
>>> with CpuThrottle(scope, "leader", cores=0.1, max_duration=30) as squeeze:
...     wait_until(lambda: sum(squeeze.throttled_periods().values()) > 10, timeout=10)
"""

from harness.faults.base import MAX_FAULT_SECONDS, Composite, Fault, Scope, compose
from harness.faults.bugs import BugSwitch
from harness.faults.cert import CertFault
from harness.faults.network import Bandwidth, Down, Latency, ResetPeer, Timeout, ToxicFault
from harness.faults.process import (
    CpuThrottle,
    MemoryLimit,
    Partition,
    ProcessKill,
    ProcessPause,
    Restart,
    WorkloadFault,
)
from harness.faults.selectors import resolve
from harness.faults.storm import TlsStorm

__all__ = [
    "MAX_FAULT_SECONDS",
    "Bandwidth",
    "BugSwitch",
    "CertFault",
    "Composite",
    "CpuThrottle",
    "Down",
    "Fault",
    "Latency",
    "MemoryLimit",
    "Partition",
    "ProcessKill",
    "ProcessPause",
    "ResetPeer",
    "Restart",
    "Scope",
    "Timeout",
    "TlsStorm",
    "ToxicFault",
    "WorkloadFault",
    "compose",
    "resolve",
]
