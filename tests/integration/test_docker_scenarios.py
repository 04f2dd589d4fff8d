"""What the scenarios need from the Docker backend beyond the compliance suite.

* Prometheus in a container scrapes other containers by their address on the
  run's network, while the harness keeps naming them by 127.0.0.1 (instance
  label, ``target_health``).
* CpuThrottle and MemoryLimit act on a container's limits through the
  backend, and their revert (in-process, or the ledger's inverse that the
  watchdog and ``faultline clean`` run) sets the engine's limits back.

Needs a running Docker engine and Go (the compliance workload); skips with the
fix otherwise. Leaves no container, network or run directory behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import cleanup
from harness.backends.base import WorkloadSpec
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.errors import ConfigError
from harness.faults.base import Scope
from harness.faults.process import CpuThrottle, MemoryLimit
from harness.run import Run
from harness.wait import wait_until

docker = pytest.importorskip("docker")
from harness.backends.docker import DockerBackend, _cgroup_usage  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Any
) -> Iterator[tuple[Run, DockerBackend]]:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    run = Run.open(tmp_path / "state")
    backend = DockerBackend(run)
    try:
        yield run, backend
    finally:
        backend.close()
        assert run.close() == []
        label = {"label": f"faultline.run={run.run_id}"}
        assert engine.containers.list(all=True, filters=label) == []
        assert engine.networks.list(filters=label) == []


def _start_busy(backend: DockerBackend, binary: str, name: str) -> str:
    placement = backend.plan(name, [])
    backend.start(WorkloadSpec(name, (binary, "busy", "--for", "60s"), placement))
    wait_until(lambda: backend.status(name).running, timeout=30, what=f"{name} running")
    return name


def test_prometheus_scrapes_a_container_by_its_run_network_address(
    env: tuple[Run, DockerBackend],
) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("apt-get install prometheus")
    run, backend = env
    # A second Prometheus scrapes the first one's /metrics, named by its 127.0.0.1 URL.
    with Prometheus(backend, run, [], name="prom-a", rule_files=[]) as a:
        target = ScrapeTarget.from_url("prom-a", a.url + "/metrics")
        with Prometheus(backend, run, [target], name="prom-b", rule_files=[]) as b:
            (health,) = b.target_health()
            assert health["health"] == "up", health
            # The harness's name for the target, not the container's.
            assert health["instance"] == target.address
            config = (run.dir / "prom-b-config" / "prometheus.yml").read_text()
            assert f'"prom-a:{target.address.rsplit(":", 1)[1]}"' in config


def test_a_host_address_that_is_no_workload_is_refused(env: tuple[Run, DockerBackend]) -> None:
    _, backend = env
    backend.plan("only", ["web"])
    with pytest.raises(ConfigError, match="not a published port"):
        backend.internal_address("127.0.0.1:1")


def test_cpu_throttle_sets_and_restores_container_limits(
    env: tuple[Run, DockerBackend], workload_bin: str
) -> None:
    run, backend = env
    name = _start_busy(backend, workload_bin, "spin")
    before = backend.limits(name)
    with CpuThrottle(
        Scope(run, backend, workloads=[name]), name, cores=0.1, max_duration=30
    ) as fault:
        cores, period, memory = backend.limits(name)
        assert (round(cores or 0, 3), period, memory) == (0.1, 100_000, before[2])
        wait_until(
            lambda: fault.throttled_periods()[name] > 3, timeout=20, what="throttled periods"
        )
    assert backend.limits(name) == before
    (rev,) = run.timeline.events("fault.reverted", "cpu_throttle")
    assert rev.detail["leftovers"] == []


def test_memory_limit_inverse_restores_limits_as_the_watchdog_would(
    env: tuple[Run, DockerBackend], workload_bin: str
) -> None:
    run, backend = env
    name = _start_busy(backend, workload_bin, "capped")
    before = backend.limits(name)
    fault = MemoryLimit(
        Scope(run, backend, workloads=[name]), name, bytes=64 << 20, max_duration=30
    ).inject()
    assert backend.limits(name)[2] == 64 << 20
    (entry,) = [e for e in run.ledger.entries() if e.inverse["op"] == "docker_update_limits"]
    # As the watchdog or `faultline clean` would: only the JSON args, twice (idempotent).
    cleanup.run_inverse(entry.inverse)
    assert backend.limits(name) == before
    cleanup.run_inverse(entry.inverse)
    assert backend.limits(name) == before
    fault.revert()
    assert backend.limits(name) == before
    foreign = {**entry.inverse, "run_id": "20000101-000000-000000"}
    with pytest.raises(ValueError, match="refusing"):
        cleanup.run_inverse(foreign)


def test_stats_come_from_the_cgroup_files_and_agree_with_the_engine(
    env: tuple[Run, DockerBackend], workload_bin: str, engine: Any
) -> None:
    _, backend = env
    name = _start_busy(backend, workload_bin, "measured")
    container = engine.containers.get(backend.container_id(name))
    # The fast path is taken on this host (the engine is local, we are root).
    assert _cgroup_usage(int(container.attrs["State"]["Pid"]), container.id) is not None
    api = container.stats(stream=False, one_shot=True)
    ours = backend.stats(name)
    api_cpu = int(api["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
    assert api_cpu <= ours.cpu_seconds  # read after the engine's, and CPU time only grows
    inner = api["memory_stats"]["stats"]
    api_mem = int(api["memory_stats"]["usage"]) - int(inner.get("total_inactive_file", 0))
    assert abs(ours.memory_bytes - api_mem) < 8 << 20
