"""Partitions by iptables, matching sockets by their cgroup2 path: shared by the backends
whose workloads are processes on this host (``local``, and ``kubernetes`` with hostNetwork
Pods on a local node).

One chain per isolated workload, hooked first into INPUT and OUTPUT; the ledger's
``remove_iptables_chain`` inverse unhooks and deletes it (:mod:`harness.cleanup`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence

from harness.cleanup import IPTABLES_PREFIX

__all__ = ["CHAIN_PARENTS", "chain_prefix", "install_drop_chain", "iptables"]

CHAIN_PARENTS = ["INPUT", "OUTPUT"]


def chain_prefix(run_id: str) -> str:
    """Prefix of the run's iptables chains: ``FL-`` + the run id's time and random parts."""
    return f"{IPTABLES_PREFIX}{run_id.replace('-', '')[8:]}-"


def iptables(*args: str) -> None:
    res = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {res.stderr.strip()}")


def install_drop_chain(
    chain: str, own: tuple[str, Iterable[int]], peers: Sequence[tuple[str, Iterable[int]]]
) -> None:
    """Create ``chain`` dropping TCP between ``own`` (cgroup2 path, ports) and each peer,
    then hook it into :data:`CHAIN_PARENTS`. The caller records the ledger inverse first."""
    own_cg, mine = own[0], sorted(own[1])
    iptables("-N", chain)
    for peer_cg, peer_ports in peers:
        theirs = sorted(peer_ports)
        # Drop what the isolated workload's sockets send to (or get from) the peers'
        # ports, and what the peers' sockets send to (or get from) its ports.
        for cg_path, ports in ((own_cg, theirs), (peer_cg, mine)):
            for i in range(0, len(ports), 15):  # multiport takes at most 15 ports
                plist = ",".join(str(p) for p in ports[i : i + 15])
                for direction in ("--dports", "--sports"):
                    iptables(
                        "-A", chain, "-p", "tcp", "-m", "cgroup", "--path", cg_path,
                        "-m", "multiport", direction, plist, "-j", "DROP",
                    )  # fmt: skip
    for parent in CHAIN_PARENTS:
        iptables("-I", parent, "1", "-j", chain)
