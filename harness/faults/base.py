"""The :class:`Fault` lifecycle: checked, recorded, applied, reverted, verified.

Every fault follows the same steps, in this order:

1. ``_prepare``: resolve the selector and check the allowlist. Nothing is
   touched yet, so a refused target leaves the ledger empty.
2. ``_apply``: each mutation goes through :meth:`Fault._step`, which writes
   intent + inverse to the ledger (with ``deadline = now + max_duration``, so
   the run's watchdog undoes it if the harness dies) *before* mutating.
3. ``revert``: steps are undone newest first (in-process ``undo`` when given,
   else the recorded inverse), then ``_leftovers`` probes the real state and a
   :class:`RevertError` names whatever is still in place.

>>> with CpuThrottle(scope, "leader", cores=0.1, max_duration=20):   # doctest: +SKIP
...     observe()                      # reverted on every exit path
>>> with compose(storm, squeeze):      # doctest: +SKIP
...     observe()
"""

from __future__ import annotations

import abc
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from harness.errors import BackendUnavailable, ConfigError, FaultError, RevertError
from harness.run import signals_deferred

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.run import Run

__all__ = [
    "MAX_FAULT_SECONDS",
    "Cluster",
    "Composite",
    "Fault",
    "Scope",
    "compose",
]

log = logging.getLogger(__name__)

# No fault may outlive this: a forgotten fault in a shared CI machine is an incident.
MAX_FAULT_SECONDS = 3600.0


class Cluster(Protocol):
    """What selectors need from a cluster (``EtcdCluster`` fits)."""

    def members(self) -> Sequence[Any]: ...

    def leader(self) -> Any: ...


@dataclass
class Scope:
    """Where faults act: the run (ledger, timeline), its backend, and what selectors see.

    ``cluster`` resolves ``leader``/``follower``/``minority``/``any``;
    ``workloads`` lists other workload names of the run a fault may target.
    """

    run: Run
    backend: Backend | None = None
    cluster: Cluster | None = None
    workloads: Sequence[str] = ()
    rng: random.Random = field(default_factory=random.Random)

    def need_backend(self, fault: str) -> Backend:
        if self.backend is None:
            raise ConfigError(f"{fault}.scope.backend", "this fault acts through a backend")
        return self.backend


def check_positive(field_name: str, value: float, *, upper: float | None = None) -> float:
    """Validate a knob: a finite number > 0 (and <= ``upper``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field_name, f"{value!r} is not a number", expected="a positive number")
    if value <= 0 or (upper is not None and value > upper):
        bound = f" and <= {upper:g}" if upper is not None else ""
        raise ConfigError(field_name, f"{value!r} is out of range", expected=f"> 0{bound}")
    return float(value)


@dataclass
class _Step:
    seq: int
    action: str
    undo: Callable[[], None] | None


class Fault(abc.ABC):
    """One fault: what x where x for how long. Use as a context manager."""

    kind: ClassVar[str]

    def __init__(self, scope: Scope, *, max_duration: float, name: str | None = None) -> None:
        self.scope = scope
        self.name = name or self.kind
        self.max_duration = check_positive(
            f"{self.name}.max_duration", max_duration, upper=MAX_FAULT_SECONDS
        )
        self.targets: list[str] = []
        self.detail: dict[str, Any] = {}  # achieved figures, shown on the timeline
        self._steps: list[_Step] = []
        self._state = "new"  # new -> injected -> reverted
        self._deadline = 0.0

    # --- what subclasses provide -------------------------------------------------

    def available(self, backend: Backend | None) -> str | None:
        """None if the fault can run here, else why not and how to fix it."""
        return None

    @abc.abstractmethod
    def knobs(self) -> dict[str, Any]:
        """The fault's parameters, for the timeline and reports."""

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Resolve targets into ``self.targets`` and check the allowlist; touch nothing."""

    @abc.abstractmethod
    def _apply(self) -> None:
        """Make the change, every mutation through :meth:`_step`."""

    def _before_undo(self) -> None:  # noqa: B027 - optional hook
        """Collect figures (e.g. a storm's summary) before the steps are undone."""

    def _after_undo(self) -> None:  # noqa: B027 - optional hook
        """Bring things back after the inverses ran (e.g. restart a member)."""

    @abc.abstractmethod
    def _leftovers(self) -> list[str]:
        """Probe the real state after revert; describe whatever is still faulted."""

    # --- the lifecycle --------------------------------------------------------------

    @property
    def injected(self) -> bool:
        return self._state == "injected"

    def _step(
        self,
        action: str,
        inverse: dict[str, Any],
        do: Callable[[], Any],
        *,
        undo: Callable[[], None] | None = None,
    ) -> Any:
        """Record ``inverse`` in the ledger, then ``do()``; remembered for revert."""
        seq = self._record(action, inverse, undo=undo)
        result = do()
        self.scope.run.ledger.applied(seq)
        return result

    def _record(
        self, action: str, inverse: dict[str, Any], *, undo: Callable[[], None] | None = None
    ) -> int:
        """Only record (for one mutation with several inverses); mark it applied yourself."""
        seq = self.scope.run.ledger.record(
            f"{self.name}: {action}", inverse, deadline=self._deadline
        )
        self._steps.append(_Step(seq, action, undo))
        return seq

    def inject(self) -> Self:
        if self._state != "new":
            raise FaultError(f"{self.name}: a fault is injected once (state {self._state})")
        # The allowlist first: an unsafe target is refused even where the fault could not run.
        self._prepare()
        why = self.available(self.scope.backend)
        if why is not None:
            raise BackendUnavailable(self.name, why)
        self._deadline = time.time() + self.max_duration
        self._state = "injected"
        t0 = self.scope.run.timeline.now()
        try:
            self._apply()
        except BaseException as err:
            # Undo whatever part was applied; the original error is what matters.
            try:
                self.revert(record=False)
            except RevertError as rerr:
                err.add_note(f"and the partial injection could not be undone: {rerr}")
            raise
        self.scope.run.timeline.event(
            "fault.injected",
            self.name,
            at=t0,
            fault=self.kind,
            targets=list(self.targets),
            knobs=self.knobs(),
            max_duration=self.max_duration,
            **self.detail,
        )
        log.info("injected %s on %s", self.name, ", ".join(self.targets) or "-")
        return self

    def revert(self, *, record: bool = True) -> None:
        """Undo every applied step, verify by probing, raise RevertError if anything is left.

        Idempotent; steps the watchdog already undid (past the deadline) are skipped.
        """
        if self._state != "injected":
            return
        with signals_deferred():
            errors: list[str] = []
            ledger = self.scope.run.ledger
            try:
                self._before_undo()
            except Exception as err:  # noqa: BLE001 - the inverses must still run
                errors.append(f"collecting figures: {err}")
            done = {e.seq for e in ledger.entries() if e.reverted}
            for step in reversed(self._steps):
                if step.seq in done and step.undo is None:
                    continue
                try:
                    if step.undo is not None:
                        # Even after the watchdog ran the inverse: the backend's own
                        # view (e.g. "paused") is brought back by its undo.
                        step.undo()
                        if step.seq not in done:
                            ledger.mark_reverted(step.seq)
                    else:
                        ledger.revert(step.seq)
                except Exception as err:  # noqa: BLE001 - fall back, then report
                    log.warning(
                        "%s: undo of %r failed (%s); running its inverse",
                        self.name,
                        step.action,
                        err,
                    )
                    try:
                        ledger.revert(step.seq)
                    except Exception as err2:  # noqa: BLE001 - reported below
                        errors.append(f"{step.action}: {err2}")
            try:
                self._after_undo()
            except Exception as err:  # noqa: BLE001 - reported, verification still runs
                errors.append(f"restoring {', '.join(self.targets)}: {err}")
            leftovers = errors + self._leftovers()
            self._state = "reverted"
            if record:
                self.scope.run.timeline.event(
                    "fault.reverted",
                    self.name,
                    fault=self.kind,
                    targets=list(self.targets),
                    leftovers=leftovers,
                    **self.detail,
                )
        if leftovers:
            raise RevertError(f"{self.name}: revert incomplete", "; ".join(leftovers))
        log.info("reverted %s", self.name)

    def __enter__(self) -> Self:
        return self.inject()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.revert()
        except RevertError as err:
            if exc is None:
                raise
            # Never hide the original failure behind a teardown error.
            exc.add_note(str(err))


class Composite:
    """Several faults injected in order and reverted in reverse (see :func:`compose`)."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        if not faults:
            raise ConfigError("compose", "no faults given", expected="at least one fault")
        self.faults = list(faults)
        self.name = "+".join(f.name for f in faults)

    def inject(self) -> Self:
        done: list[Fault] = []
        try:
            for f in self.faults:
                f.inject()
                done.append(f)
        except BaseException as err:
            for f in reversed(done):
                try:
                    f.revert()
                except RevertError as rerr:
                    err.add_note(str(rerr))
            raise
        return self

    def revert(self) -> None:
        """Revert all (each gets its try), then raise one RevertError naming every leftover."""
        left: list[str] = []
        for f in reversed(self.faults):
            try:
                f.revert()
            except RevertError as err:
                left.append(err.leftover)
        if left:
            raise RevertError(f"{self.name}: revert incomplete", "; ".join(left))

    def __enter__(self) -> Self:
        return self.inject()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.revert()
        except RevertError as err:
            if exc is None:
                raise
            exc.add_note(str(err))


def compose(*faults: Fault) -> Composite:
    """``with compose(storm, squeeze):`` injects both, reverts both on every exit path."""
    return Composite(faults)
