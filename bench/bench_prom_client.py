"""Per-query cost of prometheus-api-client's ``PrometheusConnect`` next to a bare httpx client.

The observers poll a real Prometheus every 0.5-1 s (alerts, PromQL samples), so
what matters is the cost of one call at that rate: wall time (median and P95)
and the harness's own CPU time per call, on the same Prometheus, interleaved
call by call so load on the machine hits both alike. Two calls:

* an instant query (``sum(up)``): ``PrometheusConnect.custom_query`` against
  ``httpx.Client.get("/api/v1/query")``;
* ``/api/v1/alerts``, which ``PrometheusConnect`` has no method for: through the
  requests session it is given against httpx.

Prints figures and the PrometheusConnect/httpx ratios; asserts nothing.

Usage: .venv/bin/python bench/bench_prom_client.py [CALLS]   (default 300)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import requests
from prometheus_api_client import PrometheusConnect

from harness.backends.local import LocalBackend
from harness.components.prometheus import Prometheus
from harness.run import Run


def timed(call: Callable[[], object]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - w0, time.process_time() - c0


def summary(label: str, samples: list[tuple[float, float]]) -> float:
    wall = sorted(s[0] for s in samples)
    cpu = statistics.fmean(s[1] for s in samples)
    med = statistics.median(wall)
    p95 = wall[int(0.95 * (len(wall) - 1))]
    print(f"  {label:<34} wall median {med * 1e3:6.2f} ms  P95 {p95 * 1e3:6.2f} ms  "
          f"CPU {cpu * 1e3:5.2f} ms/call")  # fmt: skip
    return cpu


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    os.environ.setdefault("FAULTLINE_STATE_DIR", tempfile.mkdtemp(prefix="faultline-bench-"))
    run = Run.open()
    backend = LocalBackend(run)
    try:
        with Prometheus(backend, run, []) as prom:
            url = prom.url
            session = requests.Session()
            pc = PrometheusConnect(url, session=session, timeout=2)
            hx = httpx.Client(timeout=2.0)
            rows: dict[str, list[tuple[float, float]]] = {
                k: [] for k in ("pc_query", "hx_query", "pc_alerts", "hx_alerts")
            }
            for _ in range(10):  # warm both connections
                pc.custom_query("sum(up)")
                hx.get(f"{url}/api/v1/query", params={"query": "sum(up)"})
            for _ in range(calls):
                rows["pc_query"].append(timed(lambda: pc.custom_query("sum(up)")))
                rows["hx_query"].append(
                    timed(lambda: hx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}).json())
                )
                rows["pc_alerts"].append(
                    timed(lambda: session.get(f"{url}/api/v1/alerts", timeout=2).json())
                )
                rows["hx_alerts"].append(timed(lambda: hx.get(f"{url}/api/v1/alerts").json()))
            hx.close()
            pc.close()
        print(f"{calls} calls each, interleaved, on one Prometheus ({Path(url).name}):")
        pcq = summary("instant query, PrometheusConnect", rows["pc_query"])
        hxq = summary("instant query, httpx", rows["hx_query"])
        pca = summary("/api/v1/alerts, requests session", rows["pc_alerts"])
        hxa = summary("/api/v1/alerts, httpx", rows["hx_alerts"])
        print(
            f"CPU per call, PrometheusConnect/httpx: query {pcq / hxq:.2f}x, "
            f"alerts {pca / hxa:.2f}x"
        )
        # At the observers' rates (alerts every 0.5 s, one query a second per series):
        print(f"CPU share of one core at 2 alert polls + 1 query per second: PrometheusConnect "
              f"{(2 * pca + pcq) * 100:.3f} %, httpx {(2 * hxa + hxq) * 100:.3f} %")  # fmt: skip
    finally:
        backend.close()
        leftovers = run.close()
        if leftovers:
            print("left behind:", leftovers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
