"""The local backend: workloads are host processes in cgroups faultline owns.

Each workload runs in its own session (so a signal reaches its whole process
group), with the run's env tags, stdout+stderr appended to
``<run dir>/logs/<name>.log``, inside ``faultline/<run_id>/<name>`` cgroups
(see :mod:`harness.backends.cgroups`) that it joins before ``exec`` through a
tiny ``/bin/sh`` wrapper, so it never allocates outside its limit. A
supervisor thread per workload reaps exits, recognises OOM kills, restarts per
the :class:`RestartPolicy` with exponential backoff, and runs the probes.

Exit codes follow the container convention: a death by signal N is ``128+N``
(137 for SIGKILL / OOM kill), so every backend reports the same numbers.

Isolation uses one iptables chain per isolated workload, hooked from INPUT and
OUTPUT, matching sockets by their cgroup2 path (``-m cgroup --path``): all
workloads share 127.0.0.1 and connect from ephemeral ports, so ports alone
cannot tell who is talking. It needs the cgroup2 hierarchy (unified or hybrid).

>>> backend = LocalBackend(run)                                  # doctest: +SKIP
>>> placement = backend.plan("web", ["http"])
>>> backend.start(WorkloadSpec("web", ("python3", "-m", "http.server",
...     str(placement.port("http")), "--bind", "127.0.0.1"), placement,
...     readiness=Probe(ProbeKind.HTTP, "http")))
>>> backend.wait_ready("web", timeout=10)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.backends.base import (
    Placement,
    Probe,
    ProbeKind,
    ResourceStats,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
    WorkloadStatus,
)
from harness.backends.cgroups import WorkloadCgroup, detect_layout
from harness.backends.netfilter import CHAIN_PARENTS, chain_prefix, install_drop_chain
from harness.backends.ports import PortAllocator, RecordedLease, allocate_recorded
from harness.components.base import log_tail
from harness.errors import BackendUnavailable, ComponentStartError, ConfigError
from harness.run import Run, state_root
from harness.wait import Hopeless, WaitTimeout, wait_until

__all__ = ["LocalBackend", "chain_prefix"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # no path separators, no "..": stays put
_POLL = 0.05  # how often a supervisor looks for an exit


@dataclass
class _Workload:
    """Mutable state of one workload; guarded by ``lock``."""

    placement: Placement
    leases: list[RecordedLease]
    spec: WorkloadSpec | None = None
    cgroup: WorkloadCgroup | None = None
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0  # bumped at every spawn: stale probe verdicts are ignored
    want_running: bool = False
    paused: bool = False
    pause_seq: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    oom_seen: int = 0
    restarts: int = 0
    policy_restarts: int = 0  # against max_restarts
    crashes: int = 0  # consecutive quick exits: the backoff's exponent
    spawned_at: float = 0.0
    ready: bool = False
    healthy: bool | None = None
    isolation: tuple[str, int] | None = None  # (chain, ledger seq)
    seqs: list[int] = field(default_factory=list)  # cgroup + process entries
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class LocalBackend:
    """Runs workloads as local processes; see the module docstring."""

    name = "local"

    def __init__(self, run: Run) -> None:
        self.run = run
        self._workloads: dict[str, _Workload] = {}
        self._lock = threading.Lock()
        self._layout = detect_layout()
        self._ports = PortAllocator(state_root() / "ports", run.run_id)
        self._cgroup_seqs: list[int] = []  # shared parents, recorded once per run
        self._chains = 0
        self._closed = False

    # -- helpers -------------------------------------------------------------

    def _get(self, name: str) -> _Workload:
        w = self._workloads.get(name)
        if w is None or w.spec is None:
            raise ConfigError(
                f"workload {name!r}",
                "was not started by this backend",
                expected=f"one of {sorted(n for n, x in self._workloads.items() if x.spec)}",
            )
        return w

    def log_path(self, name: str) -> Path:
        self._get(name)
        return self.run.dir / "logs" / f"{name}.log"

    def _note(self, name: str, text: str) -> None:
        # Our own lines in the workload's log, so exits and restarts read in context.
        with contextlib.suppress(OSError), open(self.run.dir / "logs" / f"{name}.log", "a") as f:
            f.write(f"[faultline {time.strftime('%H:%M:%S')}] {text}\n")

    def pid(self, name: str) -> int | None:
        """PID of the workload's main process while it runs."""
        w = self._get(name)
        with w.lock:
            return w.proc.pid if w.proc is not None and w.proc.poll() is None else None

    def cgroup(self, name: str) -> WorkloadCgroup | None:
        """The workload's cgroup (None when cgroups are unavailable); local only."""
        return self._get(name).cgroup

    # -- plan / start ----------------------------------------------------------

    def plan(self, name: str, ports: Sequence[str], files: Sequence[str] = ()) -> Placement:
        if not _NAME.match(name):
            raise ConfigError(
                "workload name", f"{name!r} is not usable", expected="[a-z0-9][a-z0-9_.-]{0,62}"
            )
        if name in self._workloads:
            raise ConfigError(f"workload {name!r}", "is already planned in this run")
        for f in files:
            if not _FILE.match(f):
                raise ConfigError(f"{name}.files", f"{f!r} is not a plain file name",
                                  expected="letters, digits, '_', '.', '-'")  # fmt: skip
        leases = [
            allocate_recorded(self._ports, self.run.ledger, run_id=self.run.run_id, what=name)
            for _ in ports
        ]
        files_dir = self.run.dir / "files" / name
        placement = Placement(
            name=name,
            bind_host="127.0.0.1",
            ports={p: lease.port for p, lease in zip(ports, leases, strict=True)},
            internal_host="127.0.0.1",
            external_ports={p: lease.port for p, lease in zip(ports, leases, strict=True)},
            files={f: str(files_dir / f) for f in files},
        )
        self._workloads[name] = _Workload(placement, leases)
        return placement

    def _place_files(self, spec: WorkloadSpec) -> None:
        for fname, host_path in spec.files.items():
            if not Path(host_path).is_file():
                raise ConfigError(f"{spec.name}.files[{fname!r}]", f"{host_path} does not exist")
            target = spec.placement.files.get(fname)
            if target is not None and Path(target) != Path(host_path):
                Path(target).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copy2(host_path, target)

    def _make_cgroup(self, spec: WorkloadSpec) -> WorkloadCgroup | None:
        cg = WorkloadCgroup(self._layout, self.run.run_id, spec.name)
        if not cg.dirs or os.geteuid() != 0:
            log.warning(
                "no usable cgroups (not root or none mounted): %s runs unlimited", spec.name
            )
            return None
        ledger = self.run.ledger
        with self._lock:
            if not self._cgroup_seqs:
                self._cgroup_seqs.append(
                    ledger.record(
                        "faultline cgroup parents",
                        {"op": "remove_empty_cgroups", "paths": cg.base_paths()},
                    )
                )
                self._cgroup_seqs.append(
                    ledger.record(
                        f"cgroups of run {self.run.run_id}",
                        {"op": "remove_cgroup", "paths": cg.run_paths()},
                    )
                )
        seq = ledger.record(f"cgroup of {spec.name}", {"op": "remove_cgroup", "paths": cg.paths()})
        self._workloads[spec.name].seqs.append(seq)
        cg.create()
        ledger.applied(seq)
        if spec.cpu_limit is not None:
            cg.set_cpu(spec.cpu_limit)
        if spec.memory_limit is not None:
            cg.set_memory(spec.memory_limit)
        return cg

    def start(self, spec: WorkloadSpec) -> None:
        w = self._workloads.get(spec.name)
        if w is None:
            raise ConfigError(f"workload {spec.name!r}", "was not planned", expected="plan() first")
        if w.spec is not None:
            raise ConfigError(f"workload {spec.name!r}", "is already started")
        if spec.placement.ports != w.placement.ports:
            raise ConfigError(f"{spec.name}.placement", "is not the one plan() returned")
        for probe in (spec.liveness, spec.readiness):
            if probe is not None and probe.port not in w.placement.ports:
                raise ConfigError(
                    f"{spec.name} probe port", f"{probe.port!r} is not a planned port"
                )
        if shutil.which(spec.command[0]) is None:
            raise ConfigError(f"{spec.name}.command[0]", f"{spec.command[0]!r} not found on PATH")
        # Fail before anything is made when limits are asked for and cannot be had.
        wants_limits = spec.cpu_limit is not None or spec.memory_limit is not None
        if wants_limits and (os.geteuid() != 0 or self._layout.version == "none"):
            raise BackendUnavailable("cgroups for cpu/memory limits", "run as root on Linux")
        self._place_files(spec)
        self.run.subdir("logs")
        w.spec = spec
        w.cgroup = self._make_cgroup(spec)
        seq = self.run.ledger.record(
            f"process {spec.name}",
            {"op": "kill_tagged", "run_id": self.run.run_id, "workload": spec.name},
        )
        w.seqs.append(seq)
        with w.lock:
            w.want_running = True
            self._spawn(w)
        self.run.ledger.applied(seq, pid=w.proc.pid if w.proc else None)
        w.threads.append(threading.Thread(target=self._supervise, args=(w,), daemon=True))
        if spec.liveness is not None or spec.readiness is not None:
            w.threads.append(threading.Thread(target=self._probe_loop, args=(w,), daemon=True))
        for t in w.threads:
            t.name = f"faultline-{spec.name}-{t.name}"
            t.start()

    def _spawn(self, w: _Workload) -> None:
        """Start the process (caller holds ``w.lock``)."""
        assert w.spec is not None
        spec = w.spec
        command = list(spec.command)
        if w.cgroup is not None:
            # Join the cgroups, then exec: the pid stays, so it is inside
            # before the workload's first allocation.
            joins = " ".join(shlex.quote(str(p)) for p in w.cgroup.procs_files())
            script = f'for f in {joins}; do echo $$ > "$f" || exit 126; done; exec "$@"'
            command = ["/bin/sh", "-c", script, "faultline-exec", *command]
        env = {**os.environ, **spec.env, **self.run.child_env(spec.name)}
        with open(self.run.dir / "logs" / f"{spec.name}.log", "ab") as logf:
            w.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        w.generation += 1
        w.spawned_at = time.monotonic()
        w.ready = False
        w.healthy = None
        w.paused = False
        log.info("started %s (pid %d)", spec.name, w.proc.pid)

    # -- supervision -------------------------------------------------------------

    def _supervise(self, w: _Workload) -> None:
        try:
            self._supervise_loop(w)
        except Exception:
            # stop() waits on this thread's bookkeeping: never die silently.
            log.exception("supervisor of %s failed; the workload is no longer supervised", w.spec)
            with w.lock:
                w.want_running = False
                if w.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(w.proc.pid, signal.SIGKILL)
                    w.proc.wait()
                    w.exit_code = _exit_code(w.proc.returncode)
                    w.proc = None

    def _supervise_loop(self, w: _Workload) -> None:
        while not w.closing.is_set():
            with w.lock:
                proc, gen = w.proc, w.generation
                returncode = proc.poll() if proc is not None else None
                if proc is None or returncode is None:
                    delay = None
                else:
                    delay = self._on_exit(w, proc, returncode)
            if delay is None:
                w.changed.wait(_POLL)
                w.changed.clear()
                continue
            # Backoff: interruptible by stop(), restart() and close().
            w.closing.wait(delay)
            with w.lock:
                if w.want_running and w.generation == gen and w.proc is None:
                    w.restarts += 1
                    w.policy_restarts += 1
                    self._spawn(w)

    def _on_exit(
        self, w: _Workload, proc: subprocess.Popen[bytes], returncode: int
    ) -> float | None:
        """Record an exit (caller holds ``w.lock``); return the backoff if it restarts."""
        assert w.spec is not None
        # A container's death takes its other processes along.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        w.proc = None
        w.ready = False
        if w.pause_seq is not None:
            # Thaw the (now empty) cgroup, or the next process would start frozen.
            self.run.ledger.revert(w.pause_seq)
            w.pause_seq = None
        w.paused = False
        code = _exit_code(returncode)
        oom = w.cgroup.oom_kills() if w.cgroup is not None else 0
        w.oom_killed = returncode == -signal.SIGKILL and oom > w.oom_seen
        w.oom_seen = oom
        w.exit_code = code
        policy = w.spec.restart
        restart = w.want_running and (
            policy.mode is RestartMode.ALWAYS
            or (policy.mode is RestartMode.ON_FAILURE and code != 0)
        )
        if restart and policy.max_restarts is not None and w.policy_restarts >= policy.max_restarts:
            restart = False
            self._note(w.spec.name, f"max_restarts={policy.max_restarts} reached: not restarting")
        why = " (OOM killed)" if w.oom_killed else ""
        if not restart:
            w.want_running = False
            self._note(w.spec.name, f"exited with {code}{why}")
            return None
        if time.monotonic() - w.spawned_at > policy.backoff_max:
            w.crashes = 0  # it ran well for a while: back off from the start again
        delay = policy.waits(w.crashes + 1)[-1]
        w.crashes += 1
        self._note(w.spec.name, f"exited with {code}{why}; restarting in {delay:.2f}s")
        return delay

    def _probe_loop(self, w: _Workload) -> None:
        assert w.spec is not None
        spec = w.spec
        probes = [p for p in (spec.readiness, spec.liveness) if p is not None]
        due = {id(p): 0.0 for p in probes}
        failures = 0
        seen_gen = 0
        while not w.closing.is_set():
            now = time.monotonic()
            for probe in probes:
                if due[id(probe)] > now:
                    continue
                due[id(probe)] = now + probe.interval
                with w.lock:
                    gen, alive = w.generation, w.proc is not None and not w.paused
                if not alive:
                    continue  # a paused or exited workload is not probed
                if gen != seen_gen:
                    failures, seen_gen = 0, gen
                ok = self._probe(spec, probe)
                with w.lock:
                    if w.generation != gen:
                        continue
                    if probe is spec.readiness:
                        w.ready = ok
                    if probe is spec.liveness:
                        failures = 0 if ok else failures + 1
                        w.healthy = ok if ok or failures >= probe.failure_threshold else w.healthy
                        if failures == probe.failure_threshold and w.proc is not None:
                            self._note(spec.name, f"liveness failed {failures} times: killing")
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(w.proc.pid, signal.SIGKILL)
            w.closing.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _probe(self, spec: WorkloadSpec, probe: Probe) -> bool:
        port = spec.placement.ports[probe.port]
        try:
            if probe.kind is ProbeKind.TCP:
                with socket.create_connection(("127.0.0.1", port), timeout=probe.timeout):
                    return True
            verify: ssl.SSLContext | bool = False
            if probe.kind is ProbeKind.HTTPS:
                verify = ssl.create_default_context()
                if probe.ca_file is not None:
                    verify.load_verify_locations(cafile=str(spec.files[probe.ca_file]))
                else:  # like kubelet: an https probe without a CA does not verify
                    verify.check_hostname = False
                    verify.verify_mode = ssl.CERT_NONE
                if probe.cert_file is not None and probe.key_file is not None:
                    verify.load_cert_chain(
                        str(spec.files[probe.cert_file]), str(spec.files[probe.key_file])
                    )
            url = f"{probe.kind.value}://127.0.0.1:{port}{probe.path}"
            with httpx.Client(verify=verify, timeout=probe.timeout) as client:
                return 200 <= client.get(url).status_code < 400
        except (OSError, httpx.HTTPError, ssl.SSLError, KeyError):
            return False

    def wait_ready(self, name: str, timeout: float) -> None:
        w = self._get(name)
        assert w.spec is not None
        has_probe = w.spec.readiness is not None

        def ready() -> bool:
            with w.lock:
                if w.proc is None and not w.want_running:
                    raise _Gone(f"exited with {w.exit_code}")
                return w.proc is not None and (w.ready or not has_probe)

        try:
            wait_until(ready, timeout=timeout, interval=0.05, what=f"{name} ready")
        except (_Gone, WaitTimeout) as err:
            exc = ComponentStartError(f"{name} did not become ready: {err}")
            exc.add_note(f"log tail of {name}:\n{log_tail(self.log_path(name))}")
            raise exc from err

    # -- signals and lifecycle ---------------------------------------------------

    def kill(self, name: str, signum: int = 9) -> None:
        """Signal the process group; a paused workload is thawed after, so it acts on it."""
        w = self._get(name)
        with w.lock:
            if w.proc is None:
                log.info("kill %s: not running", name)
                return
            os.killpg(w.proc.pid, signum)
            if w.paused and signum not in (signal.SIGSTOP, signal.SIGCONT):
                self.resume(name)
        w.changed.set()

    def stop(self, name: str, timeout: float = 10.0) -> None:
        w = self._get(name)
        assert w.spec is not None
        with w.lock:
            w.want_running = False
            proc = w.proc
        w.changed.set()
        if proc is None:
            return
        if w.paused:
            self.resume(name)  # a frozen process cannot act on a signal
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, w.spec.stop_signal)
        try:
            wait_until(lambda: proc.poll() is not None, timeout=timeout, interval=0.02)
        except WaitTimeout:
            log.warning(
                "%s ignored signal %d for %.1fs: SIGKILL", name, w.spec.stop_signal, timeout
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if w.threads and w.threads[0].ident is not None:
            # The supervisor records the exit; wait for it so status() is settled.
            wait_until(lambda: w.proc is not proc, timeout=10, interval=0.02, what=f"{name} reaped")
        else:
            # An interrupt (Ctrl-C) cut start() short before its supervisor ran: record it here.
            with w.lock:
                if w.proc is proc:
                    self._on_exit(w, proc, proc.wait(timeout=10))

    def restart(self, name: str) -> None:
        w = self._get(name)
        self.stop(name)
        with w.lock:
            w.want_running = True
            w.crashes = 0
            w.restarts += 1
            self._spawn(w)

    def pause(self, name: str) -> None:
        w = self._get(name)
        with w.lock:
            if w.proc is None:
                raise ConfigError(f"workload {name!r}", "is not running: cannot pause it")
            if w.paused:
                return
            cg = w.cgroup
            freeze_file = cg.freeze_file if cg is not None else None
            inv: dict[str, str | int]
            if cg is not None and freeze_file is not None:
                inv = {"op": "write_file", "path": str(freeze_file), "value": cg.thaw_value}
            else:
                inv = {
                    "op": "signal_tagged",
                    "run_id": self.run.run_id,
                    "workload": name,
                    "signum": int(signal.SIGCONT),
                }
            w.pause_seq = self.run.ledger.record(f"pause {name}", inv)
            if cg is not None and freeze_file is not None:
                cg.freeze()
            else:
                os.killpg(w.proc.pid, signal.SIGSTOP)
            w.paused = True
            self.run.ledger.applied(w.pause_seq)

    def resume(self, name: str) -> None:
        w = self._get(name)
        with w.lock:
            if w.pause_seq is None:
                return
            self.run.ledger.revert(w.pause_seq)
            if w.cgroup is not None and w.cgroup.freeze_file is not None:
                wait_until(lambda: w.cgroup is None or w.cgroup.frozen() is False, timeout=5)
            w.pause_seq = None
            w.paused = False

    def restart_waits(self, policy: RestartPolicy, count: int) -> list[float]:
        return policy.waits(count)

    def status(self, name: str) -> WorkloadStatus:
        w = self._get(name)
        with w.lock:
            oom_kills = w.cgroup.oom_kills() if w.cgroup is not None else 0
            return WorkloadStatus(
                running=w.proc is not None and w.proc.poll() is None,
                paused=w.paused,
                exit_code=w.exit_code,
                oom_killed=w.oom_killed,
                oom_kills=oom_kills,
                restarts=w.restarts,
                healthy=w.healthy,
            )

    # -- resources -----------------------------------------------------------------

    def _require_cgroup(self, name: str) -> WorkloadCgroup:
        cg = self._get(name).cgroup
        if cg is None:
            raise BackendUnavailable(f"cgroups for {name}", "run as root with cgroups mounted")
        return cg

    def stats(self, name: str) -> ResourceStats:
        return self._require_cgroup(name).stats()

    def set_limits(
        self,
        name: str,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        cpu_period_us: int | None = None,
    ) -> None:
        if cpu is not None and cpu <= 0:
            raise ConfigError("cpu", f"{cpu} cores", expected="> 0 or None for unlimited")
        if memory is not None and memory <= 0:
            raise ConfigError("memory", f"{memory} bytes", expected="> 0 or None for unlimited")
        if cpu_period_us is not None and not 1000 <= cpu_period_us <= 1_000_000:
            raise ConfigError("cpu_period_us", str(cpu_period_us), expected="1000..1000000")
        cg = self._require_cgroup(name)
        cg.set_cpu(cpu, cpu_period_us)
        cg.set_memory(memory)

    # -- network -------------------------------------------------------------------

    def isolate(self, name: str, peers: Sequence[str]) -> None:
        w = self._get(name)
        others = [self._get(p) for p in peers]
        if name in peers:
            raise ConfigError("peers", f"{name!r} cannot be isolated from itself")
        if w.isolation is not None:
            raise ConfigError(f"workload {name!r}", "is already isolated", expected="heal() first")
        if shutil.which("iptables") is None:
            raise BackendUnavailable("iptables", "apt-get install -y iptables")
        groups = [x.cgroup.v2_path if x.cgroup is not None else None for x in (w, *others)]
        if any(g is None for g in groups):
            raise BackendUnavailable(
                "cgroup2 hierarchy (sockets are matched by cgroup2 path)",
                "mount cgroup2 (unified or hybrid, e.g. at /sys/fs/cgroup/unified) and run as root",
            )
        self._chains += 1
        chain = f"{chain_prefix(self.run.run_id)}{self._chains}"  # <= 28 chars
        seq = self.run.ledger.record(
            f"isolate {name} from {', '.join(peers)}",
            {"op": "remove_iptables_chain", "chain": chain, "parents": CHAIN_PARENTS},
        )
        w.isolation = (chain, seq)
        assert groups[0] is not None
        install_drop_chain(
            chain,
            (groups[0], w.placement.ports.values()),
            [(g, x.placement.ports.values()) for x, g in zip(others, groups[1:], strict=True) if g],
        )
        self.run.ledger.applied(seq, chain=chain)

    def heal(self, name: str) -> None:
        w = self._get(name)
        if w.isolation is None:
            return
        self.run.ledger.revert(w.isolation[1])
        w.isolation = None

    # -- teardown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything, heal, remove cgroups, release ports; idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for name, w in reversed(list(self._workloads.items())):
            try:
                if w.spec is not None:
                    self.heal(name)
                    self.stop(name, timeout=5.0)
            except Exception as err:  # noqa: BLE001 - every workload gets its teardown
                errors.append(f"{name}: {err}")
            w.closing.set()
            for t in w.threads:
                if t.ident is not None:  # an interrupt may land between creating and starting
                    t.join(timeout=10)
            for seq in reversed(w.seqs):
                try:
                    self.run.ledger.revert(seq)
                except Exception as err:  # noqa: BLE001 - reported below, the rest still run
                    errors.append(f"{name}: {err}")
            for lease in w.leases:
                lease.release(self.run.ledger)
        for seq in reversed(self._cgroup_seqs):
            try:
                self.run.ledger.revert(seq)
            except Exception as err:  # noqa: BLE001
                errors.append(str(err))
        if errors:
            log.error("local backend left things behind: %s", "; ".join(errors))


class _Gone(Hopeless):
    """The workload exited and will not be restarted."""
