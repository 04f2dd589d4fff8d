"""``faultline compare`` on real builds: a +20 % P99 regression vs an identical build, N tries each.

orderd (in-memory store) is built three times from the same source: the baseline; an
identical build (``-X ...requestDelay=0s``: the same code path, a different binary); and a
slower build (``-X ...requestDelay=<d>``), where ``d`` is 20 % of the baseline's P99 as
measured first on this machine now (a pilot of ``--pilot`` repetitions), so that the
candidate's P99 is really about 1.2x. Then ``--tries`` comparisons of each pair, each with
the given repetitions, rate and duration (alternating A B B A, the same as the CLI), and
the verdicts counted: the regression must be flagged every time, the identical build never.
Prints figures; asserts nothing.

Usage: .venv/bin/python bench/bench_compare.py [--tries 10] [--repeat 9] [--rate 100]
       [--duration 5] [--pilot 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from harness import gobuild
from harness.compare import METRICS, CompareConfig, run_compare
from harness.pytest_plugin import make_backend
from harness.run import Run

PKG = "github.com/faultline/faultline/go_targets/internal/orderd"
ARGS = (
    "--http-addr={host}:{http}",
    "--grpc-addr={host}:{grpc}",
    "--admin-addr={host}:{admin}",
)


def _config(a: argparse.Namespace, base: Path, cand: Path, repeat: int) -> CompareConfig:
    return CompareConfig(
        baseline=str(base),
        candidate=str(cand),
        args=ARGS,
        ports=("http", "grpc", "admin"),
        ready_path="/readyz",
        rate=a.rate,
        duration=a.duration,
        repeat=repeat,
    )


def _quiet(line: str) -> None:
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tries", type=int, default=10)
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--pilot", type=int, default=4)
    a = p.parse_args()
    base = gobuild.build("orderd")
    same = gobuild.build("orderd", ldflags=f"-X {PKG}.requestDelay=0s")
    with Run.open() as run:
        backend = make_backend("local", run)
        try:
            pilot = run_compare(_config(a, base, same, a.pilot), backend, run)
        finally:
            backend.close()
    p99s = [METRICS["p99"].one(r) for r in pilot.baseline + pilot.candidate]
    base_p99 = statistics.median(v for v in p99s if v is not None)
    delay_ms = max(1, round(0.2 * base_p99))
    slower = gobuild.build("orderd", ldflags=f"-X {PKG}.requestDelay={delay_ms}ms")
    print(
        f"pilot: baseline P99 {base_p99:g} ms (median of {len(p99s)} repetitions); slower build "
        f"adds {delay_ms} ms per request ({100 * delay_ms / base_p99:.0f} % of P99)",
        flush=True,
    )
    counts = {"identical": 0, "regression": 0}
    started = time.monotonic()
    for i in range(a.tries):
        for kind, cand in (("identical", same), ("regression", slower)):
            t0 = time.monotonic()
            with Run.open() as run:
                backend = make_backend("local", run)
                try:
                    out = run_compare(
                        _config(a, base, cand, a.repeat), backend, run, progress=_quiet
                    )
                finally:
                    backend.close()
            p99 = next(r for r in out.results if r.metric == "p99")
            counts[kind] += out.regressed
            print(
                f"try {i + 1} {kind:<10} p99 {p99.baseline} -> {p99.candidate} ms, change "
                f"{100 * (p99.change or 0):+.1f}% [{100 * (p99.low or 0):+.1f}%, "
                f"{100 * (p99.high or 0):+.1f}%] -> {p99.verdict} ({time.monotonic() - t0:.0f}s)",
                flush=True,
            )
    print(
        f"\nregression flagged: {counts['regression']}/{a.tries} slower builds (+{delay_ms} ms), "
        f"{counts['identical']}/{a.tries} identical builds; {a.repeat} repetitions x "
        f"{a.duration:g}s at {a.rate:g} req/s per build; {time.monotonic() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
