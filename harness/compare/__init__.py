"""``faultline compare``: two builds under the same repeated load, a verdict per metric.

:mod:`harness.compare.stats` is the pure statistics (pooled repetitions, bootstrap over pairs,
budgets, verdicts); :mod:`harness.compare.cli` runs the builds and the load.
"""

from harness.compare.cli import CompareConfig, Outcome, register, run_compare
from harness.compare.stats import METRICS, Budget, MetricResult, Repetition, compare, parse_budget

__all__ = [
    "METRICS",
    "Budget",
    "CompareConfig",
    "MetricResult",
    "Outcome",
    "Repetition",
    "compare",
    "parse_budget",
    "register",
    "run_compare",
]
