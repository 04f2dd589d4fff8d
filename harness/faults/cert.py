"""Certificate faults: a member's certificate swapped for a broken one, then restored.

The good files are saved in the run directory first; the ledger inverses are
``copy_file`` (saved -> live), recorded before the swap. etcd reads its
certificate files at every handshake, so the watchdog's file restore alone
heals a member; an in-process revert also restarts it, like the inject did.
In the cluster layout of :class:`~harness.components.etcd.EtcdCluster` one
certificate serves both the peer and the client listener: ``which`` picks the
broken certificate's usages (``peer``: server+client auth, ``server``: server
auth only).
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, FaultError, UnsafeTargetError
from harness.faults.base import Scope
from harness.faults.process import WorkloadFault
from harness.pki import CertKind, CertPaths, Pki

__all__ = ["KINDS", "CertFault"]

KINDS = ("expired", "untrusted", "wrong_san")
_WHICH = {"peer": CertKind.PEER, "server": CertKind.SERVER}
_FILES = ("member.crt", "member.key")


class CertFault(WorkloadFault):
    """``CertFault(scope, "follower", kind="expired", which="peer", max_duration=30)``.

    Needs ``scope.cluster`` to be an ``EtcdCluster`` (its ``pki`` issues the broken cert).
    """

    kind = "cert"

    def __init__(
        self,
        scope: Scope,
        member: str,
        *,
        kind: str,
        which: str = "peer",
        max_duration: float,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, member, max_duration=max_duration, name=name)
        if kind not in KINDS:
            raise ConfigError(f"{self.name}.kind", f"{kind!r}", expected=" or ".join(KINDS))
        if which not in _WHICH:
            raise ConfigError(f"{self.name}.which", f"{which!r}", expected="peer or server")
        self.cert_kind = kind
        self.which = which
        self._live: dict[str, dict[str, Path]] = {}
        self._saved: dict[str, dict[str, Path]] = {}

    def knobs(self) -> dict[str, Any]:
        return {"kind": self.cert_kind, "which": self.which}

    def _prepare(self) -> None:
        if self.scope.cluster is None:
            raise ConfigError(f"{self.name}.scope.cluster", "certificate faults need the cluster")
        super()._prepare()
        placement = getattr(self.scope.cluster, "placement", None)
        if placement is None:
            raise ConfigError(f"{self.name}.scope.cluster", "is not an EtcdCluster")
        # Docker: the placement names the path inside the container; swap the host file.
        host_path = getattr(self.scope.backend, "host_path", None)
        for m in self.targets:
            live = {f: Path(host_path(m, f) if host_path else placement(m).path(f)) for f in _FILES}
            for p in live.values():
                if "faultline" not in p.as_posix() or not p.is_file():
                    raise UnsafeTargetError(
                        f"{self.name}.member", f"{p} is not a certificate file faultline placed"
                    )
            self._live[m] = live

    def _broken(self, member: str) -> CertPaths:
        pki: Pki | None = getattr(self.scope.cluster, "pki", None)
        if pki is None:
            raise FaultError(f"{self.name}: the cluster has no pki to issue a broken cert")
        issue = {"expired": pki.expired, "untrusted": pki.untrusted, "wrong_san": pki.wrong_san}
        return issue[self.cert_kind](f"{member}-{self.cert_kind}", _WHICH[self.which])

    def _apply(self) -> None:
        backend = self.scope.need_backend(self.name)
        save_dir = self.scope.run.subdir(f"faults/{self.name}")
        for m, live in self._live.items():
            broken = self._broken(m)
            saved = {f: save_dir / f"{m}-{f}.good" for f in _FILES}
            for f in _FILES:
                shutil.copy2(live[f], saved[f])
            self._saved[m] = saved
            bad = {"member.crt": broken.cert, "member.key": broken.key}
            for f in _FILES:
                inverse = {"op": "copy_file", "src": str(saved[f]), "dst": str(live[f])}
                self._step(
                    f"swap {f} of {m} for a {self.cert_kind} one",
                    inverse,
                    partial(shutil.copy2, bad[f], live[f]),
                )
            backend.restart(m)

    def _after_undo(self) -> None:
        backend = self.scope.need_backend(self.name)
        start_member = getattr(self.scope.cluster, "start_member", None)
        for m in self._saved:
            if start_member is not None:
                start_member(m)  # stop + start, and wait until it has rejoined
            else:
                backend.restart(m)

    def _leftovers(self) -> list[str]:
        left = []
        for m, saved in self._saved.items():
            for f, good in saved.items():
                if self._live[m][f].read_bytes() != good.read_bytes():
                    left.append(f"{m} {f} is still the {self.cert_kind} one")
        return left + self._running_leftovers()
