"""wait_for: a probe's errors mean "not yet", but Hopeless ends the wait at once."""

from __future__ import annotations

import pytest

from harness.wait import Hopeless, WaitTimeout, wait_for


def test_errors_mean_not_yet_and_the_last_one_is_named() -> None:
    calls = []

    def probe() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return 7

    assert wait_for(probe, timeout=5, interval=0) == 7
    with pytest.raises(WaitTimeout, match="ConnectionRefusedError"):
        wait_for(lambda: (_ for _ in ()).throw(ConnectionRefusedError("no")), timeout=0)


def test_a_hopeless_probe_ends_the_wait_at_once() -> None:
    calls = []

    def probe() -> None:
        calls.append(1)
        raise Hopeless("exited with 1")

    # A timeout of an hour: only Hopeless can end this wait in time.
    with pytest.raises(Hopeless, match="exited with 1"):
        wait_for(probe, timeout=3600, interval=0.01)
    assert len(calls) == 1
