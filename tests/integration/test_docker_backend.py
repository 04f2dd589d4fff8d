"""The Docker backend against a real engine, with images built from host binaries.

Needs a running Docker engine (``apt-get install -y docker.io``, then
``dockerd &``) and busybox-static (``apt-get install -y busybox-static``);
skips with that fix when either is missing. No registry is used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.backends.base import (
    Backend,
    Probe,
    ProbeKind,
    RestartMode,
    RestartPolicy,
    WorkloadSpec,
)
from harness.errors import BackendUnavailable
from harness.run import Run, clean_runs
from harness.wait import wait_for, wait_until

docker = pytest.importorskip("docker")
from harness.backends.docker import DockerBackend, Event, last_exit  # noqa: E402
from harness.backends.images import image_for_binary  # noqa: E402

BUSYBOX_TOOLS = ("sh", "nc", "httpd", "dd", "sleep", "echo")


@pytest.fixture(scope="module")
def busybox(engine: Any) -> str:
    try:
        return image_for_binary(engine, "busybox", aliases=BUSYBOX_TOOLS)
    except BackendUnavailable as err:
        pytest.skip(f"{err} (apt-get install -y busybox-static)")


def _leftovers(client: Any, run_id: str) -> list[str]:
    label = {"label": f"faultline.run={run_id}"}
    return [
        *(f"container {c.name}" for c in client.containers.list(all=True, filters=label)),
        *(f"network {n.name}" for n in client.networks.list(filters=label)),
        *(f"volume {v.name}" for v in client.volumes.list(filters=label)),
    ]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Any) -> Iterator[Run]:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    with Run.open(tmp_path / "state") as r:
        yield r
    assert _leftovers(engine, r.run_id) == []
    assert not r.dir.exists()


@pytest.fixture
def backend(run: Run) -> Iterator[DockerBackend]:
    b = DockerBackend(run)
    try:
        yield b
    finally:
        b.close()


def _spec(backend: DockerBackend, name: str, image: str, script: str, **kw: Any) -> WorkloadSpec:
    placement = backend.plan(name, ["http"], files=list(kw.get("files", {})))
    command = ("sh", "-c", script.format(port=placement.port("http")))
    return WorkloadSpec(name=name, command=command, placement=placement, image=image, **kw)


def _wait_status(backend: DockerBackend, name: str, pred: Any, what: str) -> Any:
    def probe() -> Any:
        status = backend.status(name)
        return status if pred(status) else None

    return wait_for(probe, timeout=30, what=what)


def test_serves_a_mounted_file_on_a_loopback_port(
    backend: DockerBackend, busybox: str, engine: Any, tmp_path: Path
) -> None:
    assert isinstance(backend, Backend)
    page = tmp_path / "faultline-index.html"
    page.write_text("hello from faultline\n")
    spec = _spec(
        backend,
        "web",
        busybox,
        "echo web-starting; exec httpd -f -p 0.0.0.0:{port} -h /faultline/files",
        files={"index.html": page, "same.html": page},  # two names for one host file
        liveness=Probe(ProbeKind.TCP, "http", interval=0.2, timeout=1.0),
        readiness=Probe(ProbeKind.HTTP, "http", path="/index.html", interval=0.2),
    )
    backend.start(spec)
    backend.wait_ready("web", timeout=30)

    url = spec.placement.external_url("http", path="/index.html")
    assert httpx.get(url, timeout=5).text == "hello from faultline\n"
    same = spec.placement.external_url("http", path="/same.html")
    assert httpx.get(same, timeout=5).text == "hello from faultline\n"
    attrs = engine.containers.get(backend.container_id("web")).attrs
    labels = attrs["Config"]["Labels"]
    assert labels["faultline"] == "1"
    assert labels["faultline.run"] == backend.run.run_id
    bindings = attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}
    run_dir = backend.run.dir.resolve()
    # The run dir at its host path: data dirs need no mapping.
    assert attrs["HostConfig"]["Binds"] == [f"{run_dir}:{run_dir}:rw"]
    mounts = [(m["Source"], m["Target"], m["ReadOnly"]) for m in attrs["HostConfig"]["Mounts"]]
    assert mounts == [
        (str(page.resolve()), "/faultline/files/index.html", True),
        (str(page.resolve()), "/faultline/files/same.html", True),
    ]
    # The busybox image has a shell: the liveness probe became a Docker healthcheck.
    assert attrs["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"
    _wait_status(backend, "web", lambda s: s.healthy is True, "web healthy")
    wait_until(
        lambda: "web-starting" in backend.log_path("web").read_text(), timeout=10, what="log line"
    )


def test_limits_update_and_show_in_stats(backend: DockerBackend, busybox: str, engine: Any) -> None:
    spec = _spec(backend, "lim", busybox, "exec sleep 300", memory_limit=128 << 20, cpu_limit=1.0)
    backend.start(spec)
    host = engine.containers.get(backend.container_id("lim")).attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["CpuQuota"]) == (128 << 20, 128 << 20, 100_000)

    backend.set_limits("lim", cpu=0.25, memory=64 << 20)
    host = engine.containers.get(backend.container_id("lim")).attrs["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["CpuQuota"]) == (64 << 20, 64 << 20, 25_000)
    stats = backend.stats("lim")
    assert stats.memory_limit == 64 << 20
    assert 0 < stats.memory_bytes < 64 << 20

    backend.set_limits("lim")
    host = engine.containers.get(backend.container_id("lim")).attrs["HostConfig"]
    assert host["CpuQuota"] == -1
    assert host["Memory"] > 1 << 30  # Docker cannot drop the limit: the host's RAM stands in
    assert backend.stats("lim").memory_limit is None


def test_oom_kill_is_reported(backend: DockerBackend, busybox: str) -> None:
    # dd's 64 MiB block buffer is touched by the read from /dev/zero: over a 16 MiB limit.
    # The shell outlives dd by a second: when PID 1 itself dies of OOM, the engine misses
    # the cgroup's OOM notification now and then on cgroup v1 (see harness/backends/docker.py).
    script = "dd if=/dev/zero of=/dev/null bs=64M count=1; rc=$?; sleep 1; exit $rc"
    spec = _spec(backend, "hog", busybox, script, memory_limit=16 << 20)
    backend.start(spec)
    status = _wait_status(backend, "hog", lambda s: s.exit_code is not None, "hog exited")
    assert status.oom_killed
    assert status.exit_code == 137
    assert status.oom_kills >= 1
    assert not status.running


def test_on_failure_policy_restarts_up_to_its_limit(backend: DockerBackend, busybox: str) -> None:
    policy = RestartPolicy(mode=RestartMode.ON_FAILURE, max_restarts=2)
    backend.start(_spec(backend, "crash", busybox, "echo crashing; exit 3", restart=policy))
    status = _wait_status(
        backend, "crash", lambda s: s.restarts == 2 and not s.running, "two restarts"
    )
    assert status.exit_code == 3
    # The log follower copies each run's output, across the restarts.
    wait_until(
        lambda: backend.log_path("crash").read_text().count("crashing") == 3,
        timeout=10,
        what="three runs in the log",
    )


def test_kill_restarts_under_always_but_stop_does_not(backend: DockerBackend, busybox: str) -> None:
    policy = RestartPolicy(mode=RestartMode.ALWAYS)
    backend.start(_spec(backend, "svc", busybox, "exec sleep 300", restart=policy))
    _wait_status(backend, "svc", lambda s: s.running, "svc running")
    backend.kill("svc", signal.SIGKILL)
    # The restart count comes from the engine, the exit from its event stream,
    # which can lag a moment behind: wait for both.
    status = _wait_status(
        backend,
        "svc",
        lambda s: s.restarts >= 1 and s.running and s.exit_code is not None,
        "restart",
    )
    assert status.exit_code == 137
    assert not status.oom_killed

    backend.stop("svc", timeout=1)
    assert not backend.status("svc").running
    backend.stop("svc")  # idempotent
    backend.restart("svc")
    assert backend.status("svc").running


def test_pause_and_resume_are_ledgered(backend: DockerBackend, busybox: str) -> None:
    backend.start(_spec(backend, "p", busybox, "exec sleep 300"))
    backend.pause("p")
    assert backend.status("p").paused
    assert any("pause" in e.action for e in backend.run.ledger.pending())
    backend.resume("p")
    status = backend.status("p")
    assert status.running
    assert not status.paused
    assert not any("pause" in e.action for e in backend.run.ledger.pending())


def _reaches(client: Any, src_id: str, dst_id: str, network: str, port: int) -> bool:
    """An HTTP answer from ``dst``'s httpd, asked from inside ``src`` over ``network``."""
    # By IP: static glibc busybox cannot resolve names (no NSS in the image). Busybox's
    # minimal nc exits 0 even when it cannot connect: look for the answer instead.
    ip = client.containers.get(dst_id).attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    ask = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {ip} {port}"
    res = client.containers.get(src_id).exec_run(["sh", "-c", ask])
    return b"HTTP/1" in res.output


def test_isolate_cuts_peers_but_keeps_the_published_port(
    backend: DockerBackend, busybox: str, engine: Any, tmp_path: Path
) -> None:
    server = _spec(backend, "a", busybox, "exec httpd -f -p 0.0.0.0:{port} -h /tmp")
    backend.start(server)
    backend.start(_spec(backend, "b", busybox, "exec sleep 300"))
    a, b, net, port = (
        backend.container_id("a"),
        backend.container_id("b"),
        backend.network_name,
        server.placement.port("http"),
    )
    wait_until(lambda: _reaches(engine, b, a, net, port), timeout=15, what="b reaches a")

    backend.isolate("a", ["b"])
    assert net not in engine.containers.get(a).attrs["NetworkSettings"]["Networks"]
    # Not through the publishing network either (inter-container traffic is off there),
    # while the harness still reaches the published port.
    assert not _reaches(engine, b, a, backend.ports_network_name, port)
    url = server.placement.external_url("http")
    assert httpx.get(url, timeout=5).status_code == 404  # httpd answers: reachable

    backend.heal("a")
    wait_until(lambda: _reaches(engine, b, a, net, port), timeout=15, what="b reaches a again")


def test_etcd_from_the_host_binary(backend: DockerBackend, tmp_path: Path) -> None:
    if not Path("/usr/bin/etcd").exists():
        pytest.skip("no etcd binary: apt-get install -y etcd-server etcd-client")
    p = backend.plan("etcd", ["client", "peer"])
    c, pp = p.port("client"), p.port("peer")
    spec = WorkloadSpec(
        name="etcd",
        command=(
            "etcd", "--name", "etcd", "--data-dir", "/tmp/etcd",
            "--listen-client-urls", f"http://0.0.0.0:{c}",
            "--advertise-client-urls", f"http://127.0.0.1:{c}",
            "--listen-peer-urls", f"http://0.0.0.0:{pp}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
            "--initial-cluster", f"etcd=http://127.0.0.1:{pp}",
        ),
        placement=p,
        readiness=Probe(ProbeKind.HTTP, "client", path="/health"),
    )  # fmt: skip
    backend.start(spec)
    backend.wait_ready("etcd", timeout=30)
    url = p.external_url("client")
    env = {**os.environ, "ETCDCTL_API": "3"}
    ctl = ["etcdctl", f"--endpoints={url}"]
    subprocess.run([*ctl, "put", "faultline", "ok"], check=True, env=env, capture_output=True)
    got = subprocess.run([*ctl, "get", "--print-value-only", "faultline"], env=env,
                         check=True, capture_output=True, text=True)  # fmt: skip
    assert got.stdout.strip() == "ok"
    assert httpx.get(p.external_url("client", path="/health"), timeout=5).json()["health"] == "true"


_OWNER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from harness.backends.base import WorkloadSpec
    from harness.backends.docker import DockerBackend
    from harness.run import Run

    run = Run.open(Path(sys.argv[1]), watchdog=False)
    backend = DockerBackend(run)
    p = backend.plan("victim", ["http"])
    backend.start(WorkloadSpec("victim", ("sleep", "300"), p, image=sys.argv[2]))
    print(json.dumps({"run_id": run.run_id}), flush=True)
    sys.stdin.read()
    """
)


def test_sigkilled_owner_is_reaped_by_clean(
    busybox: str, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "state"
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(root))
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(root), busybox],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        run_id = json.loads(proc.stdout.readline())["run_id"]
        assert len(_leftovers(engine, run_id)) == 3  # the container and two networks
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    reports = clean_runs(root)
    assert [(r.run_id, r.errors) for r in reports] == [(run_id, [])]
    assert _leftovers(engine, run_id) == []
    assert clean_runs(root) == []  # idempotent: the second pass finds nothing
    assert list((root / "ports").glob("*.lock")) == []


def test_tls_etcd_cluster_keeps_its_data_dirs_on_the_host(backend: DockerBackend) -> None:
    # EtcdCluster passes host paths under the run dir as --data-dir; the backend
    # mounts the run dir at the same path, so the data survives the containers.
    if not Path("/usr/bin/etcd").exists():
        pytest.skip("no etcd binary: apt-get install -y etcd-server etcd-client")
    from harness.components.etcd import EtcdCluster
    from harness.pki import Pki

    run = backend.run
    with EtcdCluster(backend, run, Pki.create(run), size=3, name="ondisk") as etcd:
        with etcd.client() as client:
            client.put("faultline", "on the host")
            got = client.get("faultline")
        assert got is not None and got.value == b"on the host"
    for member in etcd.member_names:
        assert (run.dir / "ondisk" / member / "member" / "wal").is_dir(), member


# --- last_exit: which exit was an OOM kill, from events, State and the kernel log ---------
# Pure logic over recorded engine data; times in ns since the epoch, 1 s = 10**9.
S = 10**9
_RUNNING = {"Running": True, "FinishedAt": "0001-01-01T00:00:00Z"}


def _exited(code: int, oom: bool, started: int, finished: int) -> dict[str, Any]:
    def stamp(sec: int) -> str:
        return f"2026-01-01T00:00:{sec:02d}.5Z"  # second ``sec`` + 0.5 s, as Docker writes it

    return {
        "Running": False,
        "ExitCode": code,
        "OOMKilled": oom,
        "StartedAt": stamp(started),
        "FinishedAt": stamp(finished),
    }


T0 = 1_767_225_600 * S + S // 2  # 2026-01-01T00:00:00.5Z


def _never() -> list[int]:
    raise AssertionError("the kernel log is only read for an unexplained exit 137")


@pytest.mark.parametrize(
    ("events", "state", "kernel", "expected"),
    [
        pytest.param(  # the oom event 140 ms after the die, State.OOMKilled False
            [("start", T0, None), ("die", T0 + S, 137), ("oom", T0 + S + S // 7, None)],
            _exited(137, False, 0, 1),
            _never,
            (1, 137, True),
            id="late-oom-event",
        ),
        pytest.param(  # no oom event at all: the kernel log within the run decides
            [("start", T0, None), ("die", T0 + S, 137)],
            _exited(137, False, 0, 1),
            lambda: [T0 + S - 1000],
            (1, 137, True),
            id="kernel-log-only",
        ),
        pytest.param(  # a plain SIGKILL: no event, nothing in the kernel log
            [("start", T0, None), ("die", T0 + S, 137)],
            _exited(137, False, 0, 1),
            list,
            (0, 137, False),
            id="sigkill",
        ),
        pytest.param(  # OOM in run 1, restarted by the policy and running: State forgot it
            [("start", T0, None), ("oom", T0 + S, None), ("die", T0 + S, 137),
             ("start", T0 + 2 * S, None)],
            _RUNNING,
            _never,
            (1, 137, True),
            id="oom-then-restarted",
        ),
        pytest.param(  # OOM in run 1, SIGKILL in run 2: the old kill is not the last exit's
            [("start", T0, None), ("oom", T0 + S, None), ("die", T0 + S, 137),
             ("start", T0 + 2 * S, None), ("die", T0 + 3 * S, 137)],
            _exited(137, False, 2, 3),
            lambda: [T0 + S],
            (1, 137, False),
            id="old-oom-other-run",
        ),
        pytest.param(  # two oom events for one process (CI, orderd-oom): one kill
            [("start", T0, None), ("oom", T0 + S, None), ("oom", T0 + S + S // 5, None),
             ("die", T0 + S + S // 4, 137)],
            _exited(137, True, 0, 1),
            _never,
            (1, 137, True),
            id="double-oom-event",
        ),
        pytest.param(  # one kill in each of two runs, the second one's event late
            [("start", T0, None), ("oom", T0 + S, None), ("die", T0 + S, 137),
             ("start", T0 + 2 * S, None), ("die", T0 + 3 * S, 137),
             ("oom", T0 + 3 * S + S // 7, None)],
            _exited(137, False, 2, 3),
            _never,
            (2, 137, True),
            id="one-kill-per-run",
        ),
        pytest.param(
            [("start", T0, None)], _RUNNING, _never, (0, None, False), id="never-exited"
        ),
    ],
)  # fmt: skip
def test_last_exit_attributes_oom_kills_to_their_run(
    events: list[Event], state: dict[str, Any], kernel: Any, expected: tuple[int, int, bool]
) -> None:
    assert last_exit(events, state, kernel) == expected
