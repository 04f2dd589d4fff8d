"""faultline observe's pure parts: build info, delve dumps, classification, and bad input.

``data/delve_doublelock.txt`` is delve's real output (``goroutines -g -t 64``, the
marker, ``goroutines -exec print runtime.curg.trackingSeq``) on
tests/gobugs/cmd/doublelock, 1 s after its start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.observe.buildinfo import MAIN_ONLY, ProjectCode, parse_modinfo, read_buildinfo
from harness.observe.goroutines import Dump, Frame, Goroutine, parse_delve, parse_dump
from harness.observe.logs import LogScanner
from harness.observe.program import ProgramWatch, own_frames

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
SHOP = ProjectCode(("example.com/gobugs",))

MODINFO = (
    "path\texample.com/shop/cmd/shop\n"
    "mod\texample.com/shop\t(devel)\t\n"
    "dep\tgolang.org/x/sync\tv0.7.0\th1:abc=\n"
    "build\t-race=true\n"
    "build\tGOOS=linux\n"
)


def _blob(version: str, modinfo: str) -> bytes:
    """A Go >= 1.18 build info blob as the linker writes it, inside other bytes."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    sentinel = b"0123456789abcdef"
    mod = sentinel + modinfo.encode() + b"\n" + sentinel[:15]
    header = b"\xff Go buildinf:" + bytes([8, 0x2]) + bytes(16)
    body = varint(len(version)) + version.encode() + varint(len(mod)) + mod
    # The magic also appears unaligned and as a constant (no valid strings) first.
    return b"x" * 5 + b"\xff Go buildinf:" + b"y" * 13 + bytes(32) + header + body + b"z" * 64


def test_build_info_is_read_from_the_binary_blob(tmp_path: Path) -> None:
    binary = tmp_path / "prog"
    binary.write_bytes(_blob("go1.26.8", MODINFO))
    info = read_buildinfo(binary)
    assert info is not None
    assert (info.go_version, info.path, info.main_module) == (
        "go1.26.8",
        "example.com/shop/cmd/shop",
        "example.com/shop",
    )
    assert info.race and info.settings["GOOS"] == "linux"


def test_not_a_go_binary_has_no_build_info(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "empty").write_bytes(b"")
    assert read_buildinfo(tmp_path / "script") is None
    assert read_buildinfo(tmp_path / "empty") is None
    assert read_buildinfo(tmp_path / "absent") is None


def test_project_code_from_build_info() -> None:
    info = parse_modinfo("go1.26.8", MODINFO)
    project = ProjectCode.of(info)
    assert project("main.main")
    assert project("example.com/shop/internal/cart.(*Cart).Add")
    assert project("example.com/shop.Run")
    assert not project("example.com/shopping.Run")
    assert not project("golang.org/x/sync/errgroup.(*Group).Wait")
    files_only = parse_modinfo("go1.26.8", "path\tcommand-line-arguments\n")
    assert ProjectCode.of(files_only) is MAIN_ONLY
    assert ProjectCode.of(None) is MAIN_ONLY


def test_delve_output_parses_with_the_runtime_frames_start_location_and_runs() -> None:
    dump = parse_delve((DATA / "delve_doublelock.txt").read_text(), taken_at=1.0)
    assert [g.id for g in dump.goroutines] == [1, 2, 3, 4, 5, 6]
    stuck = dump.goroutines[-1]
    assert stuck.state == "sync.Mutex.Lock"
    assert stuck.frames[0].function == "runtime.gopark"
    assert stuck.created_by == Frame("main.main", "example.com/gobugs/cmd/doublelock/main.go", 14)
    top = stuck.top_frame(SHOP)
    assert top == Frame(
        "example.com/gobugs/internal/shop.(*Inventory).Count",
        "example.com/gobugs/internal/shop/shop.go",
        20,
    )
    assert all(g.runs is not None for g in dump.goroutines)
    assert dump.goroutines[0].state == "sleep"
    own = own_frames(dump, SHOP).goroutines[-1]
    assert [f.function for f in own.frames] == [
        "example.com/gobugs/internal/shop.(*Inventory).Count",
        "example.com/gobugs/internal/shop.(*Inventory).Reserve",
        "main.main.func1",
    ]


def _g(gid: int, state: str, line: int, runs: int | None, fn: str = "main.work") -> Goroutine:
    return Goroutine(gid, state, 0, (Frame(fn, "main.go", line),), None, runs)


def _watch(series: list[list[Goroutine]], every: float = 1.0) -> ProgramWatch:
    watch = ProgramWatch(0.0, MAIN_ONLY, min_blocked=3.0)
    for i, gs in enumerate(series):
        watch.add_dump(Dump(tuple(gs), taken_at=0.5 + i * every), source="delve")
    return watch


def test_blocked_on_a_lock_past_the_threshold_is_a_partial_deadlock() -> None:
    watch = _watch([[_g(7, "sync.Mutex.Lock", 12, 40)] for _ in range(5)])
    [f] = watch.findings
    assert (f.kind, f.state, f.frame, f.count) == (
        "partial_deadlock",
        "sync.Mutex.Lock",
        Frame("main.work", "main.go", 12),
        1,
    )
    assert f.ttd == pytest.approx(3.5)
    # Under the threshold: nothing yet.
    assert _watch([[_g(7, "sync.Mutex.Lock", 12, 40)] for _ in range(3)]).findings == []


def test_a_goroutine_that_runs_between_dumps_is_not_blocked() -> None:
    # Same place, same goroutine, but its trackingSeq moves: it woke and parked again.
    assert _watch([[_g(7, "sync.Cond.Wait", 12, 40 + i)] for i in range(8)]).findings == []


def test_parked_receivers_and_sleepers_are_no_finding() -> None:
    idle = [
        [_g(7, "chan receive", 5, 1), _g(8, "select", 9, 2), _g(9, "sleep", 3, 3)] for _ in range(8)
    ]
    assert _watch(idle).findings == []


def test_a_group_that_keeps_growing_is_a_leak_and_not_also_a_deadlock() -> None:
    series = [[_g(100 + j, "chan send", 20, 1) for j in range(10 * (i + 1))] for i in range(6)]
    watch = _watch(series)
    kinds = [f.kind for f in watch.findings]
    assert kinds == ["goroutine_leak"]
    assert watch.findings[0].ttd == pytest.approx(3.5)  # the fourth dump
    assert "10 -> 20 -> 30 -> 40" in watch.findings[0].detail


def test_a_pool_that_filled_up_is_no_leak() -> None:
    sizes = [6, 12, 12, 12, 12, 12]
    series = [[_g(100 + j, "chan receive", 20, 1) for j in range(n)] for n in sizes]
    assert _watch(series).findings == []


def test_output_reports_are_classified_once() -> None:
    watch = ProgramWatch(0.0, MAIN_ONLY)
    for name, kind in [
        ("log_all_asleep.txt", "global_deadlock"),
        ("log_data_race.txt", "data_race"),
        ("log_concurrent_map_writes.txt", "crash"),
        ("log_panic.txt", "crash"),
    ]:
        scanner = LogScanner()
        hits = [h for line in (DATA / name).read_text().splitlines() for h in scanner.feed(line)]
        hits += scanner.flush()
        found = watch.add_hit(hits[0], at=1.0)
        assert found is not None and found.kind == kind, name
        assert found.frame is not None and found.frame.function.startswith("main."), name
        assert watch.add_hit(hits[0], at=2.0) is None  # the same report again
    assert [f.state for f in watch.findings][2] == "concurrent map writes"


def _observe(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "observe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "FAULTLINE_STATE_DIR": str(state)},
        cwd=state,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "/nonexistent/prog"], "COMMAND: '/nonexistent/prog' not found"),
        ([], "COMMAND: no program given"),
        (["--", "/bin/sh", "-c", "true"], "COMMAND: /bin/sh is not a Go binary"),
        (["--for", "0", "--", "/bin/true"], "--for: '0'"),
        (["--for", "soon", "--", "/bin/true"], "--for: 'soon'"),
        (["--for", "-5", "--", "/bin/true"], "--for: '-5'"),
        (["--blocked", "0", "--", "/bin/true"], "--blocked: '0'"),
        (["--rate", "10", "--", "/bin/true"], "--rate: is the rate of --load"),
        (["--load", "/nonexistent/locustfile.py", "--", "/bin/true"], "--load: "),
        (["--load", "orderd_http", "--rate", "0", "--", "/bin/true"], "--rate: '0'"),
        (["--go-package", str(REPO / "tests/gobugs/internal/shop")], "--go-package: "),
        (["--go-package", "/nonexistent/pkg"], "--go-package: /nonexistent/pkg is not a directory"),
        (["--no-leak-profile", "--", "/bin/true"], "--no-leak-profile: applies to --go-package"),
    ],
)
def test_bad_input_exits_2_naming_the_flag_with_no_run_made(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = _observe(*args, state=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "faultline-reports").exists()


def test_race_asks_for_a_race_build(tmp_path: Path) -> None:
    from harness import gobuild
    from harness.errors import MissingDependency

    try:
        go = gobuild.find_go()  # a Go binary that is not a -race build
    except MissingDependency as err:
        pytest.skip(f"{err.what} is missing: {err.fix}")
    res = _observe("--race", "--", str(go), "version", state=tmp_path)
    assert res.returncode == 2
    assert "--race: " in res.stderr and "is not a -race build" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_help_documents_the_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "observe", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0
    for text in ("--race", "--for SECONDS", "--load LOCUSTFILE", "--go-package", "exit codes"):
        assert text in res.stdout
    top = subprocess.run(
        [sys.executable, "-m", "harness.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "observe" in top.stdout


def test_the_runtime_leak_profile_proves_what_is_blocked_for_good() -> None:
    # The profile of tests/gobugs/cmd/orphansend built with GOEXPERIMENT=goroutineleakprofile.
    text = (DATA / "goroutineleak_orphansend.txt").read_text()
    watch = ProgramWatch(0.0, SHOP)
    [f] = watch.add_leak_profile(parse_dump(text, taken_at=1.5))
    assert (f.kind, f.state, f.source, f.count) == (
        "partial_deadlock",
        "chan send",
        "leak profile",
        1,
    )
    assert f.frame == Frame("main.produce", "example.com/gobugs/cmd/orphansend/main.go", 12)
    assert watch.add_leak_profile(parse_dump(text, taken_at=2.5)) == []  # known already
    keepalive = Dump((_g(1, "select (no cases) (leaked)", 9, None, "main.main"),), taken_at=3.0)
    assert watch.add_leak_profile(keepalive) == []  # select {}: parked on purpose


def test_leak_profile_needs_go_1_26() -> None:
    from harness.observe.leakprofile import available

    assert available("go1.26.8") and available("go1.27rc1")
    assert not available("go1.25.3") and not available("devel")
