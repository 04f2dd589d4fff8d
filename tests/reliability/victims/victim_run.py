"""A harness run for the reliability suite to kill: workloads, faults, revert, close.

Run as ``python victim_run.py`` with its settings in the environment (see
``Plan``); it appends one line per stage to ``$VICTIM_PROGRESS`` so the test
knows where it was when it killed it. Not collected by pytest (``victim_*``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.faults import CpuThrottle, Fault, Partition, ProcessPause, Scope, compose
from harness.run import Run
from harness.wait import wait_until


@dataclass(frozen=True)
class Plan:
    progress: Path
    watchdog: bool
    workloads: int  # plain sleep workloads, besides the python one
    etcd: bool
    cycles: int
    hold: float  # seconds each fault set stays injected
    go_file: Path | None  # when set: hold until it exists (bounded) instead of ``hold``
    max_duration: float

    @classmethod
    def from_env(cls) -> Plan:
        e = os.environ
        go = e.get("VICTIM_GO_FILE")
        return cls(
            progress=Path(e["VICTIM_PROGRESS"]),
            watchdog=e.get("VICTIM_WATCHDOG", "1") == "1",
            workloads=int(e.get("VICTIM_WORKLOADS", "1")),
            etcd=e.get("VICTIM_ETCD", "0") == "1",
            cycles=int(e.get("VICTIM_CYCLES", "2")),
            hold=float(e.get("VICTIM_HOLD", "0.3")),
            go_file=Path(go) if go else None,
            max_duration=float(e.get("VICTIM_MAX_DURATION", "60")),
        )


def main() -> int:
    plan = Plan.from_env()
    out = plan.progress.open("a", buffering=1)

    def stage(name: str, **detail: object) -> None:
        out.write(json.dumps({"stage": name, "t": time.time(), **detail}) + "\n")

    stage("begin")
    run = Run.open(watchdog=plan.watchdog)
    stage("run", run_id=run.run_id)
    backend = LocalBackend(run)
    stage("start")
    names = [f"w{i}" for i in range(plan.workloads)]
    for name in names:
        placement = backend.plan(name, ["p"])
        backend.start(WorkloadSpec(name, ("sleep", "600"), placement))
    py = backend.plan("py", ["http"])
    backend.start(
        WorkloadSpec(
            "py",
            (sys.executable, "-m", "http.server", str(py.port("http")), "--bind", "127.0.0.1"),
            py,
            readiness=Probe(ProbeKind.TCP, "http", interval=0.05),
        )
    )
    if plan.etcd:
        from harness.components.etcd import EtcdCluster
        from harness.pki import Pki

        stage("etcd")
        EtcdCluster(backend, run, Pki.create(run), size=1).start()
    backend.wait_ready("py", timeout=30)
    stage("started", pids={n: backend.pid(n) for n in [*names, "py"]})
    scope = Scope(run, backend, workloads=[*names, "py"])
    target = names[0] if names else "py"
    for cycle in range(plan.cycles):
        stage("inject", cycle=cycle)
        faults: list[Fault] = [CpuThrottle(scope, "py", cores=0.2, max_duration=plan.max_duration)]
        if target != "py":
            faults.append(Partition(scope, "py", from_=[target], max_duration=plan.max_duration))
        faults.append(ProcessPause(scope, target, seconds=plan.max_duration))
        with compose(*faults):
            stage("hold", cycle=cycle)
            if plan.go_file is not None:
                go = plan.go_file
                wait_until(go.exists, timeout=120, interval=0.05, what=f"{go} to appear")
            else:
                time.sleep(plan.hold)  # the fault's "hold": what is measured happens meanwhile
            stage("revert", cycle=cycle)
        stage("reverted", cycle=cycle)
    stage("close")
    backend.close()
    left = run.close()
    stage("closed", leftovers=left)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
