import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cleanup
from harness.ledger import Ledger
from harness.run import Run, clean_runs, owner_alive


def _owned_file(tmp_path: Path, value: str) -> Path:
    d = tmp_path / "faultline-x"
    d.mkdir(exist_ok=True)
    p = d / "limit"
    p.write_text(value)
    return p


def test_intent_is_on_disk_before_the_mutation_and_revert_runs_once(tmp_path: Path) -> None:
    target = _owned_file(tmp_path, "-1")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    seq = ledger.record("cpu quota", {"op": "write_file", "path": str(target), "value": "-1"})
    # Crash point "recorded, not applied": the entry is pending.
    assert [e.seq for e in ledger.pending()] == [seq]
    target.write_text("50000")
    ledger.applied(seq)
    assert ledger.revert(seq) is True
    assert target.read_text() == "-1"
    target.write_text("sentinel")
    assert ledger.revert(seq) is False  # idempotent: the inverse does not run twice
    assert target.read_text() == "sentinel"
    assert ledger.pending() == []


def test_revert_all_runs_newest_first_and_reports_failures_without_stopping(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    a = _owned_file(tmp_path, "a")
    ledger.record("first", {"op": "write_file", "path": str(a), "value": "first"})
    ledger.record("refused", {"op": "remove_tree", "path": "/etc/not-ours"})
    ledger.record("last", {"op": "write_file", "path": str(a), "value": "last"})
    errors = ledger.revert_all()
    assert len(errors) == 1 and "not created by faultline" in errors[0]
    assert a.read_text() == "first"  # newest first: "last" ran, then "first"
    assert [e.action for e in ledger.pending()] == ["refused"]


def test_unknown_inverse_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(ValueError, match="unknown inverse"):
        ledger.record("x", {"op": "rm_rf_slash"})
    assert not (tmp_path / "ledger.jsonl").exists()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record("a", {"op": "remove_tree", "path": str(tmp_path / "faultline-a")})
    with open(ledger.path, "a") as fh:
        fh.write('{"type": "do", "seq": 2, "act')
    assert len(ledger.entries()) == 1


def test_overdue_only_reverts_entries_past_their_deadline(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    f = _owned_file(tmp_path, "on")
    ledger.record(
        "due", {"op": "write_file", "path": str(f), "value": "off"}, deadline=time.time() - 1
    )
    ledger.record("not due", {"op": "write_file", "path": str(f), "value": "x"}, deadline=None)
    assert ledger.revert_all(overdue_only=True) == []
    assert f.read_text() == "off"
    assert [e.action for e in ledger.pending()] == ["not due"]


def test_all_inverse_ops_refuse_what_faultline_did_not_create() -> None:
    with pytest.raises(ValueError):
        cleanup.remove_tree("/tmp/someone-elses")
    with pytest.raises(ValueError):
        cleanup.write_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", "1")
    with pytest.raises(ValueError):
        cleanup.remove_iptables_chain("INPUT", parents=[])
    with pytest.raises(ValueError):
        cleanup.remove_netns("default")


_CHILD = """
import subprocess, sys, time
from pathlib import Path
from harness.run import Run
run = Run.open(Path(sys.argv[1]))
seq = run.ledger.record("sleeper", {"op": "kill_tagged", "run_id": run.run_id})
p = subprocess.Popen(["sleep", "300"], env=run.child_env("sleeper"))
run.ledger.applied(seq, pid=p.pid)
print(run.run_id, run.dir, p.pid, flush=True)
time.sleep(300)
"""


def test_sigkilled_run_is_reaped_by_the_watchdog_and_clean_is_idempotent(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    run_id, run_dir, _sleeper = child.stdout.readline().split()
    assert cleanup.tagged_pids(run_id) != []
    child.kill()
    child.wait()
    # The watchdog (own session) sees the owner gone and reaps the run.
    deadline = time.monotonic() + 15
    while Path(run_dir).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(run_dir).exists()
    # The watchdog carries the tag too, and exits right after removing the dir.
    while cleanup.tagged_pids(run_id) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert cleanup.tagged_pids(run_id) == []
    assert clean_runs(tmp_path) == []  # nothing left: a second clean does nothing


def test_clean_reaps_a_dead_run_and_leaves_a_live_one_alone(tmp_path: Path) -> None:
    live = Run.open(tmp_path, watchdog=False)
    dead_dir = tmp_path / "runs" / "faultline-dead"
    dead_dir.mkdir(parents=True)
    (dead_dir / "owner.json").write_text(json.dumps({"pid": 999999, "starttime": 1}))
    target = _owned_file(tmp_path, "changed")
    Ledger(dead_dir / "ledger.jsonl").record(
        "x", {"op": "write_file", "path": str(target), "value": "restored"}
    )
    reports = clean_runs(tmp_path)
    assert [(r.run_id, r.reverted, r.errors) for r in reports] == [("dead", 1, [])]
    assert target.read_text() == "restored"
    assert not dead_dir.exists()
    assert owner_alive(live.dir)
    assert live.close() == []
    assert not live.dir.exists()
