"""Inverse operations: what undoes each kind of mutation faultline makes.

Every inverse is a plain function of JSON arguments, so any process can run
it: the harness, the watchdog, ``faultline clean``. Each is idempotent (what
is already gone is fine) and refuses to touch anything faultline did not
create: paths must carry ``faultline`` in their name, processes must carry the
run's tag in their environment, chains and namespaces must carry the prefix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "INVERSES",
    "IPTABLES_PREFIX",
    "NETNS_PREFIX",
    "RUN_TAG",
    "WORKLOAD_TAG",
    "inverse",
    "run_inverse",
    "tagged_pids",
]

log = logging.getLogger(__name__)

RUN_TAG = "FAULTLINE_RUN_ID"
WORKLOAD_TAG = "FAULTLINE_WORKLOAD"
IPTABLES_PREFIX = "FL-"
NETNS_PREFIX = "faultline-"

Inverse = Callable[..., None]
INVERSES: dict[str, Inverse] = {}


def inverse(fn: Inverse) -> Inverse:
    """Register ``fn`` as an inverse op under its own name."""
    INVERSES[fn.__name__] = fn
    return fn


def run_inverse(inverse: dict[str, Any]) -> None:
    args = dict(inverse)
    op = args.pop("op")
    try:
        fn = INVERSES[op]
    except KeyError:
        raise ValueError(f"unknown inverse op {op!r}") from None
    fn(**args)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def tagged_pids(run_id: str, workload: str | None = None) -> list[int]:
    """Processes whose environment carries this run's tag (and workload's)."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, me):
            continue
        env = _environ(int(entry.name))
        if env.get(RUN_TAG) != run_id:
            continue
        if workload is not None and env.get(WORKLOAD_TAG) != workload:
            continue
        out.append(int(entry.name))
    return out


def _thaw_own_freezers(pid: int) -> None:
    # A task in a frozen v1 freezer cgroup cannot die until thawed.
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "faultline" not in path:
            continue
        if "freezer" in controllers.split(","):
            with contextlib.suppress(OSError):
                Path(f"/sys/fs/cgroup/freezer{path}/freezer.state").write_text("THAWED")
        elif controllers == "":
            with contextlib.suppress(OSError):
                Path(f"/sys/fs/cgroup{path}/cgroup.freeze").write_text("0")


@inverse
def kill_tagged(run_id: str, workload: str | None = None, timeout: float = 5.0) -> None:
    """SIGKILL every process carrying the run's (and workload's) tag; wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        pids = tagged_pids(run_id, workload)
        if not pids:
            return
        for pid in pids:
            _thaw_own_freezers(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            # Reap it if it is our child, so it does not linger as a zombie.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of run {run_id} still alive: {pids}")
        time.sleep(0.05)


@inverse
def signal_tagged(run_id: str, workload: str, signum: int) -> None:
    """Send a signal (e.g. SIGCONT to undo a pause) to a workload's processes."""
    for pid in tagged_pids(run_id, workload):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _require_owned(path: str) -> Path:
    p = Path(path)
    if "faultline" not in p.as_posix():
        raise ValueError(f"refusing to touch {path}: not created by faultline")
    return p


@inverse
def remove_cgroup(paths: list[str]) -> None:
    """Kill what is left inside faultline's cgroups, thaw them, and rmdir them (leaf first)."""
    for path in sorted(paths, key=len, reverse=True):
        p = _require_owned(path)
        if not p.exists():
            continue
        for freeze, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            with contextlib.suppress(OSError):
                (p / freeze).write_text(value)
        for _ in range(100):
            try:
                procs = [int(x) for x in (p / "cgroup.procs").read_text().split()]
            except OSError:
                procs = []
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                p.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cgroup {p} could not be removed")


@inverse
def write_file(path: str, value: str) -> None:
    """Restore a value (a cgroup limit) in a file faultline owns."""
    p = _require_owned(path)
    with contextlib.suppress(FileNotFoundError):
        p.write_text(value)


@inverse
def copy_file(src: str, dst: str) -> None:
    """Put a saved file back (a certificate swapped by a fault)."""
    s, d = _require_owned(src), _require_owned(dst)
    if s.exists():
        shutil.copy2(s, d)


@inverse
def remove_tree(path: str) -> None:
    """Remove a directory faultline made (a run directory, a temp dir)."""
    shutil.rmtree(_require_owned(path), ignore_errors=True)


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)


@inverse
def remove_iptables_chain(chain: str, parents: list[str], table: str = "filter") -> None:
    """Unhook faultline's chain from its parents, flush it and delete it."""
    if not chain.startswith(IPTABLES_PREFIX):
        raise ValueError(f"refusing to touch iptables chain {chain}: not faultline's")
    for parent in parents:
        # Delete every jump to our chain; -D fails once none is left.
        while _iptables("-t", table, "-D", parent, "-j", chain).returncode == 0:
            pass
    if _iptables("-t", table, "-L", chain, "-n").returncode != 0:
        return
    _iptables("-t", table, "-F", chain)
    res = _iptables("-t", table, "-X", chain)
    if res.returncode != 0:
        raise RuntimeError(f"iptables -X {chain}: {res.stderr.strip()}")


@inverse
def remove_netns(name: str) -> None:
    if not name.startswith(NETNS_PREFIX):
        raise ValueError(f"refusing to touch netns {name}: not faultline's")
    if Path(f"/run/netns/{name}").exists():
        res = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
        if res.returncode != 0 and Path(f"/run/netns/{name}").exists():
            raise RuntimeError(f"ip netns delete {name}: {res.stderr.strip()}")


# --- inverses of faults (harness/faults) -------------------------------------------------


@inverse
def resume_tagged(run_id: str, workload: str) -> None:
    """Undo a pause: thaw faultline's freezer cgroups of the workload's processes, SIGCONT them."""
    for pid in tagged_pids(run_id, workload):
        _thaw_own_freezers(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@inverse
def nothing_to_undo(reason: str) -> None:
    """The entry of a mutation with no inverse (a kill, a restart): kept for the record."""


def _loopback_url(url: str) -> str:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"refusing to call {url}: not a loopback address")
    return url.rstrip("/")


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> int:
    """Status code of one request; 0 when nothing listens (then there is nothing to undo)."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


@inverse
def remove_toxiproxy_toxic(api: str, proxy: str, toxic: str) -> None:
    """Delete a toxic faultline added to one of its proxies (gone already is fine)."""
    if not proxy.startswith("faultline") or not toxic.startswith("faultline"):
        raise ValueError(f"refusing to touch proxy {proxy} toxic {toxic}: not faultline's")
    code = _http("DELETE", f"{_loopback_url(api)}/proxies/{proxy}/toxics/{toxic}")
    if code not in (0, 200, 204, 404):
        raise RuntimeError(f"toxiproxy DELETE toxic {toxic} on {proxy}: HTTP {code}")


@inverse
def enable_toxiproxy_proxy(api: str, proxy: str) -> None:
    """Bring a faultline proxy that a fault took down back up."""
    if not proxy.startswith("faultline"):
        raise ValueError(f"refusing to touch proxy {proxy}: not faultline's")
    code = _http("POST", f"{_loopback_url(api)}/proxies/{proxy}", {"enabled": True})
    if code not in (0, 200, 404):
        raise RuntimeError(f"toxiproxy enable {proxy}: HTTP {code}")


@inverse
def disable_service_bug(admin_url: str, bug: str) -> None:
    """Switch off a bug that a fault switched on in a faultline Go target (loopback only)."""
    code = _http("PUT", f"{_loopback_url(admin_url)}/bugs/{bug}", {"enabled": False})
    if code not in (0, 200, 204, 404):
        raise RuntimeError(f"PUT /bugs/{bug} enabled=false: HTTP {code}")


@inverse
def release_port_lock(path: str, run_id: str) -> None:
    """Remove a port lock file (``<state_root>/ports/<port>.lock``) a dead run left.

    Only when nobody holds its flock and it still names ``run_id``: a live
    holder, or a run that took the port over since, keeps its lock.
    """
    import fcntl  # local: only this inverse needs it

    p = Path(path)
    if p.parent.name != "ports" or not p.name.removesuffix(".lock").isdigit():
        raise ValueError(f"refusing to touch {path}: not a faultline port lock")
    try:
        fd = os.open(p, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        if os.read(fd, 256).decode(errors="replace").strip() != run_id:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.stat(p).st_ino == os.fstat(fd).st_ino:
                p.unlink()
    finally:
        os.close(fd)


@inverse
def remove_empty_cgroups(paths: list[str]) -> None:
    """rmdir faultline's shared cgroup parents if empty; one in use by another run stays."""
    import errno  # local: only this inverse needs it

    for path in sorted(paths, key=len, reverse=True):
        p = _require_owned(path)
        try:
            p.rmdir()
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise


@contextlib.contextmanager
def _run_container(run_id: str, container: str) -> Iterator[Any]:
    """The container if it exists and belongs to this run; None when it (or the engine) is gone.

    Raises ValueError for another run's container: inverses touch only their own.
    """
    try:
        import docker
        from docker.errors import DockerException, NotFound
    except ImportError:
        yield None
        return
    try:
        client = docker.from_env(timeout=30)
    except DockerException:
        yield None
        return
    try:
        try:
            c = client.containers.get(container)
        except NotFound:
            yield None
            return
        if c.labels.get("faultline.run") != run_id:
            raise ValueError(f"refusing to touch container {container}: not run {run_id}'s")
        yield c
    finally:
        client.close()  # DockerClient is no context manager (docker 7.2)


@inverse
def docker_unpause(run_id: str, container: str) -> None:
    """Unpause a container of this run (undo a pause); a gone or running one is fine."""
    with _run_container(run_id, container) as c:
        if c is not None and c.status == "paused":
            c.unpause()


@inverse
def docker_network_connect(run_id: str, container: str, network: str, aliases: list[str]) -> None:
    """Reconnect a container of this run to the run's network (undo an isolation)."""
    try:
        import docker
        from docker.errors import DockerException, NotFound
    except ImportError:
        return
    try:
        client = docker.from_env(timeout=30)
    except DockerException:
        return
    try:
        try:
            c = client.containers.get(container)
            net = client.networks.get(network)
        except NotFound:
            return  # reaped already: nothing is cut off any more
        for name, labels in ((c.name, c.labels), (net.name, net.attrs.get("Labels") or {})):
            if labels.get("faultline.run") != run_id:
                raise ValueError(f"refusing to touch {name}: not run {run_id}'s")
        if net.name in c.attrs["NetworkSettings"]["Networks"]:
            return
        net.connect(c, aliases=aliases)
    finally:
        client.close()


@inverse
def remove_docker_run(run_id: str) -> None:
    """Remove containers, networks and volumes labelled ``faultline.run=<run_id>``.

    The docker SDK is imported here: it is only needed for docker runs.
    """
    try:
        import docker
        from docker.errors import DockerException, NotFound
    except ImportError:
        return
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException:
        return  # no engine: nothing of ours can be running there
    label = {"label": f"faultline.run={run_id}"}
    try:
        for c in client.containers.list(all=True, filters=label):
            with contextlib.suppress(NotFound):
                c.remove(force=True, v=True)
        for n in client.networks.list(filters=label):
            with contextlib.suppress(NotFound):
                n.remove()
        for v in client.volumes.list(filters=label):
            with contextlib.suppress(NotFound):
                v.remove(force=True)
    finally:
        client.close()


@inverse
def docker_update_limits(
    run_id: str, container: str, cpu_period: int, cpu_quota: int, memory: int | None
) -> None:
    """Set a container of this run back to saved CPU and memory limits (undo a limit fault).

    ``cpu_quota`` -1 is no CPU limit; ``memory`` None is the host's RAM (the
    docker backend's "unlimited": Docker cannot remove a memory limit). Swap
    is capped with memory, as the backend starts containers. A gone container
    is fine; setting the same values twice changes nothing.
    """
    with _run_container(run_id, container) as c:
        if c is None:
            return
        from docker.errors import NotFound

        mem = memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        with contextlib.suppress(NotFound):  # removed meanwhile: nothing left to restore
            c.update(cpu_period=cpu_period, cpu_quota=cpu_quota, mem_limit=mem, memswap_limit=mem)


KUBE_CPU_PERIOD_US = 100_000  # kubelet's CFS period, for every container


def set_cfs(cgroup: Path, quota: int, period: int) -> None:
    """Write a CFS quota and period (us) into a cgroup directory (v1 ``cpu`` or v2).

    On v1 the quota/period ratio must fit the parent's at every step: a
    longer period is written before the quota (the ratio falls first), a
    shorter one after it.
    """
    if (cgroup / "cpu.max").exists():
        (cgroup / "cpu.max").write_text(f"{quota} {period}")
        return
    writes = [("cpu.cfs_quota_us", quota), ("cpu.cfs_period_us", period)]
    if period > int((cgroup / "cpu.cfs_period_us").read_text()):
        writes.reverse()
    for name, value in writes:
        (cgroup / name).write_text(str(value))


def read_cfs(cgroup: Path) -> tuple[int, int]:
    """(quota, period) in us of a cgroup directory; quota -1 is no limit."""
    if (cgroup / "cpu.max").exists():
        quota, period = (cgroup / "cpu.max").read_text().split()
        return (-1 if quota == "max" else int(quota)), int(period)
    return int((cgroup / "cpu.cfs_quota_us").read_text()), int(
        (cgroup / "cpu.cfs_period_us").read_text()
    )


def kube_millicores(cores: float) -> int:
    """A CPU limit as the millicores a Pod spec carries (at least 1)."""
    return max(1, round(cores * 1000))


def kube_pod_cpu(cores: float, period: int, host_cores: int) -> float:
    """The Pod CPU limit (kubelet's 100 ms period) under which a container can use
    ``cores`` per ``period`` us: with a longer period the container's whole quota
    may fall into one 100 ms period, and the Pod's cgroup must not cut it short."""
    if period <= KUBE_CPU_PERIOD_US:
        return cores
    return max(cores, min(float(host_cores), cores * period / KUBE_CPU_PERIOD_US))


def kube_resize(core: Any, namespace: str, pod: str, cpu: float, memory: int) -> None:
    """Resize a Pod's (only) container in place to ``cpu`` cores and ``memory`` bytes."""
    body = {"spec": {"containers": [{"name": pod, "resources": {
        "requests": {"cpu": "1m", "memory": "1Mi"},
        "limits": {"cpu": f"{kube_millicores(cpu)}m", "memory": str(memory)},
    }}]}}  # fmt: skip
    core.patch_namespaced_pod_resize(
        pod, namespace, body, _content_type="application/strategic-merge-patch+json"
    )


def _quantity_millicores(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else round(float(q) * 1000)


@inverse
def kube_set_limits(
    run_id: str,
    namespace: str,
    kubeconfig: str,
    pod: str,
    cpu: float | None,
    memory: int | None,
    period: int,
    cgroup: str | None,
) -> None:
    """Set a Pod of this run back to saved limits (undo a limit fault on kubernetes).

    ``cpu``/``memory`` None is all the host's cores / RAM (the backend's
    "unlimited"); ``period`` is the container's CFS period, ``cgroup`` its CPU
    cgroup directory when it ran (a faultline period other than kubelet's is
    written there). Kubelet's own values for the Pod are written back first,
    so a resize that changes nothing leaves no faultline period behind. Only a
    Pod labelled with ``run_id``, and a cgroup carrying that Pod's uid. A gone
    Pod, namespace or cluster is fine.
    """
    if not namespace.startswith(NETNS_PREFIX):
        raise ValueError(f"refusing to touch namespace {namespace}: not faultline's")
    if not Path(kubeconfig).is_file():
        return
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    try:
        try:
            found = core.read_namespaced_pod(pod, namespace, _request_timeout=10)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        if (found.metadata.labels or {}).get("faultline.run") != run_id:
            raise ValueError(f"refusing to touch Pod {namespace}/{pod}: not run {run_id}'s")
        uid = found.metadata.uid
        d = Path(cgroup) if cgroup else None
        if d is not None and not (uid in d.as_posix() or uid.replace("-", "_") in d.as_posix()):
            raise ValueError(f"refusing to touch cgroup {d}: not Pod {pod}'s ({uid})")
        if d is not None and not d.is_dir():
            d = None  # the container is gone: its successor has kubelet's values
        host_cores = os.cpu_count() or 1
        cores = cpu if cpu is not None else float(host_cores)
        mem = memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if d is not None:
            now = _quantity_millicores(found.spec.containers[0].resources.limits["cpu"])
            with contextlib.suppress(FileNotFoundError):
                set_cfs(d, now * KUBE_CPU_PERIOD_US // 1000, KUBE_CPU_PERIOD_US)
        pod_cpu = kube_pod_cpu(cores, period, host_cores)
        kube_resize(core, namespace, pod, pod_cpu, mem)
        if d is None:
            return
        want = kube_millicores(pod_cpu) * KUBE_CPU_PERIOD_US // 1000
        deadline = time.monotonic() + 30
        with contextlib.suppress(FileNotFoundError):
            while read_cfs(d)[0] != want:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"resize of Pod {namespace}/{pod} not applied after 30 s")
                time.sleep(0.1)
            if period != KUBE_CPU_PERIOD_US:
                set_cfs(d, round(cores * period), period)
    except ApiException as err:
        raise RuntimeError(f"Pod {namespace}/{pod}: {err.status} {err.reason}") from err
    finally:
        api.close()


@inverse
def delete_kube_namespace(run_id: str, namespace: str, kubeconfig: str) -> None:
    """Delete a run's Kubernetes namespace (and its Pods and Services); wait until it is gone.

    Only a namespace named ``faultline-...`` and labelled ``faultline=1`` and
    ``faultline.run=<run_id>``. Its Pods are deleted with a 1 s grace (kubelet
    confirms each once its containers are dead), and the namespace with them; the
    wait is for both to be gone.
    A kubeconfig that no longer exists means the cluster is gone, and with it
    the namespace; a cluster that does not answer is an error (run
    ``faultline clean`` again once it is up).
    """
    if not namespace.startswith(NETNS_PREFIX):
        raise ValueError(f"refusing to touch namespace {namespace}: not faultline's")
    if not Path(kubeconfig).is_file():
        return
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    try:
        try:
            ns = core.read_namespace(namespace, _request_timeout=10)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        labels = ns.metadata.labels or {}
        if labels.get("faultline") != "1" or labels.get("faultline.run") != run_id:
            raise ValueError(f"refusing to touch namespace {namespace}: not run {run_id}'s")
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=1)
        # At once, not after the Pods are gone: the namespace controller waits 5 s
        # (namespaceDeletionGracePeriod) before it even looks, a wait the Pods' own
        # termination can overlap.
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)
        deadline = time.monotonic() + 120
        while core.list_namespaced_pod(namespace, _request_timeout=10).items:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Pods of namespace {namespace} still there after 120 s")
            time.sleep(0.2)
        while True:
            try:
                core.read_namespace(namespace, _request_timeout=10)
            except ApiException as err:
                if err.status == 404:
                    return
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"namespace {namespace} still there after 120 s")
            time.sleep(0.2)
    except ApiException as err:
        raise RuntimeError(f"namespace {namespace}: {err.status} {err.reason}") from err
    except (OSError, urllib3.exceptions.HTTPError) as err:
        raise RuntimeError(f"cluster of {kubeconfig} unreachable: {err}") from err
    finally:
        api.close()


@inverse
def release_cgroup2(path: str, root: str) -> None:
    """Move the processes of a faultline cgroup2 directory back to ``root``; rmdir it.

    The directory only serves socket matching (it has no controllers), and the
    processes are a Pod's: they are handed back, not killed, so kubelet stays
    their only owner.
    """
    p = _require_owned(path)
    if not p.exists():
        return
    for _ in range(100):
        try:
            pids = (p / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(OSError):  # exited meanwhile
                (Path(root) / "cgroup.procs").write_text(pid)
        try:
            p.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # a process forked while moving: move it too
    raise RuntimeError(f"cgroup {p} could not be emptied")
