"""Service on real backends: a dependency behind Toxiproxy, a binary as a command, an image.

The example service (examples/inventoryd) is started twice: ``warehouse``, and
``inventoryd`` whose ``--warehouse`` dependency is given as ``{dep:warehouse}``,
the listener of a Toxiproxy proxy in front of the warehouse. A latency toxic
slows inventoryd's requests that ask the warehouse (and only those); reverted,
they are fast again. On docker the same binary is also run from an image built
beforehand (``image=`` with the program inside it); on local an image is refused
as unavailable, before anything starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.backends.base import Backend
from harness.components.service import Service
from harness.components.toxiproxy import Toxiproxy, toxiproxy_binary
from harness.errors import BackendUnavailable, MissingDependency
from harness.faults import Latency, Scope
from harness.gobuild import build_package
from harness.pytest_plugin import make_backend
from harness.run import Run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventoryd"

pytestmark = [pytest.mark.timeout(240)]

LATENCY_MS = 400


@pytest.fixture(params=["local", "docker"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Run, Backend]]:
    if request.param == "docker":
        request.getfixturevalue("engine")  # skips without an engine, saying how to get one
    try:
        toxiproxy_binary()
        build_package(EXAMPLE)
    except MissingDependency as err:
        pytest.skip(f"{err.what}: {err.fix}")
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    run = Run.open(tmp_path / "state")
    backend = make_backend(request.param, run)
    try:
        yield run, backend
    finally:
        backend.close()
        assert run.close() == []


def _fastest(url: str, tries: int = 5) -> float:
    """Seconds of the fastest of ``tries`` GETs of ``url`` (each must answer 200)."""
    best = float("inf")
    for _ in range(tries):
        start = time.monotonic()
        resp = httpx.get(url, timeout=10.0)
        assert resp.status_code == 200, resp.text
        best = min(best, time.monotonic() - start)
    return best


def test_a_dependency_behind_toxiproxy_gets_the_latency_and_loses_it_on_revert(
    env: tuple[Run, Backend],
) -> None:
    run, backend = env
    binary = str(build_package(EXAMPLE))
    with (
        Service(backend, run, name="warehouse", command=[binary, "--listen={addr:http}"]) as wh,
        Toxiproxy(backend, run, ports=["warehouse"]) as tp,
    ):
        proxy = tp.proxy("warehouse", upstream=wh.address(), port="warehouse")
        with Service(
            backend,
            run,
            name="inventoryd",
            go_package=EXAMPLE,
            args=["--listen={addr:http}", "--warehouse=http://{dep:warehouse}"],
            dependencies={"warehouse": proxy.listen},
        ) as svc:
            item = httpx.get(svc.url + "/items/sku-3", timeout=5.0).json()
            assert item == {"sku": "sku-3", "stock": 1000, "warehouse": 1000}
            # The fastest of a few: what the toxic adds is a floor, load only adds to it.
            before = _fastest(svc.url + "/items/sku-3")
            with Latency(Scope(run=run, backend=backend), proxy, ms=LATENCY_MS, max_duration=30):
                slowed = _fastest(svc.url + "/items/sku-3")
                local_only = _fastest(svc.url + "/items")  # does not ask the warehouse
            after = _fastest(svc.url + "/items/sku-3")
    added = LATENCY_MS / 1000
    assert slowed >= added, slowed
    assert before < added and after < added, (before, after)
    assert local_only < added, local_only


def test_an_image_runs_on_docker_and_is_refused_on_local(
    env: tuple[Run, Backend], request: pytest.FixtureRequest
) -> None:
    run, backend = env
    binary = build_package(EXAMPLE)
    if backend.name == "local":
        svc = Service(backend, run, name="img", image="faultline/none:0", command=["/x"])
        with pytest.raises(BackendUnavailable, match="--backend docker"):
            svc.start()
        return
    from harness.backends.images import image_for_binary

    engine: Any = request.getfixturevalue("engine")
    tag = image_for_binary(engine, binary, name="inventoryd-example")
    with Service(
        backend, run, name="img", image=tag, command=[str(binary), "--listen={addr:http}"]
    ) as svc:
        assert httpx.get(svc.url + "/items/sku-0", timeout=5.0).json()["stock"] == 1000
        assert svc.healthy()
