"""Pure logic of the load package: stats merging, percentiles, pacing, phase and host checks."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError, UnsafeTargetError
from harness.load import LoadGenerator, Phase, resolve_locustfile
from harness.load.pacing import (
    MAX_RATE,
    MAX_SECONDS,
    Control,
    Pacer,
    validate_phases,
    write_control,
)
from harness.load.stats import (
    EndpointWindow,
    SecondStats,
    Totals,
    WindowMerger,
    bucket_ms,
    parse_line,
    percentile,
    series_for,
    slug,
)
from harness.run import Run


def window(
    source: str, second: int, span: float = 1.0, **eps: tuple[int, int, dict[int, int]]
) -> dict[str, Any]:
    return {
        "kind": "window",
        "source": source,
        "second": second,
        "span": span,
        "endpoints": {
            name: {"n": n, "fail": f, "hist": {str(k): v for k, v in h.items()}}
            for name, (n, f, h) in eps.items()
        },
    }


def test_bucket_keeps_two_to_three_significant_digits() -> None:
    assert [bucket_ms(x) for x in (0.4, 7.6, 99.4, 123.0, 1234.0, 12345.0)] == [
        0,
        8,
        99,
        120,
        1200,
        12000,
    ]


@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200))
def test_percentile_of_histogram_is_nearest_rank(values: list[int]) -> None:
    hist = Counter(values)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99, 1.0):
        assert percentile(hist, q) == ordered[max(1, math.ceil(q * len(values))) - 1]


def test_percentile_of_nothing_is_none() -> None:
    assert percentile(Counter(), 0.99) is None


def test_slug_makes_series_safe_names() -> None:
    assert slug("GET /orders/[id]") == "get_orders_id"
    assert slug("create_order") == "create_order"
    assert slug("///") == "unnamed"


def test_parse_line_skips_torn_and_foreign_lines() -> None:
    assert parse_line('{"kind": "window", "sec') is None
    assert parse_line('{"kind": "other"}') is None
    assert parse_line("[1, 2]") is None
    assert parse_line('{"kind": "start", "source": "p1"}') == {"kind": "start", "source": "p1"}


def test_merger_merges_sources_of_one_second_before_taking_percentiles() -> None:
    merger = WindowMerger(grace=2.0)
    merger.add(window("a", 100, ping=(2, 0, {1: 2})))
    merger.add(window("b", 100, ping=(2, 1, {50: 2}), get=(1, 1, {9: 1})))
    merger.add(window("a", 101, span=0.5, ping=(1, 0, {1: 1})))
    assert merger.release(now_wall=102.5) == []  # second 100 not yet grace old
    [s100] = merger.release(now_wall=103.0)
    assert s100.second == 100 and s100.span == 1.0
    total = s100.total
    assert (total.n, total.fail) == (5, 2)
    series = series_for(s100)
    assert series["load.rps"] == 5.0
    assert series["load.fail_ratio"] == pytest.approx(0.4)
    assert series["load.success_ratio"] == pytest.approx(0.6)
    assert series["load.p50_ms"] == 9.0 and series["load.p99_ms"] == 50.0
    assert series["load.ping.p95_ms"] == 50.0 and series["load.get.fail_ratio"] == 1.0
    [s101] = merger.drain()
    assert series_for(s101)["load.rps"] == 2.0  # 1 request in half a second
    assert merger.sources == {"a", "b"}


def test_late_window_is_not_merged_but_returned_for_the_totals() -> None:
    merger = WindowMerger(grace=0.0)
    merger.add(window("a", 100, ping=(1, 0, {1: 1})))
    assert len(merger.release(now_wall=101.0)) == 1
    late = merger.add(window("b", 100, ping=(3, 0, {1: 3})))
    assert late is not None and late.total.n == 3 and merger.late == 1
    assert merger.drain() == []


def test_a_sliver_of_a_second_yields_no_series() -> None:
    stats = SecondStats(5, 0.1, {"ping": EndpointWindow(1, 0, Counter({1: 1}))})
    assert series_for(stats) == {}


def test_an_empty_second_has_zero_rate_and_no_ratio() -> None:
    series = series_for(SecondStats(5, 1.0, {}))
    assert series["load.rps"] == 0.0
    assert "load.fail_ratio" not in series and "load.p95_ms" not in series


def test_totals_summarise_the_whole_run() -> None:
    totals = Totals()
    totals.add(SecondStats(1, 1.0, {"a": EndpointWindow(10, 1, Counter({5: 9, 80: 1}))}))
    totals.add(SecondStats(2, 1.0, {"a": EndpointWindow(10, 0, Counter({5: 10}))}))
    out = totals.summary()
    assert out["seconds"] == 2.0
    assert out["total"]["requests"] == 20 and out["total"]["rps"] == 10.0
    assert out["endpoints"]["a"]["fail_ratio"] == 0.05
    assert out["total"]["p95_ms"] == 5.0 and out["total"]["p99_ms"] == 80.0


def test_pacer_holds_the_average_rate_despite_oversleeping() -> None:
    pacer, now, starts = Pacer(), 0.0, []
    for _ in range(1000):
        now += pacer.wait(now, 100.0, 0.0) + 0.002  # every sleep overshoots by 2 ms
        starts.append(now)
        now += 0.001  # the task itself
    achieved = (len(starts) - 1) / (starts[-1] - starts[0])
    assert achieved == pytest.approx(100.0, rel=0.01)


def test_pacer_drops_the_backlog_instead_of_bursting() -> None:
    pacer = Pacer(max_lag=1.0)
    assert pacer.wait(0.0, 10.0, 0.0) == 0.0
    # The target stalled for 5 s: the next tasks are paced again, not fired at once.
    assert pacer.wait(5.0, 10.0, 0.0) == 0.0
    assert pacer.wait(5.0, 10.0, 0.0) == pytest.approx(0.1)


def test_pacer_idles_at_rate_zero_and_restarts_at_a_new_rate() -> None:
    pacer = Pacer()
    assert pacer.wait(0.0, 0.0, 0.5) > 0
    assert pacer.wait(1.0, 4.0, 0.5) == pytest.approx(0.125)  # offset spreads first starts
    assert pacer.wait(1.125, 4.0, 0.5) == pytest.approx(0.25)


def test_control_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "control.json"
    write_control(path, Control(120.0, 8, "fault"))
    ctl = Control.read(path)
    assert ctl == Control(120.0, 8, "fault") and ctl.per_user == 15.0


@pytest.mark.parametrize(
    ("phases", "field"),
    [
        ([], "load.phases"),
        ([Phase("", 1, 1)], "load.phases[0].name"),
        ([Phase("a", 0, 1)], "load.phases[0].seconds"),
        ([Phase("a", 1, 1), Phase("b", 1, MAX_RATE + 1)], "load.phases[1].rate"),
        ([Phase("a", 1, -1)], "load.phases[0].rate"),
        ([Phase("a", 1, float("nan"))], "load.phases[0].rate"),
        ([Phase("a", MAX_SECONDS, 1), Phase("b", 1, 1)], "load.phases"),
        ([Phase("a", 1, 0)], "load.phases"),
    ],
)
def test_bad_phases_are_refused_naming_the_field(phases: list[Phase], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_phases(phases, field="load.phases")
    assert err.value.field == field


def test_locustfile_is_a_builtin_name_or_an_existing_py_file(tmp_path: Path) -> None:
    assert resolve_locustfile("orderd_http").is_file()
    assert resolve_locustfile("etcd_kv").name == "etcd_kv.py"
    own = tmp_path / "mine.py"
    own.write_text("")
    assert resolve_locustfile(own) == own.resolve()
    for bad in ("nope", tmp_path / "missing.py", tmp_path):
        with pytest.raises(ConfigError):
            resolve_locustfile(bad)


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Run.open(tmp_path, watchdog=False)
    yield r
    assert r.close() == []


@pytest.mark.parametrize(
    "host",
    ["http://10.0.0.1:80", "https://8.8.8.8", "192.168.1.1:50051", "http://[2001:db8::1]:80"],
)
def test_non_loopback_hosts_are_refused_before_anything_happens(run: Run, host: str) -> None:
    with pytest.raises(UnsafeTargetError):
        LoadGenerator(run, locustfile="orderd_http", host=host, rate=1, duration=1)
    assert run.ledger.entries() == []


def refused_field(run: Run, **kwargs: object) -> str:
    args: dict[str, object] = {"locustfile": "orderd_http", "host": "http://127.0.0.1:1"}
    with pytest.raises(ConfigError) as err:
        LoadGenerator(run, **{**args, **kwargs})  # type: ignore[arg-type]
    return err.value.field


def test_rate_and_phases_are_exclusive_and_users_bounded(run: Run) -> None:
    assert refused_field(run, rate=1, phases=[Phase("a", 1, 1)]) == "load.rate"
    assert refused_field(run, rate=1) == "load.phases"
    assert refused_field(run, rate=1, duration=1, users=0) == "load.users"
    assert refused_field(run, rate=1, duration=1, workers=99) == "load.workers"
    assert refused_field(run, host="ftp://127.0.0.1", rate=1, duration=1) == "load.host"
    load = LoadGenerator(
        run, locustfile="orderd_http", host="http://127.0.0.1:1", rate=1000, duration=1
    )
    assert load.users == 100  # one per 10 req/s by default
    assert run.ledger.entries() == []
