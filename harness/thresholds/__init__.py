"""``faultline calibrate``: an alert rule's threshold and ``for:`` from measured baseline and
fault runs (seed 002 §2.5).

:mod:`~harness.thresholds.offline` is the pure logic (expression split, Prometheus ``for``
replay, false positives, TTD, recommendation); :mod:`~harness.thresholds.rulefile` reads and
writes rule files and promtool tests; :mod:`~harness.thresholds.cli` runs the real stack.
"""

from harness.thresholds.cli import CalibrateConfig, Calibration, calibrate, register

__all__ = ["CalibrateConfig", "Calibration", "calibrate", "register"]
