"""R1 and R10: SIGKILLed runs are fully reaped by ``faultline clean``; no key survives.

Each iteration starts a victim harness run (workloads, sometimes a 1-member
TLS etcd, CPU throttle + partition + freezer pause injected and reverted in
cycles) and SIGKILLs it at a uniformly random moment of its life: during
start, while faults are held, mid-revert, during close. The watchdog is
alive in half the iterations (it reaps by itself within about a second;
``clean`` runs at once, racing it, or after it finished), disabled in a
quarter, and SIGKILLed with the harness in the last quarter (so ``clean``
does all the work). Then the host is searched for anything of the run.

FAULTLINE_R1_ITERATIONS (default 50, the promise's count; one iteration is
about 1.5 s here) and FAULTLINE_R1_ETCD_EVERY (default 5: every 5th run
starts etcd with its PKI, which R10 then looks for) size the campaign.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from harness.wait import wait_until
from tests.reliability.conftest import (
    Victim,
    clean_cli,
    docker_leftovers,
    env_int,
    leftovers,
    require_local,
    run_ids_under,
    watchdog_pids,
)

ITERATIONS = env_int("FAULTLINE_R1_ITERATIONS", 50)
ETCD_EVERY = env_int("FAULTLINE_R1_ETCD_EVERY", 5)
# Life of an undisturbed victim from its "begin" (imports done, Run.open next) to
# "closed": ~1.5 s plain, ~1.7 s with etcd (measured here). Kills land uniformly in it.
LIFETIME = {False: 1.35, True: 1.6}


@dataclass
class Outcome:
    iteration: int
    run_id: str | None
    watchdog: str  # racing (clean at once) | alive (clean after it) | disabled | killed
    etcd: bool
    stage: str  # where the victim was when it died
    clean_rc: int
    clean_out: str
    left: list[str]


@dataclass
class Campaign:
    root: Path
    tmp: Path
    outcomes: list[Outcome]


def _no_watchdog(run_id: str) -> bool:
    return not watchdog_pids(run_id)


def _one(i: int, rng: random.Random, root: Path, tmp: Path) -> Outcome:
    etcd = ETCD_EVERY > 0 and i % ETCD_EVERY == ETCD_EVERY - 1
    mode = ("racing", "alive", "disabled", "killed")[i % 4]
    victim = Victim.run_script(
        tmp / f"victim-{i:03d}",
        root,
        VICTIM_WATCHDOG="0" if mode == "disabled" else "1",
        VICTIM_ETCD="1" if etcd else "0",
        VICTIM_WORKLOADS=str(rng.choice([1, 2])),
        VICTIM_CYCLES="2",
    )
    victim.wait_stage("begin", timeout=60)
    delay = rng.uniform(0.0, LIFETIME[etcd])
    # Not a readiness wait: the kill moment itself is what is randomised.
    with contextlib.suppress(subprocess.TimeoutExpired):  # still running, as wanted
        victim.proc.wait(timeout=delay)
    rid = victim.run_id()
    if mode == "killed" and rid is not None:
        for pid in watchdog_pids(rid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stage = victim.last_stage()
    victim.kill()
    ids = set(run_ids_under(root)) | ({rid} if rid else set())
    if mode == "alive":
        # The watchdog reaps on its own: let it finish (in "racing", clean runs alongside it).
        for r in ids:
            wait_until(partial(_no_watchdog, r), timeout=15, interval=0.05)
    res = clean_cli(root)
    left = [x for r in sorted(ids) for x in leftovers(r, root)]
    return Outcome(i, rid, mode, etcd, stage, res.returncode, res.stdout + res.stderr, left)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    require_local()
    tmp = tmp_path_factory.mktemp("r1")
    root = tmp / "state"
    seed = env_int("FAULTLINE_R1_SEED", int(time.time()))
    rng = random.Random(seed)
    outcomes = []
    t0 = time.monotonic()
    for i in range(ITERATIONS):
        outcomes.append(_one(i, rng, root, tmp))
    took = time.monotonic() - t0
    stages = Counter(o.stage for o in outcomes)
    print(
        f"\nR1: {ITERATIONS} SIGKILLed runs in {took:.1f}s (seed {seed}); killed at: {dict(stages)}"
    )
    yield Campaign(root, tmp, outcomes)
    if run_ids_under(root):
        clean_cli(root)


def test_r1_every_sigkilled_run_is_reaped_by_clean(campaign: Campaign) -> None:
    bad = [o for o in campaign.outcomes if o.left or o.clean_rc != 0]
    assert not bad, "\n".join(
        f"#{o.iteration} run {o.run_id} ({o.watchdog} watchdog, etcd={o.etcd}, killed at "
        f"{o.stage}): clean exit {o.clean_rc}: {o.clean_out.strip()} | left: {o.left}"
        for o in bad
    )
    ids = [o.run_id for o in campaign.outcomes if o.run_id]
    assert not docker_leftovers(ids)
    assert not run_ids_under(campaign.root), "run directories left under the state root"


def test_r1_the_kills_hit_every_phase(campaign: Campaign) -> None:
    # The campaign only shows something if kills landed during start, faults and revert.
    if ITERATIONS < 20:
        pytest.skip("a campaign under 20 iterations is too small to cover every phase")
    stages = {o.stage for o in campaign.outcomes}
    for phase in (("begin", "run", "start", "etcd"), ("hold",), ("revert", "inject", "reverted")):
        assert stages & set(phase), f"no kill during {phase}: {sorted(stages)}"
    assert any(o.watchdog in ("disabled", "killed") and o.run_id for o in campaign.outcomes)


def test_r10_no_private_key_survives_the_campaign(campaign: Campaign) -> None:
    if not any(o.etcd and o.run_id for o in campaign.outcomes):
        pytest.skip("no run of the campaign got far enough to make a PKI")
    keys, pem = [], []
    for path in campaign.tmp.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".key" or path.name.endswith("-key.pem"):
            keys.append(str(path))
        try:
            if b"PRIVATE KEY" in path.read_bytes():
                pem.append(str(path))
        except OSError:
            pass
    assert not keys, f"private key files left: {keys}"
    assert not pem, f"a PEM private key header in: {pem}"


def test_r10_keys_are_0600_in_the_0700_run_directory_and_go_with_it(state_root: Path) -> None:
    from harness.pki import Pki
    from harness.run import Run

    run = Run.open(watchdog=False)
    try:
        pki = Pki.create(run)
        keys = [pki.server("etcd-0").key, pki.peer("etcd-0").key, pki.client("c").key]
        for key in keys:
            assert key.is_relative_to(run.dir)
            assert key.stat().st_mode & 0o777 == 0o600, key
            assert b"PRIVATE KEY" in key.read_bytes()
        assert run.dir.stat().st_mode & 0o777 == 0o700
    finally:
        assert run.close() == []
    assert not any(k.exists() for k in keys)
    assert not run.dir.exists()
