"""R7: malformed scenario input gets a ConfigError naming the field, before any side effect.

Hypothesis draws one bad value for one field of the pieces a scenario is
written with (cluster, service, budget, load, faults, writer), keeps every
other field valid, and checks three things: the error is a ConfigError, its
message names the field, and nothing was created (the run's ledger is empty,
no process carries the run's tag).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import cleanup
from harness.backends.local import LocalBackend
from harness.checks import Budget
from harness.components.etcd import EtcdCluster
from harness.components.orderd import OrderService
from harness.errors import ConfigError
from harness.etcd_client import EtcdClient
from harness.faults.base import Scope
from harness.faults.process import CpuThrottle, ProcessPause
from harness.faults.storm import TlsStorm
from harness.load import LoadGenerator
from harness.load.pacing import Phase
from harness.pki import Pki
from harness.run import Run
from harness.traffic import KvWriter

BAD_NUMBERS = st.one_of(
    st.sampled_from([0, -1, -0.5, math.nan, math.inf, -math.inf, 10**9]),
    st.floats(max_value=0, allow_nan=False),
    st.integers(max_value=0),
)
BAD_HOSTS = st.sampled_from(
    ["http://10.0.0.1:80", "http://8.8.8.8", "http://192.168.1.10:8080", "http://[2001:db8::1]:80"]
)
BAD_NAMES = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s and s.isidentifier())

Case = tuple[str, Callable[["Ctx"], object]]


class Ctx:
    """What the builders need; nothing here starts anything."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.backend = LocalBackend(run)
        self.scope = Scope(run=run, backend=self.backend)
        self.pki: Pki | None = None


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    run = Run.open(tmp_path_factory.mktemp("state"), watchdog=False)
    yield Ctx(run)
    run.close()


def _cases(v: Any, host: str, name: str) -> list[Case]:
    # A huge budget is only generous, not malformed: budgets get a negative instead.
    b = -1 if v == 10**9 else v
    return [
        ("size", lambda c: EtcdCluster(c.backend, c.run, c.pki, size=v)),  # type: ignore[arg-type]
        ("heartbeat_ms", lambda c: EtcdCluster(c.backend, c.run, c.pki, heartbeat_ms=v)),  # type: ignore[arg-type]
        ("budget.max_ttd", lambda c: Budget(max_ttd=b)),
        ("budget.max_ttr", lambda c: Budget(max_ttr=b)),
        ("budget.scale", lambda c: Budget(max_ttd=1, scale=b)),
        ("rate", lambda c: KvWriter(None, c.run.timeline, rate=v)),  # type: ignore[arg-type]
        ("max_duration", lambda c: KvWriter(None, c.run.timeline, max_duration=v)),  # type: ignore[arg-type]
        ("phases", lambda c: LoadGenerator(
            c.run, locustfile="orderd_http", host="http://127.0.0.1:1",
            phases=[Phase("baseline", v, 10)])),
        ("phases[0].rate", lambda c: LoadGenerator(
            c.run, locustfile="orderd_http", host="http://127.0.0.1:1",
            phases=[Phase("baseline", 5, -abs(v) - 1 if v == v else v)])),
        ("cpu.cores", lambda c: CpuThrottle(c.scope, "leader", cores=v, max_duration=10,
                                            name="cpu")),
        ("cpu.max_duration", lambda c: CpuThrottle(c.scope, "leader", cores=0.1,
                                                   max_duration=v, name="cpu")),
        ("pause.seconds", lambda c: ProcessPause(c.scope, "leader", seconds=v, name="pause")),
        ("storm.duration", lambda c: TlsStorm(c.scope, "leader", rate=100, duration=v,
                                              name="storm")),
        ("storm.rate", lambda c: TlsStorm(c.scope, "leader", rate=v, duration=5, name="storm")),
        ("load.host", lambda c: LoadGenerator(c.run, locustfile="orderd_http", host=host,
                                              rate=10, duration=5)),
        ("endpoints", lambda c: EtcdClient([host.replace("http", "https")])),
        (f"bugs.{name}", lambda c: OrderService(c.backend, c.run, bugs={name: 1.0})),
        ("storm.port", lambda c: TlsStorm(c.scope, "leader", port=name, rate=10, duration=5,
                                          name="storm")),
    ]  # fmt: skip


def _assert_refused(ctx: Ctx, field: str, build: Callable[[Ctx], object]) -> None:
    before = len(ctx.run.ledger.entries())
    with pytest.raises(ConfigError) as err:
        build(ctx)
    assert field in str(err.value), f"{err.value!s} does not name {field}"
    assert len(ctx.run.ledger.entries()) == before, "a refused input wrote to the ledger"
    assert cleanup.tagged_pids(ctx.run.run_id) == []
    # Nothing but the run's own bookkeeping in its directory: no pki, logs, data dirs.
    assert {p.name for p in Path(ctx.run.dir).iterdir()} <= {"owner.json", "ledger.lock"}


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), v=BAD_NUMBERS, host=BAD_HOSTS, name=BAD_NAMES)
def test_malformed_input_is_refused_naming_the_field_with_no_side_effect(
    ctx: Ctx, data: st.DataObject, v: Any, host: str, name: str
) -> None:
    cases = [
        c
        for c in _cases(v, host, name)
        if not c[0].startswith("bugs.")
        or name
        not in {
            "goroutine_leak",
            "channel_deadlock",
            "mutex_deadlock",
            "global_deadlock",
            "map_race",
            "memory_leak",
            "check_then_act",
        }
    ]
    if name in ("client", "peer"):
        cases = [c for c in cases if c[0] != "storm.port"]
    field, build = data.draw(st.sampled_from(cases), label="case")
    _assert_refused(ctx, field.split(".")[-1] if field.startswith("budget") else field, build)
