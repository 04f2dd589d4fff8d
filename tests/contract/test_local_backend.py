"""What only the local backend promises: cgroup membership from exec, freezer
pauses, ledger discipline, placement, and isolation that spares the harness."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.errors import ComponentStartError, ConfigError
from harness.pki import Pki
from harness.run import Run
from harness.wait import port_open, wait_until
from tests.contract.conftest import leftovers

PY = sys.executable


@pytest.fixture
def local(run: Run) -> Iterator[LocalBackend]:
    if os.geteuid() != 0:
        pytest.skip("the local backend needs root for cgroups and iptables: run as root")
    backend = LocalBackend(run)
    yield backend
    backend.close()
    assert run.close() == []
    assert leftovers(run.run_id) == []


def test_process_is_in_its_cgroup_from_exec(local: LocalBackend, run: Run) -> None:
    p = local.plan("cg", [])
    local.start(WorkloadSpec("cg", (PY, "-c", "print(open('/proc/self/cgroup').read())"), p))
    want = f"faultline/{run.run_id}/cg"
    wait_until(lambda: want in local.log_path("cg").read_text(), timeout=10, what="cgroup line")
    cgroup = local.cgroup("cg")
    assert cgroup is not None
    lines = local.log_path("cg").read_text().splitlines()
    memory = [line for line in lines if ":memory:" in line or line.startswith("0::")]
    assert memory
    assert all(want in line for line in memory)


def test_pause_freezes_the_cgroup(local: LocalBackend) -> None:
    p = local.plan("ice", [])
    local.start(WorkloadSpec("ice", ("sleep", "60"), p))
    cgroup = local.cgroup("ice")
    assert cgroup is not None and cgroup.freeze_file is not None
    local.pause("ice")
    assert cgroup.frozen() is True
    local.resume("ice")
    assert cgroup.frozen() is False


def test_every_mutation_is_recorded_before_it_is_made(local: LocalBackend, run: Run) -> None:
    p = local.plan("led", ["a"])
    local.start(WorkloadSpec("led", ("sleep", "60"), p, memory_limit=64 << 20))
    local.pause("led")
    ops = [e.inverse["op"] for e in run.ledger.entries()]
    assert ops == [
        "release_port_lock",
        "remove_empty_cgroups",
        "remove_cgroup",  # the run's level
        "remove_cgroup",  # the workload's
        "kill_tagged",
        "write_file",  # thaw
    ]
    local.resume("led")
    assert run.ledger.entries()[-1].reverted


def test_placement_is_on_loopback_with_distinct_ports(local: LocalBackend, run: Run) -> None:
    a = local.plan("pa", ["x", "y"], files=["cert"])
    b = local.plan("pb", ["x"])
    ports = [*a.ports.values(), *b.ports.values()]
    assert len(set(ports)) == 3
    assert (a.bind_host, a.internal_host) == ("127.0.0.1", "127.0.0.1")
    assert a.external_ports == a.ports
    assert Path(a.path("cert")).is_relative_to(run.dir)


def test_files_are_placed_where_the_plan_said(
    local: LocalBackend, run: Run, tmp_path: Path
) -> None:
    src = tmp_path / "ca.pem"
    src.write_text("not really a cert")
    p = local.plan("files", [], files=["ca"])
    local.start(WorkloadSpec("files", ("cat", p.path("ca")), p, files={"ca": src}))
    wait_until(lambda: "not really" in local.log_path("files").read_text(), timeout=10)


def test_bad_input_is_refused_before_any_side_effect(
    local: LocalBackend, run: Run, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="name"):
        local.plan("Bad Name", [])
    with pytest.raises(ConfigError, match="plain file name"):
        local.plan("traversal", [], files=["../../etc/cron.d/x"])
    p = local.plan("ok", [])
    with pytest.raises(ConfigError, match="ok"):
        local.plan("ok", [])
    with pytest.raises(ConfigError, match="not found"):
        local.start(WorkloadSpec("ok", ("no-such-binary-here",), p))
    with pytest.raises(ConfigError, match="does not exist"):
        local.start(WorkloadSpec("ok", ("true",), p, files={"x": tmp_path / "missing"}))
    with pytest.raises(ConfigError, match="probe port"):
        local.start(WorkloadSpec("ok", ("true",), p, liveness=Probe(ProbeKind.TCP, "nope")))
    other = local.plan("other", [])
    with pytest.raises(ConfigError, match="not planned"):
        local.start(WorkloadSpec("stranger", ("true",), other))
    with pytest.raises(ConfigError, match="cpu"):
        local.start(WorkloadSpec("ok", ("sleep", "60"), p))
        local.set_limits("ok", cpu=-1)
    assert [e.inverse["op"] for e in run.ledger.entries()][-1] == "kill_tagged"


def test_isolation_spares_the_harness(local: LocalBackend) -> None:
    p = local.plan("srv", ["tcp"])
    port = p.port("tcp")
    serve = f"import socket,time\ns=socket.create_server(('127.0.0.1',{port}))\ntime.sleep(60)"
    local.start(WorkloadSpec("srv", (PY, "-c", serve), p))
    local.start(WorkloadSpec("peer", ("sleep", "60"), local.plan("peer", [])))
    wait_until(lambda: port_open("127.0.0.1", port), timeout=10)
    local.isolate("srv", ["peer"])
    with pytest.raises(ConfigError, match="already isolated"):
        local.isolate("srv", ["peer"])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    local.heal("srv")
    local.heal("srv")  # idempotent


MTLS_SERVER = textwrap.dedent(
    """
    import http.server, ssl, sys
    port, ca, cert, key = sys.argv[1:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = http.server.HTTPServer(("127.0.0.1", int(port)), http.server.SimpleHTTPRequestHandler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()
    """
)


def test_https_probe_presents_the_client_cert(local: LocalBackend, run: Run) -> None:
    pki = Pki.create(run)
    server, client = pki.server("mtls"), pki.client("prober")
    files = {"ca": server.ca, "cert": server.cert, "key": server.key}
    files |= {"client-cert": client.cert, "client-key": client.key}
    with_cert = Probe(ProbeKind.HTTPS, "https", ca_file="ca", cert_file="client-cert",
                      key_file="client-key", interval=0.2)  # fmt: skip
    without = Probe(ProbeKind.HTTPS, "https", ca_file="ca", interval=0.2)
    ports = {}
    for name, probe in (("mtls-ok", with_cert), ("mtls-anon", without)):
        p = local.plan(name, ["https"])
        ports[name] = p.port("https")
        args = (str(p.port("https")), str(server.ca), str(server.cert), str(server.key))
        local.start(
            WorkloadSpec(name, (PY, "-c", MTLS_SERVER, *args), p, files=files, readiness=probe)
        )
    local.wait_ready("mtls-ok", timeout=15)
    wait_until(lambda: port_open("127.0.0.1", ports["mtls-anon"]), timeout=10)
    with pytest.raises(ComponentStartError):
        local.wait_ready("mtls-anon", timeout=1)
