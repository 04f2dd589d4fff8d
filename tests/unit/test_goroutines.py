"""Goroutine-dump parsing and leak/deadlock classification on real dumps.

The dumps in tests/unit/data/ come from tests/unit/data/dumpgen (see its header):
``goroutines_leak_{5,25,50}.txt`` after 5, 25 and 50 requests to its leaking
handler, one second apart; ``goroutines_minutes.txt`` from a process that ran
75 s with a GC every 5 s, so blocked goroutines show "1 minutes".
"""

from __future__ import annotations

from pathlib import Path

from harness.observe.buildinfo import ProjectCode
from harness.observe.goroutines import (
    BLOCKING_STATES,
    Dump,
    Frame,
    Goroutine,
    find_deadlocks,
    find_leaks,
    group,
    parse_dump,
)

DATA = Path(__file__).parent / "data"
SOURCE = "dumpgen/main.go"
LEAK_LINE, LOCK_LINE, SEND_LINE, TICKER_FN = 34, 42, 50, "main.serve.func2"


def _leak_dumps(with_requests: bool = True) -> list[Dump]:
    return [
        parse_dump(
            (DATA / f"goroutines_leak_{n}.txt").read_text(),
            taken_at=float(i),
            requests=float(n) if with_requests else None,
        )
        for i, n in enumerate((5, 25, 50))
    ]


def test_parse_header_state_minutes_and_frames() -> None:
    dump = parse_dump((DATA / "goroutines_minutes.txt").read_text())
    assert len(dump.goroutines) == 27
    locked = [g for g in dump.goroutines if g.state == "sync.Mutex.Lock"]
    assert len(locked) == 2 and all(g.minutes == 1 for g in locked)
    g = locked[0]
    assert g.frames[0].function == "internal/sync.runtime_SemacquireMutex"
    assert g.frames[0].file.endswith("/runtime/sema.go")
    assert "sync.(*Mutex).Lock" in [f.function for f in g.frames]
    top = g.top_frame()
    assert top is not None
    assert (top.function, top.file.endswith(SOURCE), top.line) == ("main.transfer", True, LOCK_LINE)
    assert g.created_by is not None and g.created_by.function == "main.serve"
    fresh = [g for g in dump.goroutines if g.state == "chan receive" and g.minutes == 0]
    assert len(fresh) == 11  # 10 new leaks + the ticker loop


def test_group_by_state_and_stack() -> None:
    groups = group(parse_dump((DATA / "goroutines_leak_50.txt").read_text()))
    sizes = sorted(g.count for g in groups.values())
    assert sizes[-1] == 50
    biggest = max(groups.values(), key=lambda g: g.count)
    assert biggest.state == "chan receive"
    assert biggest.signature[1] == "main.waitForReply"


def test_leak_found_with_its_frame_and_rate() -> None:
    leaks = find_leaks(_leak_dumps())
    assert len(leaks) == 1
    leak = leaks[0]
    assert leak.kind == "leak" and leak.count == 50
    assert leak.top_frame is not None
    assert leak.top_frame.function == "main.waitForReply"
    assert leak.top_frame.file.endswith(SOURCE) and leak.top_frame.line == LEAK_LINE
    assert "5 -> 25 -> 50" in leak.detail and "1.00 per request" in leak.detail


def test_no_leak_when_requests_did_not_move() -> None:
    dumps = _leak_dumps()
    frozen = [Dump(d.goroutines, d.taken_at, 7.0) for d in dumps]
    assert find_leaks(frozen) == []


def test_no_leak_in_a_steady_process() -> None:
    d = parse_dump((DATA / "goroutines_leak_50.txt").read_text())
    assert find_leaks([d, d, d]) == []
    assert find_leaks([d]) == []


def test_no_leak_when_the_growing_group_churns() -> None:
    # ctl_ctxtimeout on a loaded machine: ~10 watchers on a 200 ms timeout live at
    # a time, a slow spell piles up 18, but no watcher outlives one dump interval.
    frame = Frame("main.main.func1", "/src/main.go", 15)
    next_id = iter(range(100, 10_000))

    def dump(n: int, at: float) -> Dump:
        gs = tuple(Goroutine(next(next_id), "chan receive", 0, (frame,), None) for _ in range(n))
        return Dump(gs, taken_at=at)

    churning = [dump(n, float(i)) for i, n in enumerate((9, 10, 10, 18))]
    assert find_leaks(churning) == []
    # The same counts made of goroutines that stay are a leak.
    kept = list(churning[-1].goroutines)
    staying = [Dump(tuple(kept[:n]), float(i)) for i, n in enumerate((9, 10, 10, 18))]
    assert [f.count for f in find_leaks(staying)] == [18]


def test_deadlocks_across_dumps_exclude_the_leak_and_the_parked_ticker_loop() -> None:
    found = find_deadlocks(_leak_dumps(), min_blocked=1.5)
    by_state = {f.state: f for f in found}
    assert set(by_state) == {"sync.Mutex.Lock", "chan send"}
    lock = by_state["sync.Mutex.Lock"]
    assert lock.count == 2 and lock.top_frame is not None
    assert (lock.top_frame.function, lock.top_frame.line) == ("main.transfer", LOCK_LINE)
    send = by_state["chan send"]
    assert send.top_frame is not None and send.top_frame.line == SEND_LINE


def test_ticker_loop_is_parked_unless_receives_and_selects_are_asked_for() -> None:
    found = find_deadlocks(_leak_dumps(), min_blocked=1.5, states=BLOCKING_STATES)
    assert TICKER_FN in {f.top_frame.function for f in found if f.top_frame}
    parked = find_deadlocks(_leak_dumps(), min_blocked=1.5)
    assert TICKER_FN not in {f.top_frame.function for f in parked if f.top_frame}


def test_deadlock_threshold() -> None:
    # The dumps span 2 s: a 5 s threshold is not reached without the runtime's minutes.
    assert find_deadlocks(_leak_dumps(), min_blocked=5.0) == []


def test_deadlock_from_runtime_minutes_in_one_dump() -> None:
    dump = parse_dump((DATA / "goroutines_minutes.txt").read_text())
    found = find_deadlocks([dump], min_blocked=60.0, states=BLOCKING_STATES)
    states = sorted(f.state for f in found)
    # One dump cannot tell a leak: the leaked receivers that waited a minute count too.
    assert states == ["chan receive", "chan send", "sync.Mutex.Lock"]
    default = sorted(f.state for f in find_deadlocks([dump], min_blocked=60.0))
    assert default == ["chan send", "sync.Mutex.Lock"]
    receive = next(f for f in found if f.state == "chan receive")
    assert receive.top_frame is not None and receive.top_frame.function == "main.waitForReply"


def test_project_code_is_main_and_the_main_module() -> None:
    project = ProjectCode(("github.com/faultline/faultline/go_targets",))
    assert project("main.transfer")
    assert project("github.com/faultline/faultline/go_targets/internal/orderd.(*S).Reserve")
    assert not project("github.com/faultline/faultline/go_targetsx/a.F")
    assert not project("sync.(*Mutex).Lock")
    assert not project("net/http.(*conn).serve")
    assert not project("google.golang.org/grpc.(*Server).serveStreams")
    assert not ProjectCode()("github.com/faultline/faultline/go_targets/internal/orderd.F")


def test_crash_stacks_parse_too() -> None:
    dump = parse_dump((DATA / "log_concurrent_map_writes.txt").read_text())
    g = dump.goroutines[0]
    assert g.state == "running"
    top = g.top_frame()
    assert top is not None and top.function == "main.mapwrites.func1"


def _pool(stuck: int, idle: int, at: float) -> Dump:
    """A worker pool: ``stuck`` workers blocked on a send, ``idle`` waiting in a select."""
    send = Frame("example.com/svc/pool.(*Pool).worker", "pool.go", 75)
    wait = Frame("example.com/svc/pool.(*Pool).worker", "pool.go", 60)
    gs = [Goroutine(i, "chan send", 0, (send,), None) for i in range(stuck)]
    gs += [Goroutine(100 + i, "select", 0, (wait,), None) for i in range(idle)]
    return Dump(tuple(gs), taken_at=at)


def test_a_pool_that_filled_up_then_plateaued_is_a_deadlock_not_a_leak() -> None:
    # 0 -> 8 stuck workers, then 8 for three more seconds.
    dumps = [_pool(n, 4, float(t)) for t, n in enumerate([0, 3, 6, 8, 8, 8, 8])]
    found = find_deadlocks(dumps, min_blocked=2.0, project=ProjectCode(("example.com/svc",)))
    assert [(f.state, f.count, f.top_frame and f.top_frame.line) for f in found] == [
        ("chan send", 8, 75)
    ]
    # Still growing at the last dump: that is find_leaks' business.
    growing = [_pool(n, 4, float(t)) for t, n in enumerate([0, 8, 16, 24, 32])]
    assert [
        f.state
        for f in find_deadlocks(growing, min_blocked=2.0, project=ProjectCode(("example.com/svc",)))
    ] == []
