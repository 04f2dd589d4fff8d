"""Observers: turn raw signals into events and series on the run's timeline.

=====================  ====================================================
module                 writes
=====================  ====================================================
:mod:`.prom`           ``alert.pending/firing/resolved``, ``alert.rules_loaded``; PromQL series
:mod:`.logs`           ``detector.hit`` (data race, map races, deadlock, panic)
:mod:`.oom`            ``oom.killed``, ``workload.restarted``
:mod:`.etcd`           ``etcd.leader_changed``, ``etcd.quorum_lost/restored``
:mod:`.goroutines`     (pure) leak and deadlock findings from goroutine dumps
=====================  ====================================================

Every watcher has ``start()``/``stop()`` and works as a context manager; a
failing poll is logged and the next one runs. Scenarios write their own
observers by subclassing :class:`~harness.observe.poller.Poller`.
"""

from harness.observe.etcd import LeaderWatcher
from harness.observe.logs import LogDetector
from harness.observe.oom import OomWatcher
from harness.observe.poller import Poller
from harness.observe.prom import AlertWatcher, SeriesSampler

__all__ = [
    "AlertWatcher",
    "LeaderWatcher",
    "LogDetector",
    "OomWatcher",
    "Poller",
    "SeriesSampler",
]
