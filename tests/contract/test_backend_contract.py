"""The backend compliance suite: every backend must pass these with real processes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.backends.base import (
    Backend,
    Probe,
    ProbeKind,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
)
from harness.errors import ComponentStartError, ConfigError
from harness.run import Run, clean_runs
from harness.wait import wait_until
from tests.contract.conftest import BACKENDS, leftovers

PY = sys.executable

# Prints an increasing counter ten times a second, for at most 60 s.
COUNTER = "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.1)"


def start(
    backend: Backend, name: str, command: Sequence[str], ports: Sequence[str] = (), **kw: Any
) -> WorkloadSpec:
    placement = backend.plan(name, ports)
    spec = WorkloadSpec(name=name, command=tuple(command), placement=placement, **kw)
    backend.start(spec)
    return spec


def log_lines(backend: Backend, name: str) -> list[str]:
    text = backend.log_path(name).read_text(errors="replace")
    return [line for line in text.splitlines() if not line.startswith("[faultline")]


GRACEFUL = textwrap.dedent(
    """
    import signal, sys, time
    def bye(*_):
        print("got TERM", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    print("up", flush=True)
    time.sleep(60)
    """
)


def test_start_and_stop(backend: Backend) -> None:
    # A handler of its own: as a container's PID 1 a process gets no default ones.
    start(backend, "graceful", [PY, "-c", GRACEFUL])
    assert backend.status("graceful").running
    wait_until(lambda: "up" in log_lines(backend, "graceful"), timeout=10)
    backend.stop("graceful", timeout=5)
    st = backend.status("graceful")
    assert not st.running
    assert st.exit_code == 0
    assert "got TERM" in log_lines(backend, "graceful")
    backend.stop("graceful")  # idempotent


def test_stop_escalates_to_sigkill(backend: Backend) -> None:
    ignore = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    ignore += "print('ignoring', flush=True)\ntime.sleep(60)"
    start(backend, "stubborn", [PY, "-c", ignore])
    wait_until(lambda: "ignoring" in log_lines(backend, "stubborn"), timeout=10)
    backend.stop("stubborn", timeout=0.5)
    assert backend.status("stubborn").exit_code == 128 + signal.SIGKILL


def test_kill_is_an_exit_under_the_policy(backend: Backend) -> None:
    start(backend, "victim", ["sleep", "60"])
    backend.kill("victim", signal.SIGKILL)
    wait_until(lambda: not backend.status("victim").running, timeout=5)
    st = backend.status("victim")
    assert st.exit_code == 137
    assert not st.oom_killed
    assert st.restarts == 0


def test_pause_stops_progress_and_resume_restores_it(backend: Backend) -> None:
    start(backend, "counter", [PY, "-c", COUNTER])
    wait_until(lambda: len(log_lines(backend, "counter")) >= 2, timeout=10)
    backend.pause("counter")
    assert backend.status("counter").paused
    frozen_at = len(log_lines(backend, "counter"))
    time.sleep(0.6)  # six counter periods: a running counter would have printed
    assert len(log_lines(backend, "counter")) == frozen_at
    backend.resume("counter")
    assert not backend.status("counter").paused
    wait_until(lambda: len(log_lines(backend, "counter")) > frozen_at + 2, timeout=5)


def test_cpu_quota_throttles_a_busy_loop(backend: Backend) -> None:
    start(
        backend, "spinner", [PY, "-c", "import time\nt=time.time()\nwhile time.time()-t<60: pass"]
    )
    backend.set_limits("spinner", cpu=0.1, cpu_period_us=100_000)
    before = backend.stats("spinner").throttled_periods
    wait_until(lambda: backend.stats("spinner").throttled_periods >= before + 5, timeout=10)
    st = backend.stats("spinner")
    assert st.throttled_seconds > 0
    assert st.cpu_seconds > 0


def test_memory_limit_is_read_back(backend: Backend) -> None:
    start(backend, "holder", ["sleep", "60"], memory_limit=256 << 20)
    assert backend.stats("holder").memory_limit == 256 << 20
    backend.set_limits("holder", memory=64 << 20)
    assert backend.stats("holder").memory_limit == 64 << 20
    backend.set_limits("holder", memory=None)
    assert backend.stats("holder").memory_limit is None


def test_oom_kill_under_a_small_limit(backend: Backend) -> None:
    hog = "import time\nb = b'x' * (200 << 20)\nprint('survived', flush=True)\ntime.sleep(60)"
    start(backend, "hog", [PY, "-c", hog], memory_limit=50 << 20)
    wait_until(lambda: not backend.status("hog").running, timeout=20, what="OOM kill")
    st = backend.status("hog")
    assert st.oom_killed
    assert st.exit_code == 128 + signal.SIGKILL
    assert st.oom_kills >= 1
    assert "survived" not in log_lines(backend, "hog")


def test_crash_loop_backs_off_and_respects_max_restarts(backend: Backend) -> None:
    crash = "import time\nprint(time.monotonic(), flush=True)\nraise SystemExit(3)"
    policy = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.3, max_restarts=3)
    start(backend, "crasher", [PY, "-c", crash], restart=policy)
    wait_until(
        lambda: backend.status("crasher").restarts == 3 and not backend.status("crasher").running,
        timeout=20,
        what="three restarts",
    )
    time.sleep(3.0)  # longer than the next backoff (2.4 s): no fourth restart may come
    st = backend.status("crasher")
    assert st.restarts == 3
    assert not st.running
    assert st.exit_code == 3
    starts = [float(x) for x in log_lines(backend, "crasher")]
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] < gaps[1] < gaps[2], gaps


def test_on_failure_does_not_restart_a_clean_exit(backend: Backend) -> None:
    policy = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.1)
    start(backend, "oneshot", ["true"], restart=policy)
    wait_until(lambda: backend.status("oneshot").exit_code == 0, timeout=5)
    time.sleep(0.5)  # five backoffs: a wrong restart would have happened by now
    assert backend.status("oneshot").restarts == 0


def test_failing_liveness_probe_restarts(backend: Backend) -> None:
    # Nothing ever listens on the probed port.
    probe = Probe(ProbeKind.TCP, "health", interval=0.2, timeout=0.2, failure_threshold=2)
    policy = RestartPolicy(RestartMode.ALWAYS, backoff_initial=0.2)
    start(backend, "zombie", ["sleep", "60"], ["health"], liveness=probe, restart=policy)
    wait_until(lambda: backend.status("zombie").restarts >= 1, timeout=15, what="a restart")
    assert backend.status("zombie").healthy is not True


def test_http_readiness_probe(backend: Backend) -> None:
    placement = backend.plan("web", ["http"])
    port = str(placement.port("http"))
    backend.start(
        WorkloadSpec(
            "web",
            (PY, "-m", "http.server", port, "--bind", placement.bind_host),
            placement,
            readiness=Probe(ProbeKind.HTTP, "http", interval=0.2),
            liveness=Probe(ProbeKind.HTTP, "http", interval=0.2),
        )
    )
    backend.wait_ready("web", timeout=15)
    wait_until(lambda: backend.status("web").healthy is True, timeout=5)


def test_wait_ready_timeout_carries_the_log_tail(backend: Backend) -> None:
    never = "import time\nprint('booting-marker', flush=True)\ntime.sleep(60)"
    probe = Probe(ProbeKind.TCP, "port", interval=0.1)
    start(backend, "never", [PY, "-c", never], ["port"], readiness=probe)
    wait_until(lambda: "booting-marker" in log_lines(backend, "never"), timeout=10)
    with pytest.raises(ComponentStartError) as info:
        backend.wait_ready("never", timeout=0.5)
    assert any("booting-marker" in note for note in info.value.__notes__)


def test_restart_is_counted(backend: Backend) -> None:
    start(backend, "again", ["sleep", "60"])
    backend.restart("again")
    st = backend.status("again")
    assert st.running
    assert st.restarts == 1


CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    host, port = sys.argv[1].rsplit(":", 1)
    for _ in range(600):  # at most 10 tries a second for 60 s
        try:
            with socket.create_connection((host, int(port)), timeout=0.3) as s:
                s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                print("ok" if s.recv(12).startswith(b"HTTP") else "fail", flush=True)
        except OSError:
            print("fail", flush=True)
        time.sleep(0.1)
    """
)


def _last(backend: Backend, name: str, n: int) -> list[str]:
    return log_lines(backend, name)[-n:]


def test_isolate_cuts_traffic_and_heal_restores_it(backend: Backend) -> None:
    placement = backend.plan("server", ["http"])
    port = str(placement.port("http"))
    backend.start(
        WorkloadSpec(
            "server",
            (PY, "-m", "http.server", port, "--bind", placement.bind_host),
            placement,
            readiness=Probe(ProbeKind.TCP, "http", interval=0.1),
        )
    )
    backend.wait_ready("server", timeout=15)
    start(backend, "client", [PY, "-c", CLIENT, placement.internal("http")])
    wait_until(lambda: _last(backend, "client", 2) == ["ok"] * 2, timeout=15, what="traffic")
    backend.isolate("server", ["client"])
    wait_until(lambda: _last(backend, "client", 3) == ["fail"] * 3, timeout=10, what="cut")
    backend.heal("server")
    wait_until(lambda: _last(backend, "client", 2) == ["ok"] * 2, timeout=10, what="healed")


def test_unknown_names_are_config_errors(backend: Backend) -> None:
    start(backend, "known", ["sleep", "60"])
    calls: dict[str, Callable[[], object]] = {
        "stop": lambda: backend.stop("ghost"),
        "kill": lambda: backend.kill("ghost"),
        "pause": lambda: backend.pause("ghost"),
        "resume": lambda: backend.resume("ghost"),
        "restart": lambda: backend.restart("ghost"),
        "status": lambda: backend.status("ghost"),
        "stats": lambda: backend.stats("ghost"),
        "set_limits": lambda: backend.set_limits("ghost", cpu=1),
        "isolate": lambda: backend.isolate("ghost", ["known"]),
        "isolate peer": lambda: backend.isolate("known", ["ghost"]),
        "heal": lambda: backend.heal("ghost"),
        "log_path": lambda: backend.log_path("ghost"),
        "wait_ready": lambda: backend.wait_ready("ghost", 1),
    }
    accepted = []
    for what, call in calls.items():
        try:
            call()
        except ConfigError as err:
            assert "ghost" in str(err), what
        else:
            accepted.append(what)
    assert accepted == []


def test_close_leaves_nothing_behind(backend: Backend, run: Run) -> None:
    start(backend, "a", [PY, "-c", COUNTER], ["p"], memory_limit=128 << 20)
    start(backend, "b", ["sleep", "60"], ["p"], cpu_limit=0.5)
    backend.pause("a")
    backend.isolate("b", ["a"])
    assert leftovers(run.run_id)  # the check sees what is there
    backend.close()
    backend.close()  # idempotent
    assert [e.action for e in run.ledger.pending()] == []
    assert leftovers(run.run_id, but_watchdog=True) == []
    assert run.close() == []
    assert not run.dir.exists()


OWNER = textwrap.dedent(
    """
    import sys
    from harness.backends.base import WorkloadSpec
    from harness.run import Run
    from tests.contract.conftest import make_backend

    run = Run.open(watchdog=False)  # so that clean, not the watchdog, does the reaping
    backend = make_backend(sys.argv[1], run)
    for name in ("one", "two"):
        p = backend.plan(name, ["port"])
        backend.start(WorkloadSpec(name, ("sleep", "60"), p, memory_limit=64 << 20))
    backend.pause("one")
    backend.isolate("one", ["two"])
    print(run.run_id, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.parametrize("name", BACKENDS)
def test_sigkilled_owner_is_reaped_by_clean(name: str, state_dir: Path) -> None:
    if name == "local" and os.geteuid() != 0:
        pytest.skip("the local backend contract needs root (cgroups, iptables): run as root")
    root = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [PY, "-c", OWNER, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert owner.stdout is not None
        run_id = owner.stdout.readline().strip()
        if not run_id:
            owner.wait(30)
            assert owner.stderr is not None
            err = owner.stderr.read()
            if "Skipped" in err:
                pytest.skip(err.strip().splitlines()[-1])
            pytest.fail(f"owner did not start: {err}")
        assert leftovers(run_id)
    finally:
        owner.kill()
        owner.wait()
    reports = clean_runs(state_dir)
    assert [(r.run_id, r.errors) for r in reports] == [(run_id, [])]
    assert leftovers(run_id) == []
    assert not (state_dir / "runs" / f"faultline-{run_id}").exists()
    assert list((state_dir / "ports").glob("*.lock")) == []
    assert clean_runs(state_dir) == []


def test_every_backend_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.name in BACKENDS
