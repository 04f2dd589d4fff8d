"""R8: failed reverts are reported, naming what is left, and fail the run; a teardown
error never hides the verdict. R11: a run is untouched while a neighbour is SIGKILLed
and cleaned.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    Victim,
    clean_cli,
    leftovers,
    require_local,
    run_ids_under,
)


def _failures(junit: Path) -> dict[str, str]:
    """Test name -> every failure/error text pytest reported for it (call and teardown)."""
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        texts = [
            f"{el.get('message', '')}\n{el.text or ''}"
            for el in case
            if el.tag in ("failure", "error")
        ]
        # A failed call and a teardown error come as two testcases of one name.
        name = case.get("name", "?")
        out[name] = "\n".join([out.get(name, ""), *texts])
    return out


@pytest.mark.timeout(120)
def test_r8_failed_reverts_are_reported_and_fail_the_run(tmp_path: Path, state_root: Path) -> None:
    require_local()
    junit = tmp_path / "junit.xml"
    victim = Victim.pytest_session(
        tmp_path / "v",
        state_root,
        "victim_session.py",
        f"--junitxml={junit}",
        "-k",
        "revert_blocked or verdict_kept or pause_verification",
    )
    rc = victim.wait(timeout=100)
    blockers = [s for s in victim.stages() if s["stage"] == "blocker"]
    try:
        assert rc == 1, f"exit {rc}:\n{victim.output()}"
        got = _failures(junit)
        chains = {b["chain"] for b in blockers}
        assert len(blockers) == 2
        # Each failed revert names what is still in place, with its real name.
        for test in ("test_revert_blocked", "test_verdict_kept"):
            assert "still in place" in got[test] and "iptables chain FL-" in got[test], got[test]
            assert any(c in got[test] for c in chains), got[test]
        # The scenario's own failure is still the headline when the revert fails too.
        assert "VERDICT-MARKER" in got["test_verdict_kept"]
        assert "w0 still paused" in got["test_pause_verification"], got
        # What is reported as left is really left (and only the chains are).
        for b in blockers:
            assert leftovers(b["run_id"], state_root), "reported a leftover that is not there"
    finally:
        for b in blockers:
            subprocess.run(["iptables", "-w", "-F", b["blocker"]], capture_output=True)
            subprocess.run(["iptables", "-w", "-X", b["blocker"]], capture_output=True)
    # Once the blocker is gone, clean completes the revert.
    res = clean_cli(state_root)
    assert res.returncode == 0, res.stdout + res.stderr
    for b in blockers:
        assert not leftovers(b["run_id"], state_root)


@pytest.mark.timeout(120)
def test_r11_a_neighbour_sigkilled_and_cleaned_leaves_a_run_untouched(
    tmp_path: Path, state_root: Path
) -> None:
    require_local()
    go = tmp_path / "go"
    never = tmp_path / "never"
    # A: a bare harness run without watchdog, so only clean can reap it.
    a = Victim.run_script(
        tmp_path / "a", state_root, VICTIM_WATCHDOG="0", VICTIM_GO_FILE=str(never)
    )
    b = Victim.pytest_session(
        tmp_path / "b", state_root, "victim_session.py::test_isolated", VICTIM_GO_FILE=str(go)
    )
    a.wait_stage("hold", timeout=60)
    b.wait_stage("hold", timeout=60)
    a_id, b_id = a.run_id(), b.run_id()
    assert a_id and b_id
    a.kill()
    res = clean_cli(state_root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert a_id in res.stdout and b_id not in res.stdout
    assert not leftovers(a_id, state_root)
    assert run_ids_under(state_root) == [b_id]
    go.touch()
    assert b.wait(timeout=60) == 0, b.output()
    assert "done" in [s["stage"] for s in b.stages()]
    assert not leftovers(b_id, state_root)
