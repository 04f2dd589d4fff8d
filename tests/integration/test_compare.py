"""faultline compare on real orderd builds: a slower build is a regression, an identical one is not.

The small CI version of bench/bench_compare.py (which measures the +20 % case 10 times
over). Here the slower build adds 30 ms to every request, far above the noise of a shared
CI machine, so the test checks the pipeline's verdicts (paired load, pooled metrics,
bootstrap over pairs, budget), not its resolution. Nine pairs of 3 s windows at 50 req/s per
build (~100 s both).
"""

from __future__ import annotations

import dataclasses

import pytest

from harness import gobuild
from harness.backends.base import Backend
from harness.compare import CompareConfig, run_compare
from harness.run import Run

PKG = "github.com/faultline/faultline/go_targets/internal/orderd"


def _cfg(candidate: str) -> CompareConfig:
    return CompareConfig(
        baseline=str(gobuild.build("orderd")),
        candidate=candidate,
        args=(
            "--http-addr={host}:{http}",
            "--grpc-addr={host}:{grpc}",
            "--admin-addr={host}:{admin}",
        ),
        ports=("http", "grpc", "admin"),
        ready_path="/readyz",
        rate=50.0,
        duration=3.0,
        repeat=9,
    )


@pytest.mark.parametrize(
    ("ldflags", "regressed"),
    [(f"-X {PKG}.requestDelay=30ms", True), (f"-X {PKG}.requestDelay=0s", False)],
    ids=["slower-build", "identical-build"],
)
def test_compare_tells_a_slower_build_from_an_identical_one(
    backend: Backend, run: Run, ldflags: str, regressed: bool
) -> None:
    candidate = gobuild.build("orderd", ldflags=ldflags)
    assert candidate != gobuild.build("orderd")  # a different binary either way
    out = run_compare(_cfg(str(candidate)), backend, run)
    p99 = next(r for r in out.results if r.metric == "p99")
    print(out.render())
    assert out.regressed is regressed, out.render()
    assert (p99.verdict == "regression") is regressed
    # 9 pairs, and up to 27 while inconclusive (at ~2 ms, one 1 ms bucket is 50 %).
    assert len(out.baseline) == len(out.candidate)
    assert len(out.baseline) in (9, 18, 27)
    assert all(r.requests > 80 for r in out.baseline + out.candidate)


def test_compare_alternate_schedule_loads_one_build_at_a_time(backend: Backend, run: Run) -> None:
    """``--schedule alternate``: a locust per step (A B B A ...), each with its own warm-up."""
    slower = gobuild.build("orderd", ldflags=f"-X {PKG}.requestDelay=30ms")
    cfg = dataclasses.replace(_cfg(str(slower)), repeat=2, schedule="alternate")
    out = run_compare(cfg, backend, run)
    print(out.render())
    assert out.regressed, out.render()
    assert len(out.baseline) == len(out.candidate) == 2
    assert all(r.requests > 80 for r in out.baseline + out.candidate)
