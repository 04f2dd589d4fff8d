"""Build the Go targets under ``go_targets/cmd`` (and any Go package) into a content cache.

A binary is keyed by a hash of its module's non-test sources (``*.go``,
``go.mod``, ``go.sum``, ``*.proto``), the package's path in the module, the race
flag and the Go version, so an unchanged tree never rebuilds. Builds go to a temporary file
that is renamed into place, under a per-target file lock: two concurrent
callers get the same binary and at most one of them compiles it.

Normal builds use ``CGO_ENABLED=0`` (static, and the Go runtime can only
report orderd's ``global_deadlock`` in non-cgo binaries); ``race=True`` builds
need cgo and use it.

Example::

    from harness.gobuild import build
    orderd = build("orderd")             # ~/.cache/faultline/bin/orderd-<key>
    racy = build("orderd", race=True)
    prog = build_package(Path("tests/gobugs/cmd/doublelock"))   # any module's main package
    slower = build("orderd", ldflags="-X <pkg>.requestDelay=2ms")  # a different build
    mine = build_package(Path("examples/inventoryd"))   # a user's package, its own go.mod

Prebuild everything (CI): ``python -m harness.gobuild [--race] [--proto] [targets...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from harness.config import env_setting, parse_abs_path
from harness.errors import ComponentStartError, ConfigError, MissingDependency

__all__ = [
    "GO_TARGETS_DIR",
    "MIN_GO",
    "build",
    "build_package",
    "cache_dir",
    "find_go",
    "generate_python_stubs",
    "go_install",
    "go_version",
    "list_targets",
    "main",
    "module_root",
    "source_key",
]

logger = logging.getLogger(__name__)

GO_TARGETS_DIR = Path(__file__).resolve().parent.parent / "go_targets"
PROTO_OUT_DIR = Path(__file__).resolve().parent / "_proto"
MIN_GO = (1, 22)
BUILD_TIMEOUT_S = 900.0
GO_FIX = (
    "install Go >= 1.22: `apt-get install golang-go` (if your distribution's is new enough) "
    "or a release from https://go.dev/dl, and put `go` on PATH or set FAULTLINE_GO"
)
# Where Go's own installer puts the toolchain; consulted when `go` is not on PATH.
FALLBACK_GO_PATHS: tuple[Path, ...] = (Path("/usr/local/go/bin/go"), Path.home() / "go/bin/go")

_KEY_SUFFIXES = (".go", ".proto")
_KEY_NAMES = ("go.mod", "go.sum")
_TARGET_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


def _parse_executable(value: str, source: str) -> Path:
    if not (Path(value).is_file() and os.access(value, os.X_OK)):
        raise ConfigError(
            source, f"{value!r} is not an executable file", expected="the path of a go binary"
        )
    return Path(value)


def find_go() -> Path:
    """Return the ``go`` binary: ``$FAULTLINE_GO``, then PATH, then the usual install dirs."""
    override = env_setting("FAULTLINE_GO", _parse_executable, None)
    if override is not None:
        return override
    found = shutil.which("go")
    if found:
        return Path(found)
    for cand in FALLBACK_GO_PATHS:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise MissingDependency("Go toolchain (`go` not found on PATH)", GO_FIX)


def go_version(go: Path) -> str:
    """Return ``go env GOVERSION`` (e.g. ``go1.26.8``); raise when older than :data:`MIN_GO`."""
    try:
        out = subprocess.run(
            [str(go), "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        raise MissingDependency(f"a working Go toolchain ({go} failed: {err})", GO_FIX) from err
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_GO:
        raise MissingDependency(f"Go >= {MIN_GO[0]}.{MIN_GO[1]} (found {out or 'unknown'})", GO_FIX)
    return out


def cache_dir() -> Path:
    """``$FAULTLINE_CACHE_DIR`` or ``~/.cache/faultline/bin``."""
    return env_setting(
        "FAULTLINE_CACHE_DIR", parse_abs_path, Path.home() / ".cache" / "faultline" / "bin"
    )


def _key_files(src: Path) -> list[Path]:
    files = []
    for p in src.rglob("*"):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(src).parts):
            continue
        if p.name.endswith("_test.go"):
            continue  # tests do not change the binary
        if p.suffix in _KEY_SUFFIXES or p.name in _KEY_NAMES:
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(src).as_posix())


def source_key(target: str, *, race: bool, go_ver: str, src: Path = GO_TARGETS_DIR) -> str:
    """Hash of everything that determines the binary of ``target``."""
    h = hashlib.sha256()
    for part in (f"target={target}", f"race={race}", f"go={go_ver}"):
        h.update(part.encode() + b"\0")
    for p in _key_files(src):
        h.update(p.relative_to(src).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:20]


def list_targets(src: Path = GO_TARGETS_DIR) -> list[str]:
    """Names of the commands under ``go_targets/cmd``."""
    cmd = src / "cmd"
    return sorted(p.name for p in cmd.iterdir() if p.is_dir() and any(p.glob("*.go")))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build(target: str, *, race: bool = False, ldflags: str = "") -> Path:
    """Compile ``go_targets/cmd/<target>`` (cached) and return the binary's path.

    ``ldflags`` are passed to ``go build -ldflags`` (e.g. ``-X pkg.name=value``
    for a different build of the same source) and are part of the cache key.

    Raises :class:`MissingDependency` without a usable Go toolchain,
    :class:`ConfigError` for an unknown target and :class:`ComponentStartError`
    when compilation fails (the compiler output is attached as a note).
    """
    if not _TARGET_RE.match(target) or not (GO_TARGETS_DIR / "cmd" / target).is_dir():
        known = ", ".join(list_targets()) if (GO_TARGETS_DIR / "cmd").is_dir() else "none"
        raise ConfigError("target", f"no Go target {target!r}", expected=f"one of: {known}")
    return _compile(
        target,
        GO_TARGETS_DIR,
        f"./cmd/{target}",
        race=race,
        key_extra=f":ldflags={ldflags}" if ldflags else "",
        flags=[f"-ldflags={ldflags}"] if ldflags else [],
    )


def _main_package(path: Path, field: str) -> Path:
    """The module root of the Go main package in ``path``; ConfigError naming ``field``."""
    sources = (
        [p for p in path.glob("*.go") if not p.name.endswith("_test.go")] if path.is_dir() else []
    )
    if not sources:
        raise ConfigError(
            field, f"{path} is not a directory with .go files", expected="a Go main package"
        )
    if not any(re.search(r"^package main\b", p.read_text(errors="replace"), re.M) for p in sources):
        raise ConfigError(field, f"{path} is not a main package", expected="package main")
    return module_root(path, field)


def module_root(package_dir: Path, field: str = "package") -> Path:
    """The directory of the ``go.mod`` that ``package_dir`` belongs to (itself or a parent)."""
    start = package_dir.resolve()
    for parent in (start, *start.parents):
        if (parent / "go.mod").is_file():
            return parent
    raise ConfigError(
        field, f"{package_dir} is not inside a Go module", expected="a go.mod at or above it"
    )


def build_package(
    path: Path,
    *,
    race: bool = False,
    field: str = "package",
    extra_files: Mapping[str, str] | None = None,
    goexperiment: str = "",
) -> Path:
    """Compile the Go main package in directory ``path`` (any module), cached like
    :func:`build`: keyed by the hash of its module's sources, the package and the flags.

    ``extra_files`` (file name -> Go source) are compiled into the package through
    ``go build -overlay``, leaving its directory untouched; ``goexperiment`` sets
    ``GOEXPERIMENT``. :class:`ConfigError` (naming ``field``) when ``path`` is not
    a main package in a module.
    """
    path = path.resolve()
    module = _main_package(path, field)
    rel = path.relative_to(module).as_posix()
    name = re.sub(r"[^a-z0-9_-]", "-", path.name.lower()) or "main"
    extra = dict(extra_files or {})
    key_extra = (
        f"{module}:{rel}:{goexperiment}:"
        + hashlib.sha256(repr(sorted(extra.items())).encode()).hexdigest()
    )
    with tempfile.TemporaryDirectory(prefix="faultline-overlay-") as tmp:
        flags: list[str] = []
        if extra:
            replace = {}
            for fname, source in extra.items():
                (Path(tmp) / fname).write_text(source)
                replace[str(path / fname)] = str(Path(tmp) / fname)
            (Path(tmp) / "overlay.json").write_text(json.dumps({"Replace": replace}))
            flags = ["-overlay", str(Path(tmp) / "overlay.json")]
        env = {"GOEXPERIMENT": goexperiment} if goexperiment else {}
        return _compile(
            name, module, f"./{rel}", race=race, key_extra=key_extra, flags=flags, env=env
        )


def _compile(
    name: str,
    module: Path,
    package: str,
    *,
    race: bool,
    key_extra: str = "",
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Path:
    go = find_go()
    ver = go_version(go)
    key = source_key(name + key_extra, race=race, go_ver=ver, src=module)
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}-{key}{'-race' if race else ''}"
    if final.is_file():
        return final
    with _locked(out_dir / f".{name}{'-race' if race else ''}.lock"):
        if final.is_file():  # built by a concurrent caller meanwhile
            return final
        fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{name}-", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        args = [str(go), "build", "-trimpath", *flags, "-o", str(tmp)]
        if race:
            args.append("-race")
        args.append(package)
        build_env = {**os.environ, "CGO_ENABLED": "1" if race else "0", **(env or {})}
        logger.info("building %s (race=%s) with %s", name, race, ver)
        try:
            res = subprocess.run(
                args,
                cwd=module,
                env=build_env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            if res.returncode != 0:
                err = ComponentStartError(f"go build of {name} (race={race}) failed")
                err.add_note((res.stdout + res.stderr)[-4000:])
                raise err
            tmp.chmod(0o755)
            os.replace(tmp, final)
        except subprocess.TimeoutExpired as exc:
            raise ComponentStartError(
                f"go build of {name} took longer than {BUILD_TIMEOUT_S:.0f}s"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
    return final


def go_install(package: str, version: str, binary: str, *, build: bool = True) -> Path:
    """A pinned Go tool (``go install PACKAGE@VERSION``): PATH, then the bin cache.

    When absent and ``build`` is set, it is built into the cache once (renamed into
    place, so a concurrent caller sees the old state or a whole binary);
    :class:`MissingDependency` with the command to run when it cannot be.
    """
    found = shutil.which(binary)
    if found:
        return Path(found)
    cached = cache_dir() / binary
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    built = package.rstrip("/").rsplit("/", 1)[-1]
    fix = (
        f"d=$(mktemp -d) && GOBIN=$d go install {package}@{version} && "
        f"mkdir -p {cached.parent} && mv $d/{built} {cached}"
    )
    if not build:
        raise MissingDependency(binary, fix)
    try:
        go = find_go()
    except MissingDependency as err:
        raise MissingDependency(binary, f"{err.fix}; then {fix}") from err
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"faultline-{binary}-") as tmp:
        logger.info("building %s %s into %s", binary, version, cached)
        res = subprocess.run(
            [str(go), "install", f"{package}@{version}"],
            cwd=tmp,
            env={**os.environ, "GOBIN": tmp, "CGO_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if res.returncode != 0:
            raise MissingDependency(binary, f"{fix} (go install failed: {res.stderr.strip()})")
        os.replace(Path(tmp) / built, cached)
    return cached


def generate_python_stubs(out_dir: Path = PROTO_OUT_DIR) -> list[Path]:
    """Generate ``orders_pb2.py`` and ``orders_pb2_grpc.py`` with grpcio-tools."""
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped,unused-ignore]
    except ImportError as err:
        raise MissingDependency(
            "grpcio-tools", "pip install 'grpcio-tools>=1.60' (or pip install -e '.[dev]')"
        ) from err
    proto_dir = GO_TARGETS_DIR / "proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs (python -m harness.gobuild --proto)."""\n')
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto_dir / "orders.proto"),
        ]
    )
    if rc != 0:
        raise ComponentStartError(f"grpc_tools.protoc failed with status {rc}")
    grpc_file = out_dir / "orders_pb2_grpc.py"
    # protoc emits a top-level import; make it package-relative.
    text = grpc_file.read_text().replace("import orders_pb2 as", "from . import orders_pb2 as")
    grpc_file.write_text(text)
    generated = [out_dir / "orders_pb2.py", out_dir / "orders_pb2.pyi", grpc_file]
    for path in generated:  # generated code is not held to mypy --strict
        body = path.read_text()
        if not body.startswith("# mypy: ignore-errors"):
            path.write_text("# mypy: ignore-errors\n" + body)
    return generated


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.gobuild [--race] [--proto] [targets...]``: prebuild binaries."""
    parser = argparse.ArgumentParser(prog="python -m harness.gobuild", description=__doc__)
    parser.add_argument("targets", nargs="*", help="targets under go_targets/cmd (default: all)")
    parser.add_argument("--race", action="store_true", help="also build -race variants")
    parser.add_argument("--proto", action="store_true", help="regenerate harness/_proto stubs")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if ns.proto:
            for p in generate_python_stubs():
                print(p)
        for target in ns.targets or list_targets():
            print(build(target))
            if ns.race:
                print(build(target, race=True))
    except MissingDependency as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ComponentStartError as err:
        print(f"error: {err}", file=sys.stderr)
        for note in getattr(err, "__notes__", []):
            print(note, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
