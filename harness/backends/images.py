"""Container images for workloads: the official image when it can be pulled, else built locally.

No registry is reachable on the CI machine, so most images are built here:
``FROM scratch`` plus a host binary and the shared libraries ``ldd`` lists
for it (Debian's etcd and Prometheus link libc dynamically). The binary keeps
its host path inside the image, so a ``WorkloadSpec.command`` is the same on
every backend. Images are built once per content hash and tagged
``faultline/<name>:<hash>`` with the label ``faultline=1``; they are cached
artifacts, not run state, so reaping a run leaves them in place.

>>> tag = image_for_binary(client, "etcd")                        # doctest: +SKIP
'faultline/etcd:3f9a1c0b2d4e'
>>> image_for_binary(client, "busybox", aliases=("sh", "wget"))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BackendUnavailable, MissingDependency

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = [
    "IMAGE_LABEL",
    "SHELL_LABEL",
    "image_for_binary",
    "official_or_built",
    "registry_reachable",
    "shared_libraries",
]

log = logging.getLogger(__name__)

IMAGE_LABEL = "faultline"
# "true" when the image has /bin/sh, so a Docker healthcheck can run inside it.
SHELL_LABEL = "faultline.shell"
# Bump when the image layout changes: it is part of the content hash.
_BUILDER_VERSION = "1"

_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def shared_libraries(binary: Path) -> list[Path]:
    """Absolute paths of the shared libraries ``binary`` loads (empty for a static one)."""
    if shutil.which("ldd") is None:
        raise MissingDependency("ldd", "apt-get install -y libc-bin")
    res = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    # ldd exits 1 with "not a dynamic executable" for static binaries.
    if res.returncode != 0 or "statically linked" in res.stdout:
        return []
    libs = []
    for line in res.stdout.splitlines():
        m = _LDD_LINE.search(line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _resolve_binary(binary: str | Path) -> Path:
    found = shutil.which(str(binary))
    if found is None:
        raise MissingDependency(
            f"binary {binary!s}", f"install it on the host (e.g. apt-get install -y {binary!s})"
        )
    return Path(found).absolute()


def _add_file(tar: tarfile.TarFile, host: Path, arcname: str) -> None:
    # Dereference: the image needs the content under the path the loader asks for.
    data = host.resolve().read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = 0o755
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, arcname: str, mode: int) -> None:
    info = tarfile.TarInfo(arcname)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _context(binary: Path, libs: list[Path], aliases: Sequence[str], labels: str) -> bytes:
    """A build context: the Dockerfile and the image's root file system under rootfs/."""
    dockerfile = (
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        "ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"
        f"LABEL {labels}\n"
        f'ENTRYPOINT ["{binary}"]\n'
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        df = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(df)
        tar.addfile(info, io.BytesIO(df))
        # Go programs and etcd want a writable /tmp.
        _add_dir(tar, "rootfs/tmp", 0o1777)
        _add_file(tar, binary, f"rootfs{binary}")
        for lib in libs:
            _add_file(tar, lib, f"rootfs{lib}")
        for alias in aliases:
            link = tarfile.TarInfo(f"rootfs/bin/{alias}")
            link.type = tarfile.SYMTYPE
            link.linkname = str(binary)
            tar.addfile(link)
    return buf.getvalue()


def _content_hash(binary: Path, libs: list[Path], aliases: Sequence[str]) -> str:
    h = hashlib.sha256(_BUILDER_VERSION.encode())
    for p in [binary, *libs]:
        h.update(str(p).encode() + b"\0")
        h.update(p.resolve().read_bytes())
    h.update("\0".join(aliases).encode())
    return h.hexdigest()[:12]


def image_for_binary(
    client: DockerClient,
    binary: str | Path,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
) -> str:
    """Return the tag of a scratch image holding ``binary`` (+ its libraries), building it once.

    ``aliases`` become symlinks ``/bin/<alias>`` to the binary (a multi-call
    binary such as busybox: ``("sh", "wget")``); an ``sh`` alias marks the
    image as having a shell (label ``faultline.shell=true``).
    """
    from docker.errors import BuildError, ImageNotFound

    path = _resolve_binary(binary)
    libs = shared_libraries(path)
    repo = f"faultline/{name or path.name}"
    tag = f"{repo}:{_content_hash(path, libs, aliases)}"
    with contextlib.suppress(ImageNotFound):
        client.images.get(tag)
        return tag
    shell = "true" if "sh" in aliases else "false"
    labels = f'{IMAGE_LABEL}="1" {SHELL_LABEL}="{shell}" faultline.binary="{path}"'
    log.info("building %s from %s (+%d libraries)", tag, path, len(libs))
    try:
        client.images.build(
            fileobj=io.BytesIO(_context(path, libs, aliases, labels)),
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
        )
    except BuildError as err:
        raise BackendUnavailable(
            f"image {tag}", f"the local build failed ({err.msg}); check `docker build` works"
        ) from err
    return tag


def registry_reachable(image: str, timeout: float = 2.0) -> bool:
    """Whether the registry serving ``image`` answers a TCP connect, quickly.

    Checked before a pull so a machine without a registry fails in seconds
    instead of waiting for the engine's own (much longer) timeouts.
    """
    first = image.split("/", 1)[0]
    host = first if "/" in image and ("." in first or ":" in first) else "registry-1.docker.io"
    host, _, port = host.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def official_or_built(
    client: DockerClient,
    official: str | None,
    binary: str | Path,
    *,
    name: str | None = None,
) -> str:
    """The official image if present or pullable now, else one built from the host binary."""
    from docker.errors import APIError, ImageNotFound

    if official is not None:
        with contextlib.suppress(ImageNotFound):
            client.images.get(official)
            return official
        if registry_reachable(official):
            try:
                client.images.pull(official)
                return official
            except APIError as err:
                log.info("pull of %s failed (%s): building from %s", official, err, binary)
    return image_for_binary(client, binary, name=name)
