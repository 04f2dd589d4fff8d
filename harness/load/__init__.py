"""Load generation with locust, run in a subprocess and paced by the harness.

See :class:`LoadGenerator`. The locust-side plugin is :mod:`harness.load.locust_side`
(never imported by the harness); the wire format and merging are in
:mod:`harness.load.stats`; rates, phases and maxima in :mod:`harness.load.pacing`.
"""

from harness.load.generator import BUILTIN_LOCUSTFILES, LoadGenerator, resolve_locustfile
from harness.load.pacing import MAX_RATE, MAX_SECONDS, MAX_USERS, MAX_WORKERS, Phase

__all__ = [
    "BUILTIN_LOCUSTFILES",
    "MAX_RATE",
    "MAX_SECONDS",
    "MAX_USERS",
    "MAX_WORKERS",
    "LoadGenerator",
    "Phase",
    "resolve_locustfile",
]
