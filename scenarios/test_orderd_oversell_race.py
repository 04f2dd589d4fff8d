"""orderd check-then-act oversell: concurrent reservations grant more units than the stock.

Seed 000 ch.2.3 / ch.3: "check, sleep, act" on shared state (Exists, a 1 ms
window, Del) is not atomic; concurrent callers act on a stale check. In an
order service the same race sells stock that is gone. Here:

- orderd keeps its stock in a 3-member etcd cluster (mutual TLS); a real
  Prometheus scrapes it every second with the rules in fixtures/alerts/;
- flash sales, one per second: the admin API sets a fresh SKU's stock to
  ``STOCK``, then ``BUYERS`` reservations of one unit arrive at once (a bounded
  pool of ``CONCURRENCY`` threads, loopback only, every request timed out);
- control (baseline, ``check_then_act`` off, i.e. the etcd Txn
  compare-and-swap): every sale grants exactly its stock;
- fault: ``BugSwitch`` turns ``check_then_act`` on (Get, 1 ms, unconditional
  Put); then off again (the fix), while the sales go on.

Proven: with the fix on, every sale grants exactly ``STOCK`` units,
``orderd_inventory_oversold_total`` stays 0 and ``OrderdInventoryOversold``
stays quiet (no false positive); with the bug, sales grant more than the stock
(evidence: granted > stock, the counter rises) and the alert fires within the
budget; after the fix, every sale grants exactly its stock again and the
counter stops rising within the recovery budget (the alert then resolves when
its 10 s window has passed). Figures: units granted per sale vs stock,
oversold units per sale and in all.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import httpx
import pytest

from harness import safety
from harness.backends.base import Backend
from harness.checks import (
    Budget,
    CheckResult,
    Status,
    alert_fired_within,
    alert_quiet,
    fault_took_effect,
    fault_window,
    recovered_within,
)
from harness.components.etcd import EtcdCluster
from harness.components.orderd import OrderService
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.faults.base import Scope
from harness.faults.bugs import BugSwitch
from harness.observe.prom import AlertWatcher, SeriesSampler
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Sample, Timeline

__all__: list[str] = []

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(240)]

STOCK = 40
BUYERS = 80  # twice the stock: a correct service sells out and refuses the rest
CONCURRENCY = 16
SALE_INTERVAL_S = 1.0
BASELINE_S = 8.0
FAULT_S = 6.0
RECOVERY_MAX_S = 30.0
ALERT = "OrderdInventoryOversold"
FAULT = "bug:check_then_act"
# TTR: the alert resolves once its 10 s increase window holds no oversold unit (~10 s after
# the fix, measured 9.5-10.5 s); the counter itself must stop within COUNTER_TTR_S.
BUDGET = Budget(max_ttd=8.0, max_ttr=16.0, must_fire=(ALERT,))
COUNTER_TTR_S = 6.0


@dataclass(frozen=True)
class Sale:
    """One flash sale: ``buyers`` one-unit reservations of a fresh SKU."""

    sku: str
    start: float
    end: float
    stock: int
    granted: int
    sold_out: int
    errors: int


class FlashSales:
    """Every ``interval`` seconds, a flash sale against orderd (an observer).

    Bounded: at most ``max_sales`` sales of ``buyers`` requests each, on
    ``concurrency`` threads, every request timed out; stops by itself.
    Timeline: series ``sale.granted``, ``sale.stock``, ``sale.oversold`` (units
    granted beyond the stock) at each sale's end, and an event ``sale.oversold``
    (named after the SKU) for every sale that granted more than its stock.
    """

    def __init__(
        self,
        url: str,
        admin_url: str,
        timeline: Timeline,
        *,
        stock: int,
        buyers: int,
        concurrency: int,
        interval: float,
        max_sales: int,
    ) -> None:
        for u in (url, admin_url):
            safety.check_host(httpx.URL(u).host, field="flash_sales.url")
        self.url = url.rstrip("/")
        self.admin_url = admin_url.rstrip("/")
        self.timeline = timeline
        self.stock = stock
        self.buyers = buyers
        self.concurrency = concurrency
        self.interval = interval
        self.max_sales = max_sales
        self.sales: list[Sale] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="FlashSales", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        with (
            httpx.Client(timeout=5.0, limits=limits) as client,
            ThreadPoolExecutor(self.concurrency, thread_name_prefix="buyer") as pool,
        ):
            for n in range(self.max_sales):
                if self._stop.is_set():
                    return
                started = self.timeline.now()
                try:
                    self._sale(client, pool, f"flash-{n}", started)
                except httpx.HTTPError as err:
                    # orderd down or slow: the sale is lost, the story goes on.
                    log.warning("flash sale %d failed: %r", n, err)
                if self._stop.wait(max(0.0, started + self.interval - self.timeline.now())):
                    return

    def _sale(self, client: httpx.Client, pool: ThreadPoolExecutor, sku: str, t0: float) -> None:
        client.put(f"{self.admin_url}/stock/{sku}", json={"qty": self.stock}).raise_for_status()

        def buy(_: int) -> int:
            try:
                resp = client.post(f"{self.url}/inventory/reserve", json={"sku": sku, "qty": 1})
            except httpx.HTTPError:
                return 0
            return resp.status_code

        codes = list(pool.map(buy, range(self.buyers)))
        granted, sold_out = codes.count(200), codes.count(409)
        sale = Sale(
            sku,
            t0,
            self.timeline.now(),
            self.stock,
            granted,
            sold_out,
            len(codes) - granted - sold_out,
        )
        self.sales.append(sale)
        tl = self.timeline
        tl.sample("sale.granted", granted, at=sale.end)
        tl.sample("sale.stock", self.stock, at=sale.end)
        tl.sample("sale.oversold", max(0, granted - self.stock), at=sale.end)
        if granted > self.stock:
            tl.event("sale.oversold", sku, at=sale.end, granted=granted, stock=self.stock)


def _increments(samples: Sequence[Sample]) -> list[Sample]:
    """Per-sample increase of a counter series (a reset counts as no increase)."""
    return [Sample(b.t, max(0.0, b.value - a.value)) for a, b in itertools.pairwise(samples)]


def _sales_exact(name: str, sales: Sequence[Sale], what: str) -> CheckResult:
    """Every sale granted exactly its stock, with no failed request."""
    if not sales:
        return CheckResult(name, Status.UNKNOWN, f"no flash sale {what}")
    bad = [s for s in sales if s.granted != s.stock or s.errors]
    figures: dict[str, float | str | None] = {
        "sales": float(len(sales)),
        "granted_max": float(max(s.granted for s in sales)),
        "granted_min": float(min(s.granted for s in sales)),
        "stock": float(sales[0].stock),
        "errors": float(sum(s.errors for s in sales)),
    }
    if bad:
        worst = bad[0]
        return CheckResult(
            name,
            Status.FAILED,
            f"{len(bad)}/{len(sales)} sales {what} did not grant exactly their stock, e.g. "
            f"{worst.sku}: {worst.granted} granted of {worst.stock}, {worst.errors} errors",
            figures,
        )
    return CheckResult(
        name,
        Status.PASSED,
        f"all {len(sales)} sales {what} granted exactly {sales[0].stock} units "
        f"of {sales[0].stock} ({BUYERS} buyers each)",
        figures,
    )


def _resolved_within(tl: Timeline, alert: str, *, after: float, budget: Budget) -> CheckResult:
    """``alert`` resolved within the time-to-recover budget after ``after`` (the fix)."""
    name = f"recovery:{alert}_resolved_within"
    limit = budget.ttr
    resolved = [e.t - after for e in tl.events("alert.resolved", alert) if e.t >= after]
    ttr = round(resolved[0], 3) if resolved else None
    figures: dict[str, float | str | None] = {"ttr_s": ttr, "budget_s": limit}
    if limit is None:
        return CheckResult(name, Status.UNKNOWN, "no time-to-recover budget given", figures)
    if ttr is None or ttr > limit:
        when = "never" if ttr is None else f"after {ttr:.2f}s"
        return CheckResult(
            name, Status.FAILED, f"{alert} resolved {when}, budget {limit:.2f}s", figures
        )
    return CheckResult(
        name,
        Status.PASSED,
        f"{alert} resolved {ttr:.2f}s after the fix (budget {limit:.2f}s)",
        figures,
    )


def test_check_then_act_oversells_and_pages_while_the_txn_fix_sells_exactly_the_stock(
    make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        "orderd-oversell-race",
        title="check-then-act reservations oversell a flash sale; the etcd Txn fix does not",
        seed="seed 000 ch.2.3 / ch.3 (check-then-act race on shared state)",
        budget=BUDGET,
    )
    incident.key_series = ["sale.granted", "sale.oversold", "orderd.oversold_total"]
    tl = run.timeline
    with (
        EtcdCluster(backend, run, pki, size=3) as etcd,
        OrderService(backend, run, etcd=etcd) as orderd,
        Prometheus(backend, run, [ScrapeTarget.from_url("orderd", orderd.url)]) as prom,
    ):
        sales = FlashSales(
            orderd.url,
            orderd.admin_url,
            tl,
            stock=STOCK,
            buyers=BUYERS,
            concurrency=CONCURRENCY,
            interval=SALE_INTERVAL_S,
            max_sales=int((BASELINE_S + FAULT_S + RECOVERY_MAX_S) / SALE_INTERVAL_S) + 5,
        )
        bug = BugSwitch(
            Scope(run=run, backend=backend),
            orderd.admin_url,
            "check_then_act",
            intensity=1,  # ms between check and act, as in the seed's Sleep(1ms)
            max_duration=FAULT_S + 30,
            name=FAULT,
        )
        with incident.observing(
            sales,
            SeriesSampler(
                prom.url, tl, {"orderd.oversold_total": "sum(orderd_inventory_oversold_total)"}
            ),
            AlertWatcher(prom.url, tl),
        ):
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            with incident.phase("fault"), bug:
                incident.hold(FAULT_S)
            with incident.phase("recovery"):
                # Sales go on with the fix; the alert resolves once its window is past.
                incident.hold_until(
                    lambda: bool(tl.events("alert.resolved", ALERT)),
                    timeout=RECOVERY_MAX_S,
                    what=f"{ALERT} resolved",
                )
                incident.hold(2 * SALE_INTERVAL_S)  # sales wholly after the resolve too

    window = fault_window(tl, FAULT) or (0.0, None)
    injected, reverted = window[0], window[1] if window[1] is not None else tl.now()
    baseline = incident.window("baseline") or (0.0, 0.0)
    before = [s for s in sales.sales if s.end < injected]
    during = [s for s in sales.sales if s.start >= injected and s.end <= reverted]
    after = [s for s in sales.sales if s.start > reverted]
    counter = tl.series("orderd.oversold_total")
    at_injection = [c.value for c in counter if c.t <= injected]
    oversold_during = sum(max(0, s.granted - s.stock) for s in during)

    incident.figure_from_series(
        f"units granted per sale (stock {STOCK})", "sale.granted", worst="max"
    )
    incident.figure_from_series("oversold units per sale", "sale.oversold", worst="max")
    incident.figure(
        "orderd_inventory_oversold_total",
        normal=at_injection[-1] if at_injection else None,
        worst=max((c.value for c in counter), default=None),
        recovered=counter[-1].value if counter else None,
    )
    incident.check(
        _sales_exact("control:txn_fix_grants_exactly_the_stock", before, "with the fix on"),
        alert_quiet(tl, ALERT, (baseline[0], injected)),
        CheckResult(
            "control:oversold_counter_stays_zero",
            Status.PASSED if at_injection and max(at_injection) == 0 else Status.FAILED,
            f"orderd_inventory_oversold_total {max(at_injection, default=float('nan')):.0f} "
            f"over {len(at_injection)} samples before the bug",
            {"samples": float(len(at_injection))},
        ),
        fault_took_effect(tl, "sale.oversold", fault=FAULT),
        CheckResult(
            "fault:granted_exceeds_stock",
            Status.PASSED if during and oversold_during > 0 else Status.FAILED,
            f"{oversold_during} units oversold in {len(during)} sales of {STOCK} with the bug "
            f"(most granted in one sale: {max((s.granted for s in during), default=0)})",
            {"oversold_units": float(oversold_during), "sales": float(len(during))},
        ),
        alert_fired_within(tl, ALERT, fault=FAULT, budget=incident.budget),
        recovered_within(
            _increments(counter),
            after=reverted,
            ok=lambda inc: inc == 0,
            hold=5.0,
            budget=COUNTER_TTR_S * incident.budget.scale,
            name="oversold counter stops rising",
        ),
        _resolved_within(tl, ALERT, after=reverted, budget=incident.budget),
        _sales_exact("recovery:fix_grants_exactly_the_stock_again", after, "after the fix"),
    )
    incident.assert_passed()
