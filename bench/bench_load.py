"""How well LoadGenerator holds a requested rate, and its ceiling next to wrk's.

Against orderd (``harness.gobuild.build("orderd")``; the Python stand-in
fixtures/locust/stub_orderd.py when Go is absent: the output says which):

1. at 100, 500 and 1000 req/s (orderd_http locustfile, standalone locust):
   requested vs achieved rate over the steady seconds (the first and last
   one-second windows left out), with failures and p50/p95/p99;
2. the ceiling on GET /ping: locust at its maximum rate, standalone and with
   two workers, next to ``wrk -t2 -c50`` on the same endpoint, as a ratio.

Prints figures; asserts nothing. Usage: ``.venv/bin/python bench/bench_load.py``
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

from harness import gobuild
from harness.errors import MissingDependency
from harness.load import MAX_RATE, LoadGenerator
from harness.run import Run

REPO = Path(__file__).resolve().parents[1]
RATES = (100.0, 500.0, 1000.0)
SECONDS = 8.0
PING_LOCUSTFILE = """
from locust import FastHttpUser, constant_throughput, task

class PingUser(FastHttpUser):
    wait_time = constant_throughput(1)

    @task
    def ping(self) -> None:
        self.client.get("/ping", name="ping")
"""


@contextlib.contextmanager
def target() -> Iterator[tuple[str, str]]:
    """(what, http://host:port) of orderd, or of the stub when Go is missing."""
    try:
        binary = gobuild.build("orderd")
        args = [str(binary), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]
        args += ["--admin-addr", "127.0.0.1:0", "--log-level", "warn"]
        what = "orderd (in-memory store)"
    except MissingDependency as err:
        args = [sys.executable, str(REPO / "fixtures" / "locust" / "stub_orderd.py")]
        what = f"stub_orderd.py (Python stand-in: {err})"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield what, "http://" + json.loads(proc.stdout.readline())["http"]
    finally:
        proc.kill()
        proc.wait()


def steady_rate(run: Run) -> float:
    samples = [s.value for s in run.timeline.series("load.rps")]
    steady = samples[1:-1] or samples
    return mean(steady) if steady else 0.0


def one_load(
    locustfile: str | Path, host: str, rate: float, *, users: int | None = None, workers: int = 0
) -> tuple[float, dict[str, object]]:
    with Run.open() as run:
        load = LoadGenerator(
            run,
            locustfile=locustfile,
            host=host,
            rate=rate,
            duration=SECONDS,
            users=users,
            workers=workers,
        )
        with load:
            summary = load.wait()
        return steady_rate(run), summary


def wrk_rps(url: str) -> float | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{int(SECONDS)}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 30,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="faultline-bench-load-") as tmp:
        os.environ.setdefault("FAULTLINE_STATE_DIR", str(Path(tmp) / "state"))
        with target() as (what, host):
            print(f"target: {what} at {host}; {os.cpu_count()} cores; {SECONDS:g} s per run")
            print(
                f"{'requested':>10} {'achieved':>9} {'error':>7} {'users':>5} "
                f"{'fail':>6} {'p50':>5} {'p95':>5} {'p99':>5}  (req/s, ms; mix: orderd_http)"
            )
            for rate in RATES:
                achieved, summary = one_load("orderd_http", host, rate)
                total = summary["total"]
                assert isinstance(total, dict)
                print(
                    f"{rate:>10.0f} {achieved:>9.1f} {100 * (achieved - rate) / rate:>+6.1f}% "
                    f"{summary['users']:>5} {total['failures']:>6} {total['p50_ms']:>5} "
                    f"{total['p95_ms']:>5} {total['p99_ms']:>5}"
                )
            ping = Path(tmp) / "ping_locustfile.py"
            ping.write_text(PING_LOCUSTFILE)
            print(f"\nceiling on GET /ping (locust asked for {MAX_RATE:g} req/s):")
            wrk = wrk_rps(f"{host}/ping")
            for workers in (0, 2):
                achieved, _ = one_load(ping, host, MAX_RATE, users=100, workers=workers)
                ratio = f"{achieved / wrk:.3f}" if wrk else "n/a"
                label = f"locust, {workers} workers" if workers else "locust, standalone"
                capped = "  (at the MAX_RATE cap)" if achieved > 0.95 * MAX_RATE else ""
                print(f"  {label:<22} {achieved:>9.0f} req/s   locust/wrk = {ratio}{capped}")
            print(f"  {'wrk -t2 -c50':<22} {wrk or float('nan'):>9.0f} req/s")


if __name__ == "__main__":
    main()
