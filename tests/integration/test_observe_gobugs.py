"""``faultline observe`` on every program of the Go bug corpus (tests/gobugs), as plain binaries.

Each bug program must be found with its expected class and attributed to a line
it marks ``// want``, with no other finding elsewhere; each control must raise
nothing. The programs are built (cached) and observed four at a time, once per
module, by the real command in a subprocess (delve attached from outside, the
local backend, the final SIGQUIT dump); each test then reads its program's
report.json. Timings are not asserted here: bench/bench_observe.py prints them.
Non-deterministic programs (marked so in their header) must not raise a false
alarm and, when found, must be attributed; whether they are found is the
bench's business.

Cost: about 2-3 minutes on the 2-core CI machine (36 programs, windows of 8 s,
12 s for the two under locust load; crashes end theirs early).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from harness.errors import MissingDependency
from harness.observe.delve import dlv_binary
from tests.gobugs_corpus import Outcome, Program, build, observe, programs

pytestmark = [pytest.mark.timeout(900)]

# Controls observed a second way: built by faultline (--go-package) with the runtime's
# goroutine leak profile, which must not take their parked goroutines for leaked ones.
LEAK_PROFILE_CONTROLS = ("ctl_idlepool", "ctl_selectforever", "ctl_latecond", "ctl_signalwait")
PLAIN = programs()
PROGRAMS = PLAIN + [
    replace(p, name=f"{p.name}+leakprofile", leak_profile=True)
    for p in PLAIN
    if p.name in LEAK_PROFILE_CONTROLS
]
BUGS = [p for p in PROGRAMS if not p.control]
CONTROLS = [p for p in PROGRAMS if p.control]
PARALLEL = 4
WINDOW_S = 8.0
LOAD_WINDOW_S = 12.0  # locust starts before the program; the SIGQUIT dump is under load too


def window(program: Program) -> float:
    return LOAD_WINDOW_S if program.load else WINDOW_S


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    try:
        dlv_binary()
        with ThreadPoolExecutor(PARALLEL) as pool:
            binaries = dict(zip(PROGRAMS, pool.map(build, PROGRAMS), strict=True))
    except MissingDependency as err:
        pytest.skip(f"{err.what} is missing: {err.fix}")
    root = tmp_path_factory.mktemp("observe")

    def run(p: Program) -> Outcome:
        report_dir = root / p.name
        report_dir.mkdir()
        return observe(p, binaries[p], report_dir, seconds=window(p))

    with ThreadPoolExecutor(PARALLEL) as pool:
        yield {o.program.name: o for o in pool.map(run, PROGRAMS)}


def test_the_corpus_is_as_large_as_promised() -> None:
    assert len(BUGS) >= 20 and len(PLAIN) - len(BUGS) >= 8
    assert all(p.want for p in BUGS), [p.name for p in BUGS if not p.want]
    assert {p.kind for p in BUGS} == {
        "global_deadlock",
        "partial_deadlock",
        "goroutine_leak",
        "data_race",
        "crash",
    }


def _explain(o: Outcome) -> str:
    found = "; ".join(
        f"{f['class']} at {f['function']} ({f['file']}:{f['line']}) [{f['state']}]"
        for f in o.findings
    )
    return f"exit {o.exit_code}, findings: {found or 'none'}\n{o.output[-3000:]}"


@pytest.mark.parametrize("program", BUGS, ids=lambda p: p.name)
def test_bug_is_found_classified_and_attributed(
    program: Program, outcomes: dict[str, Outcome]
) -> None:
    o = outcomes[program.name]
    assert o.exit_code in (0, 1), _explain(o)
    assert o.false_alarms == [], _explain(o)
    if program.deterministic or o.detected is not None:
        assert o.exit_code == 1, _explain(o)
        assert o.detected is not None, f"no {program.kind}: " + _explain(o)
        assert o.attributed, f"{program.kind} not at {sorted(program.want)}: " + _explain(o)
        detail = o.detected
        assert detail["function"] and detail["state"], detail


@pytest.mark.parametrize("program", CONTROLS, ids=lambda p: p.name)
def test_control_raises_nothing(program: Program, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[program.name]
    assert o.exit_code == 0, _explain(o)
    assert o.findings == [], _explain(o)
    # The window really watched it: delve dumps were taken (or the report says why not).
    assert "no finding in" in o.output and " 0 dumps" not in o.output, o.output[-2000:]


def test_reports_exist(outcomes: dict[str, Outcome]) -> None:
    """Each run wrote report.json and report.html (the findings above were read from them)."""
    missing = [n for n, o in outcomes.items() if "report: " not in o.output]
    assert missing == []
