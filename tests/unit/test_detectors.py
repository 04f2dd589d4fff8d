"""Log, OOM and etcd-leader detectors on captured logs and scripted observations."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.base import WorkloadStatus
from harness.observe.etcd import LeaderWatcher
from harness.observe.logs import LogDetector, LogScanner
from harness.observe.oom import OomWatcher
from harness.timeline import Timeline

DATA = Path(__file__).parent / "data"


def _scan(text: str) -> list:  # type: ignore[type-arg]
    scanner = LogScanner()
    hits = []
    for line in text.splitlines():
        hits += scanner.feed(line)
    return hits + scanner.flush()


def test_data_race_captures_both_stacks_up_to_the_closing_rule() -> None:
    hits = _scan((DATA / "log_data_race.txt").read_text())
    assert [h.pattern for h in hits] == ["data_race"]
    race = hits[0]
    assert race.complete
    assert race.first_line == "WARNING: DATA RACE"
    assert "Read at" in race.stack and "Previous write at" in race.stack
    assert "Goroutine 8 (finished) created at:" in race.stack
    assert "==================" not in race.stack and "Found 1 data race" not in race.stack
    top = race.top_frame()
    assert top is not None and (top.function, top.line) == ("main.race.func1", 72)


@pytest.mark.parametrize(
    ("log", "pattern", "function"),
    [
        ("log_concurrent_map_writes.txt", "concurrent_map_writes", "main.mapwrites.func1"),
        ("log_all_asleep.txt", "all_goroutines_asleep", "main.main"),
        ("log_panic.txt", "panic", "main.main"),
    ],
)
def test_fatal_reports_capture_the_failing_goroutine(log: str, pattern: str, function: str) -> None:
    hits = _scan((DATA / log).read_text())
    assert [h.pattern for h in hits] == [pattern]
    hit = hits[0]
    # The process died right after the report: it ends with the log, not a blank line.
    assert hit.first_line.startswith(("fatal error:", "panic:"))
    assert sum(line.startswith("goroutine ") for line in hit.lines) == 1
    top = hit.top_frame()
    assert top is not None and top.function == function


def test_map_iteration_pattern_and_ordinary_lines() -> None:
    text = (
        "level=info msg=started\n"
        "fatal error: concurrent map iteration and map write\n\n"
        "goroutine 12 [running]:\nmain.walk()\n\t/src/main.go:10 +0x1\n\n"
        "goroutine 1 [chan receive]:\nmain.main()\n\t/src/main.go:3 +0x1\n"
    )
    hits = _scan(text)
    assert [h.pattern for h in hits] == ["concurrent_map_iteration"]
    assert "goroutine 1 " not in hits[0].stack


def test_panic_frames_in_a_stack_are_not_new_hits() -> None:
    text = (
        "panic: boom [recovered]\n\tpanic: boom\n\ngoroutine 1 [running]:\n"
        "panic({0x4b, 0xc0})\n\t/go/src/runtime/panic.go:770 +0x132\n"
        "main.main()\n\t/src/main.go:7 +0x1\n\n"
    )
    hits = _scan(text)
    assert len(hits) == 1
    top = hits[0].top_frame()
    assert top is not None and top.function == "main.main"


def test_log_detector_tails_appends_and_restarts(tmp_path: Path) -> None:
    log = tmp_path / "orderd.log"
    tl = Timeline()
    det = LogDetector(tl, {"orderd": log, "absent": tmp_path / "never.log"})
    det.poll()  # no file yet: nothing, no error
    race = (DATA / "log_data_race.txt").read_text()
    half = len(race) // 2
    log.write_text("starting\n" + race[:half])
    det.poll()
    assert tl.events("detector.hit") == []  # a report mid-write waits for the rest
    with log.open("a") as fh:
        fh.write(race[half:])
    det.poll()
    hits = tl.events("detector.hit")
    assert [(e.name, e.detail["workload"]) for e in hits] == [("data_race", "orderd")]
    assert "Previous write at" in hits[0].detail["stack"]
    assert hits[0].detail["top_frame"].startswith("main.race.func1 (")
    # the process restarts: the log is truncated and a crash follows
    log.write_text((DATA / "log_panic.txt").read_text())
    det.stop()
    assert [e.name for e in tl.events("detector.hit")] == ["data_race", "panic"]


class _ScriptedBackend:
    """Statuses in sequence: a fake standing in for a backend in a pure-logic test."""

    name = "scripted"

    def __init__(self, statuses: list[WorkloadStatus]) -> None:
        self.statuses = statuses

    def status(self, name: str) -> WorkloadStatus:
        if not self.statuses:
            raise RuntimeError("gone")
        return self.statuses.pop(0)


def _st(oom_kills: int, restarts: int) -> WorkloadStatus:
    return WorkloadStatus(
        running=True,
        paused=False,
        exit_code=137 if oom_kills else None,
        oom_killed=oom_kills > 0,
        oom_kills=oom_kills,
        restarts=restarts,
        healthy=True,
    )


def test_oom_watcher_counts_from_its_baseline() -> None:
    tl = Timeline()
    backend = _ScriptedBackend([_st(1, 1), _st(1, 1), _st(3, 2), _st(3, 2)])
    w = OomWatcher(backend, tl, ["orderd"])  # type: ignore[arg-type]
    for _ in range(5):  # the fifth poll finds the workload gone: no event, no error
        w.poll()
    assert [e.detail["oom_kills"] for e in tl.events("oom.killed")] == [2, 3]
    assert [e.detail["restarts"] for e in tl.events("workload.restarted")] == [2]


def test_leader_watcher_changes_and_quorum() -> None:
    tl = Timeline()
    w = LeaderWatcher(lambda: None, tl, min_leaderless=2.0)
    script = [
        (0.0, "m0"),
        (1.0, "m0"),
        (2.0, None),  # a short election: not quorum loss
        (2.5, "m1"),
        (5.0, None),
        (6.0, None),
        (7.5, None),
        (9.0, "m1"),
        (10.0, "m2"),
    ]
    for at, leader in script:
        w.observe(leader, at)
    got = [(e.kind, e.t) for e in tl.events()]
    assert got == [
        ("etcd.leader_changed", 2.5),
        ("etcd.quorum_lost", 5.0),
        ("etcd.quorum_restored", 9.0),
        ("etcd.leader_changed", 10.0),
    ]
    assert tl.events("etcd.leader_changed")[0].detail == {"from": "m0", "to": "m1"}


def test_leader_watcher_poll_treats_errors_as_no_leader() -> None:
    tl = Timeline()

    def unreachable() -> str | None:
        raise ConnectionError("refused")

    w = LeaderWatcher(unreachable, tl, min_leaderless=0.0)
    w.poll()
    assert [e.kind for e in tl.events()] == ["etcd.quorum_lost"]


def test_map_read_and_write_pattern() -> None:
    # The third form of Go's concurrent map crash (a reader caught a writer).
    text = (
        "fatal error: concurrent map read and map write\n\n"
        "goroutine 7 [running]:\nmain.lookup()\n\t/src/main.go:21 +0x1\n\n"
    )
    hits = _scan(text)
    assert [h.pattern for h in hits] == ["concurrent_map_read"]
    top = hits[0].top_frame()
    assert top is not None and top.function == "main.lookup"
