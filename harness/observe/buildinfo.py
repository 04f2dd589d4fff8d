"""A Go binary's build info (what ``go version -m BINARY`` prints), read in Python.

Since Go 1.18 the linker writes a ``.go.buildinfo`` blob: a 32-byte header
(``\\xff Go buildinf:``, pointer size, flags) followed by two varint-prefixed
strings, the Go version and the module info (``path``, ``mod``, ``dep`` and
``build`` lines between 16-byte sentinels). Reading it needs no Go toolchain
and works on any binary, stripped or not.

:class:`ProjectCode` turns the main module's path into the test "is this
function the program's own code?" used to attribute findings: ``main.*`` and
any function of a package under the main module. Nothing is tuned to one
program.

>>> info = read_buildinfo(Path("/usr/local/bin/someprog"))     # doctest: +SKIP
>>> info.main_module, info.settings.get("-race")              # doctest: +SKIP
('example.com/shop', 'true')
>>> ProjectCode.of(info)("example.com/shop/internal/cart.(*Cart).Add")  # doctest: +SKIP
True
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAIN_ONLY", "BuildInfo", "ProjectCode", "parse_modinfo", "read_buildinfo"]

_MAGIC = b"\xff Go buildinf:"
_HEADER = 32
_FLAG_INLINE_STRINGS = 0x2  # Go >= 1.18: the strings follow the header


@dataclass(frozen=True)
class BuildInfo:
    go_version: str  # "go1.26.8"
    path: str  # the main package's import path ("example.com/shop/cmd/shop")
    main_module: str  # "example.com/shop" ("" when built from files: command-line-arguments)
    settings: dict[str, str] = field(default_factory=dict)  # "-race": "true", "GOOS": ...

    @property
    def race(self) -> bool:
        return self.settings.get("-race") == "true"


@dataclass(frozen=True)
class ProjectCode:
    """Callable: is ``function`` (as a stack prints it) the program's own code?"""

    modules: tuple[str, ...] = ()

    @classmethod
    def of(cls, info: BuildInfo | None) -> ProjectCode:
        """The main module of ``info`` (only ``main.*`` when there is none)."""
        if info is None or not info.main_module:
            return MAIN_ONLY
        return cls((info.main_module,))

    def __call__(self, function: str) -> bool:
        if function.startswith("main."):
            return True
        return any(function.startswith((m + ".", m + "/")) for m in self.modules)


MAIN_ONLY = ProjectCode()


def _uvarint(buf: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def parse_modinfo(go_version: str, modinfo: str) -> BuildInfo:
    """:class:`BuildInfo` from the module info text (sentinels already removed or not)."""
    path = main_module = ""
    settings: dict[str, str] = {}
    for line in modinfo.splitlines():
        key, _, rest = line.partition("\t")
        if key == "path":
            path = rest
        elif key == "mod":
            main_module = rest.split("\t", 1)[0]
        elif key == "build":
            k, _, v = rest.partition("=")
            settings[k] = v
    if not main_module and path and path != "command-line-arguments":
        main_module = path
    return BuildInfo(go_version, path, main_module, settings)


def read_buildinfo(binary: Path) -> BuildInfo | None:
    """The build info of a Go binary; None for a file that is not one (or Go < 1.18)."""
    try:
        with binary.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = buf.find(_MAGIC)
            while pos != -1:
                info = _at(buf, pos) if pos % 16 == 0 else None
                if info is not None:
                    return info
                pos = buf.find(_MAGIC, pos + 1)
    except (OSError, ValueError):  # unreadable, or empty (mmap of 0 bytes)
        return None
    return None


def _at(buf: mmap.mmap, pos: int) -> BuildInfo | None:
    # The same magic is a string constant inside debug/buildinfo (in delve, go...):
    # only the header whose strings parse into a Go version is the real one.
    if pos + _HEADER > len(buf) or not buf[pos + 15] & _FLAG_INLINE_STRINGS:
        return None
    try:
        n, p = _uvarint(buf, pos + _HEADER)
        version = bytes(buf[p : p + n]).decode()
        n, p = _uvarint(buf, p + n)
        raw = bytes(buf[p : p + n])
    except (ValueError, UnicodeDecodeError):
        return None
    if not version.startswith("go"):
        return None
    if len(raw) >= 33 and raw[-17:-16] == b"\n":  # 16-byte sentinels around the text
        raw = raw[16:-16]
    return parse_modinfo(version, raw.decode(errors="replace"))
