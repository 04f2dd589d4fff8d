"""What the integration tests of faults share: a private state root and child harnesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import cleanup
from harness.wait import wait_until


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private FAULTLINE_STATE_DIR for the module's runs."""
    root = tmp_path_factory.mktemp("faultline-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAULTLINE_STATE_DIR", str(root))
        yield root


def spawn_harness(
    script: str, *args: str, state_dir: Path
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run ``script`` (a harness holding a fault) in a child; return it and the JSON
    line it prints once its fault is in place. Its runs go under ``state_dir/children``."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAULTLINE_STATE_DIR": str(state_dir / "children")},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"child harness failed to start (exit {child.returncode})")
    info: dict[str, str] = json.loads(line)
    return child, info


def wait_reaped(info: dict[str, str], *, timeout: float, what: str = "reaping") -> None:
    """Wait until no process carries the child's run tag and its run dir is gone."""
    wait_until(
        lambda: cleanup.tagged_pids(info["run_id"]) == [] and not Path(info["run_dir"]).exists(),
        timeout=timeout,
        what=what,
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A client of the running Docker engine; skips saying how to get one."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException:
        pytest.skip(
            "no Docker engine: apt-get install -y docker.io && (dockerd >/tmp/dockerd.log 2>&1 &)"
        )
    yield client
    client.close()
