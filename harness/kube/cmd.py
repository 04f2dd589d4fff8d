"""``faultline cluster up|down|status|import``: the local Kubernetes cluster.

``up`` builds the components (cached), starts etcd, containerd, kube-apiserver,
controller-manager, scheduler and kubelet on 127.0.0.1, waits for the node to be
Ready and a test Pod to run, and leaves them running; the kubeconfig is
/var/lib/faultline-kube/admin.kubeconfig. ``down`` stops and removes all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.errors import ConfigError, MissingDependency
from harness.kube import cluster


def _need_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError("faultline cluster", "needs root (containerd, cgroups, mounts)")


def cmd_up(args: argparse.Namespace) -> int:
    _need_root()
    current = cluster.status()
    if current["up"]:
        print(
            f"already up since {current['ready']['started_at']}: "
            f"kubeconfig {current['ready']['kubeconfig']}"
        )
        return 0
    try:
        ready = cluster.up()
    except MissingDependency as err:
        print(f"faultline: {err}", file=sys.stderr)
        return 2
    for phase, sec in ready.get("phases", {}).items():
        print(f"  {phase:32} {sec:7.2f} s")
    print(f"cluster up in {ready['start_seconds']} s: kubeconfig {ready['kubeconfig']}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    _need_root()
    for line in cluster.down() or ["nothing to do: no cluster"]:
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = cluster.status()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print("up" if st["up"] else "down")
        for name, pid in st["processes"].items():
            print(f"  {name:24} {'pid ' + str(pid) if pid else 'not running'}")
        if st["ready"]:
            print(f"  kubeconfig {st['ready']['kubeconfig']}")
    return 0 if st["up"] else 1


def cmd_import(args: argparse.Namespace) -> int:
    tar = Path(args.tar)
    if not tar.is_file():
        raise ConfigError("TAR", f"{args.tar!r} is not a file", expected="an image archive")
    _need_root()
    print(cluster.import_image(tar), end="")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``faultline cluster`` to the ``faultline`` command."""
    p = subparsers.add_parser(
        "cluster",
        help="a local one-node Kubernetes cluster (up, down, status, import)",
        description=(__doc__ or "").split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="cluster_command", required=True)
    sub.add_parser("up", help="build (cached) and start it; idempotent").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop it and remove its state; idempotent").set_defaults(
        fn=cmd_down
    )
    st = sub.add_parser("status", help="is it up (exit 0) or not (exit 1)")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(fn=cmd_status)
    imp = sub.add_parser("import", help="load an image archive (docker save / OCI) into it")
    imp.add_argument("tar", metavar="TAR", help="the image archive")
    imp.set_defaults(fn=cmd_import)
