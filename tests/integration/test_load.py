"""LoadGenerator against real targets: orderd (HTTP and gRPC), a TLS etcd, a failing stub.

Each test starts locust in subprocesses with small rates and durations, and
checks that nothing tagged with the run is left afterwards, whichever way the
harness ended: stop(), SIGINT, or SIGKILL followed by ``clean_runs``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

import httpx
import pytest

from harness import cleanup, gobuild
from harness.errors import ComponentStartError, MissingDependency
from harness.load import LoadGenerator, Phase
from harness.pki import Pki
from harness.run import Run, clean_runs
from harness.wait import port_open, wait_for

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "fixtures" / "locust" / "stub_orderd.py"


@contextlib.contextmanager
def server(args: list[str], timeout: float = 20.0) -> Iterator[dict[str, str]]:
    """Start a server that prints one JSON line with its addresses once it listens."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                pytest.fail(f"{args[0]} printed no listening line within {timeout}s")
        yield json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def orderd() -> Iterator[dict[str, str]]:
    try:
        binary = gobuild.build("orderd")
    except MissingDependency as err:
        pytest.skip(f"orderd cannot be built: {err.what}: {err.fix}")
    addrs = ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]
    with server([str(binary), *addrs, "--admin-addr", "127.0.0.1:0"]) as listening:
        yield listening


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    r = Run.open()
    try:
        yield r
    finally:
        assert r.close() == []
        assert cleanup.tagged_pids(r.run_id) == []


def test_http_smoke_against_orderd(run: Run, orderd: dict[str, str]) -> None:
    host = f"http://{orderd['http']}"
    with LoadGenerator(
        run, locustfile="orderd_http", host=host, rate=10, duration=3, users=1
    ) as lg:
        summary = lg.wait()
    assert cleanup.tagged_pids(run.run_id, "load") == []
    assert summary["total"]["requests"] >= 10
    assert summary["total"]["failures"] == 0
    # Tasks are drawn at random by weight: the heaviest and most of the rest show up.
    assert "create_order" in summary["endpoints"] and len(summary["endpoints"]) >= 3
    assert summary["exit_code"] == 0


def test_a_broken_user_locustfile_fails_start_with_its_log(run: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text("raise RuntimeError('boom in the locustfile')\n")
    load = LoadGenerator(run, locustfile=broken, host="http://127.0.0.1:9", rate=1, duration=5)
    with pytest.raises(ComponentStartError) as err, load:
        pytest.fail("start() should have failed")
    assert "boom in the locustfile" in "\n".join(err.value.__notes__)
    assert cleanup.tagged_pids(run.run_id, "load") == []
    assert all(e.reverted for e in run.ledger.entries())


@pytest.fixture
def grpc_stub_env(tmp_path: Path) -> dict[str, str]:
    """Nothing if harness._proto has the stubs; else generate them and point PYTHONPATH there."""
    if importlib.util.find_spec("harness._proto") is not None:
        return {}
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("gRPC stubs need grpcio-tools: .venv/bin/pip install grpcio-tools")
    out = tmp_path / "stubs"
    out.mkdir()
    proto = REPO / "go_targets" / "proto"
    subprocess.run(
        [
            *(sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}"),
            *(f"--python_out={out}", f"--grpc_python_out={out}", str(proto / "orders.proto")),
        ],
        check=True,
    )
    return {"PYTHONPATH": str(out)}


def test_grpc_smoke_against_orderd(
    run: Run, orderd: dict[str, str], grpc_stub_env: dict[str, str]
) -> None:
    load = LoadGenerator(
        run,
        locustfile="orderd_grpc",
        host=orderd["grpc"],
        rate=10,
        duration=3,
        users=1,
        env=grpc_stub_env,
    )
    with load:
        summary = load.wait()
    assert summary["total"]["requests"] >= 10
    assert summary["total"]["failures"] == 0
    # Tasks are drawn at random by weight: the heaviest and most of the rest show up.
    assert "create_order" in summary["endpoints"] and len(summary["endpoints"]) >= 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def etcd_tls(run: Run) -> dict[str, str]:
    """A raw one-member etcd with client-cert TLS, started as a tagged workload of the run."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed: apt-get install -y etcd-server etcd-client")
    pki = Pki.create(run)
    # etcd's JSON gateway dials etcd's own gRPC port with this cert: it must be a client too.
    server_ca, server_cert, server_key = pki.peer("etcd")
    client = pki.client("load")
    client_port, peer_port = _free_port(), _free_port()
    client_url, peer_url = f"https://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    data = run.subdir("etcd") / "data"
    seq = run.ledger.record(
        "start etcd for the load test",
        {"op": "kill_tagged", "run_id": run.run_id, "workload": "etcd"},
    )
    log = open(run.dir / "etcd" / "etcd.log", "wb")  # noqa: SIM115 - the child keeps it
    with log:
        subprocess.Popen(
            [
                *("etcd", "--name", "m0", "--data-dir", str(data)),
                *("--listen-client-urls", client_url, "--advertise-client-urls", client_url),
                *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
                *("--initial-cluster", f"m0={peer_url}", "--client-cert-auth"),
                *("--trusted-ca-file", str(server_ca), "--cert-file", str(server_cert)),
                *("--key-file", str(server_key)),
            ],
            env={**os.environ, **run.child_env("etcd")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run.ledger.applied(seq)
    wait_for(lambda: port_open("127.0.0.1", client_port), timeout=20, what="etcd client port")
    return {
        "url": client_url,
        "FAULTLINE_ETCD_CA": str(client.ca),
        "FAULTLINE_ETCD_CERT": str(client.cert),
        "FAULTLINE_ETCD_KEY": str(client.key),
    }


def test_etcd_kv_smoke_over_mtls(run: Run, etcd_tls: dict[str, str]) -> None:
    env = {k: v for k, v in etcd_tls.items() if k.startswith("FAULTLINE_")}
    env["FAULTLINE_ETCD_PREFIX"] = "/faultline/loadtest/"
    with LoadGenerator(
        run, locustfile="etcd_kv", host=etcd_tls["url"], rate=20, duration=3, users=1, env=env
    ) as load:
        summary = load.wait()
    assert summary["total"]["failures"] == 0
    assert summary["total"]["requests"] >= 10
    assert {"put", "get", "txn"} <= set(summary["endpoints"])
    # The puts really landed: the prefix holds keys now.
    prefix = env["FAULTLINE_ETCD_PREFIX"].encode()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    tls = ssl.create_default_context(cafile=env["FAULTLINE_ETCD_CA"])
    tls.load_cert_chain(env["FAULTLINE_ETCD_CERT"], env["FAULTLINE_ETCD_KEY"])
    with httpx.Client(verify=tls) as http:
        resp = http.post(
            f"{etcd_tls['url']}/v3/kv/range",
            json={
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(end).decode(),
                "count_only": True,
            },
        )
    assert int(resp.json()["count"]) > 0


def test_stats_stream_onto_the_timeline_from_two_workers(run: Run) -> None:
    with server([sys.executable, str(STUB), "--fail-ratio", "0.2"]) as stub:
        load = LoadGenerator(
            run,
            locustfile="orderd_http",
            host=f"http://{stub['http']}",
            phases=[Phase("baseline", 3, 30), Phase("more", 4, 60)],
            users=4,
            workers=2,
        )
        with load:
            summary = load.wait()
    tl = run.timeline
    assert summary["sources"] == 2
    assert [e.name for e in tl.events("load.phase")] == ["baseline", "more"]
    names = set(tl.series_names())
    for series in ("rps", "fail_ratio", "success_ratio", "p50_ms", "p95_ms", "p99_ms"):
        assert f"load.{series}" in names
        assert f"load.create_order.{series}" in names
    # Seconds fully inside the second phase run near its rate (loose: a busy machine).
    targets = {round(s.t, 3): s.value for s in tl.series("load.target_rps")}
    more = [s.value for s in tl.series("load.rps") if targets.get(round(s.t, 3)) == 60]
    assert more and 30 <= mean(more[1:] or more) <= 90
    # The stub fails 20 % of requests; each second's ratio says so on average.
    assert 0.1 <= mean(s.value for s in tl.series("load.fail_ratio")) <= 0.3
    for p50, p99 in zip(tl.series("load.p50_ms"), tl.series("load.p99_ms"), strict=True):
        assert p50.value <= p99.value
    total = summary["total"]
    assert total["requests"] == sum(ep["requests"] for ep in summary["endpoints"].values())
    assert 0.1 <= total["fail_ratio"] <= 0.3


def test_stop_reaps_master_and_workers_at_once(run: Run, orderd: dict[str, str]) -> None:
    host = f"http://{orderd['http']}"
    load = LoadGenerator(run, locustfile="orderd_http", host=host, rate=5, duration=120, workers=1)
    with load:
        assert len(cleanup.tagged_pids(run.run_id, "load")) >= 2  # master + worker
    assert cleanup.tagged_pids(run.run_id, "load") == []
    assert all(e.reverted for e in run.ledger.entries())
    assert [e.name for e in run.timeline.events("load.stopped")] == ["load"]
    load.stop()  # idempotent
    assert len(run.timeline.events("load.stopped")) == 1


HARNESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from harness.load import LoadGenerator
    from harness.run import Run

    root, host, watchdog = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    with Run.open(root, watchdog=watchdog) as run:
        load = LoadGenerator(run, locustfile="orderd_http", host=host, rate=5, duration=120,
                             workers=1)
        with load:
            print(json.dumps({"run_id": run.run_id}), flush=True)
            load.wait()
    """
)


@contextlib.contextmanager
def harness_process(
    tmp_path: Path, host: str, *, watchdog: bool
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A harness in its own process with load running; yields its run id and process."""
    script = tmp_path / "harness_main.py"
    script.write_text(HARNESS)
    root = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), host, "1" if watchdog else "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAULTLINE_STATE_DIR": str(root)},
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(60), "the harness process did not start its load"
        run_id = json.loads(proc.stdout.readline())["run_id"]
        assert len(cleanup.tagged_pids(run_id, "load")) >= 2
        yield run_id, proc
    finally:
        proc.kill()
        proc.wait()
        # Whatever happened above, reap the run so no locust outlives the test.
        clean_runs(root)


def test_sigint_to_the_harness_reaps_locust(tmp_path: Path, orderd: dict[str, str]) -> None:
    # No watchdog: only the harness's own exit path can reap the load here.
    with harness_process(tmp_path, f"http://{orderd['http']}", watchdog=False) as (run_id, proc):
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert cleanup.tagged_pids(run_id) == []
        assert not any((tmp_path / "state" / "runs").glob(f"*{run_id}"))


def test_sigkill_of_the_harness_then_clean_runs_reaps_locust(
    tmp_path: Path, orderd: dict[str, str]
) -> None:
    with harness_process(tmp_path, f"http://{orderd['http']}", watchdog=False) as (run_id, proc):
        proc.kill()
        proc.wait()
        # Locust runs in its own session: it outlives the harness until reaped.
        assert len(cleanup.tagged_pids(run_id, "load")) >= 2
        [report] = clean_runs(tmp_path / "state", run_id=run_id)
        assert report.errors == []
        assert cleanup.tagged_pids(run_id) == []
