"""Toxiproxy faults against the real toxiproxy-server started through LocalBackend.

Upstream is a small echo server on 127.0.0.1 in this process; every effect is
measured through the proxy. Needs toxiproxy-server (the skip says how to build it).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import cleanup
from harness.backends.local import LocalBackend
from harness.components.toxiproxy import Proxy, Toxiproxy, toxiproxy_binary
from harness.errors import MissingDependency
from harness.faults import Bandwidth, Down, Latency, ResetPeer, Scope, Timeout
from harness.run import Run, clean_runs
from harness.wait import wait_for, wait_until
from tests.integration.conftest import spawn_harness, wait_reaped

pytestmark = [pytest.mark.timeout(120)]

try:
    toxiproxy_binary()
except MissingDependency as _err:
    pytestmark.append(pytest.mark.skip(reason=f"toxiproxy-server missing: {_err.fix}"))


class EchoServer:
    """Echoes every byte back; a thread per connection; loopback only."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def round_trip(proxy: Proxy, payload: bytes = b"x", timeout: float = 5.0) -> float:
    """Seconds for ``payload`` to come back through the proxy (on a new connection)."""
    with socket.create_connection(proxy.listen_hostport, timeout=timeout) as s:
        start = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the proxy")
            got += chunk
        return time.monotonic() - start


@pytest.fixture(scope="module")
def env(state_dir: Path) -> Iterator[tuple[Run, LocalBackend, Toxiproxy, EchoServer]]:
    run = Run.open(state_dir, watchdog=False)
    backend = LocalBackend(run)
    echo = EchoServer()
    try:
        with Toxiproxy(backend, run) as tp:
            yield run, backend, tp, echo
    finally:
        echo.close()
        backend.close()
        assert run.close() == []
        assert cleanup.tagged_pids(run.run_id) == []


@pytest.fixture
def proxy(
    env: tuple[Run, LocalBackend, Toxiproxy, EchoServer], request: pytest.FixtureRequest
) -> Proxy:
    _, _, tp, echo = env
    return tp.proxy(request.node.name.split("[")[0][-40:].replace("_", "-"), echo.address)


@pytest.fixture
def scope(env: tuple[Run, LocalBackend, Toxiproxy, EchoServer]) -> Scope:
    run, backend, _, _ = env
    return Scope(run, backend)


def test_latency_is_measured_through_the_proxy_and_reverted(scope: Scope, proxy: Proxy) -> None:
    assert round_trip(proxy) < 0.4
    with Latency(scope, proxy, ms=400, jitter=0, max_duration=30) as fault:
        assert proxy.toxic_names() == [fault.toxic]
        assert round_trip(proxy) >= 0.4
    assert proxy.toxic_names() == []
    assert round_trip(proxy) < 0.4
    assert scope.run.timeline.events("fault.reverted", "latency")[-1].detail["leftovers"] == []


def test_down_refuses_connections_until_reverted(scope: Scope, proxy: Proxy) -> None:
    with Down(scope, proxy, max_duration=30):
        assert proxy.state()["enabled"] is False
        with pytest.raises(OSError):
            round_trip(proxy, timeout=1)
    assert proxy.state()["enabled"] is True
    round_trip(proxy)


def test_timeout_holds_data(scope: Scope, proxy: Proxy) -> None:
    with Timeout(scope, proxy, ms=0, max_duration=30), pytest.raises(TimeoutError):
        round_trip(proxy, timeout=0.5)
    round_trip(proxy)


def test_reset_peer_resets_connections(scope: Scope, proxy: Proxy) -> None:
    with ResetPeer(scope, proxy, ms=0, max_duration=30), pytest.raises(ConnectionError):
        round_trip(proxy, timeout=2)
    round_trip(proxy)


def test_bandwidth_slows_a_transfer(scope: Scope, proxy: Proxy) -> None:
    payload = b"y" * 32 * 1024
    with Bandwidth(scope, proxy, kbps=16, max_duration=30):
        slow = round_trip(proxy, payload, timeout=10)
    assert slow >= 1.0  # 32 KB at 16 KB/s: about 2 s
    assert round_trip(proxy, payload) < slow


def test_the_proxy_server_dying_mid_fault_leaves_nothing(
    env: tuple[Run, LocalBackend, Toxiproxy, EchoServer], scope: Scope
) -> None:
    run, backend, _, echo = env
    with Toxiproxy(backend, run, name="toxiproxy-doomed") as tp:
        proxy = tp.proxy("doomed", echo.address)
        fault = Latency(scope, proxy, ms=100, max_duration=30).inject()
        backend.kill("toxiproxy-doomed", signal.SIGKILL)
        wait_until(lambda: not backend.status("toxiproxy-doomed").running, timeout=10)
        fault.revert()  # neither hangs nor claims a leftover: the toxic died with its server
    assert all(e.reverted for e in run.ledger.entries() if e.action.startswith("latency"))


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from harness.backends.local import LocalBackend
    from harness.components.toxiproxy import Toxiproxy
    from harness.faults import Latency, Scope
    from harness.run import Run

    echo, max_duration = sys.argv[1], float(sys.argv[2])
    run = Run.open()
    backend = LocalBackend(run)
    try:
        tp = Toxiproxy(backend, run).start()
        proxy = tp.proxy("child", echo)
        with Latency(Scope(run, backend), proxy, ms=300, max_duration=max_duration) as f:
            print(json.dumps({"api": proxy.api, "proxy": proxy.name, "run_dir": str(run.dir),
                              "run_id": run.run_id}), flush=True)
            time.sleep(60)
    finally:
        print(json.dumps({"toxics_after_revert": proxy.toxic_names()}), flush=True)
        backend.close()
        print(json.dumps({"left": run.close()}), flush=True)
    """
)


def start_child(
    state_dir: Path, echo: EchoServer, max_duration: float
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    child, info = spawn_harness(CHILD, echo.address, str(max_duration), state_dir=state_dir)
    return child, info


def toxics(info: dict[str, str]) -> list[str] | None:
    """The child's proxy toxics, None once its server is gone."""
    try:
        resp = httpx.get(f"{info['api']}/proxies/{info['proxy']}", timeout=2)
    except httpx.HTTPError:
        return None
    return [t["name"] for t in resp.json()["toxics"]]


def test_sigint_reverts(
    env: tuple[Run, LocalBackend, Toxiproxy, EchoServer], state_dir: Path
) -> None:
    child, info = start_child(state_dir, env[3], max_duration=60)
    assert toxics(info) != []
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=30)
    lines = [json.loads(x) for x in out.splitlines()]
    assert {"toxics_after_revert": []} in lines
    assert {"left": []} in lines
    assert cleanup.tagged_pids(info["run_id"]) == []
    assert not Path(info["run_dir"]).exists()


def test_a_hung_harness_is_reverted_by_the_watchdog_at_the_deadline(
    env: tuple[Run, LocalBackend, Toxiproxy, EchoServer], state_dir: Path
) -> None:
    child, info = start_child(state_dir, env[3], max_duration=2)
    try:
        child.send_signal(signal.SIGSTOP)  # the harness hangs, its proxy server lives on
        # The toxic is gone by the deadline (+ the watchdog's poll), the server still up.
        wait_until(lambda: toxics(info) == [], timeout=2 + 15, what="watchdog revert")
    finally:
        child.kill()
        child.wait()
    # The watchdog itself carries the run's tag until it has exited.
    wait_reaped(info, timeout=15, what="watchdog reaping")


def test_sigkill_is_reaped_by_the_watchdog_without_clean(
    env: tuple[Run, LocalBackend, Toxiproxy, EchoServer], state_dir: Path
) -> None:
    child, info = start_child(state_dir, env[3], max_duration=5)
    child.kill()
    child.wait()
    wait_until(
        lambda: toxics(info) is None and cleanup.tagged_pids(info["run_id"]) == [],
        timeout=5 + 15,
        what="watchdog reaping",
    )
    wait_for(lambda: not Path(info["run_dir"]).exists(), timeout=15, what="run dir removed")
    assert clean_runs(state_dir / "children") == []
