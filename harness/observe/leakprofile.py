"""The Go runtime's goroutine leak profile, for programs faultline builds itself.

Go 1.26 has an experimental profile, ``goroutineleak`` (``GOEXPERIMENT=
goroutineleakprofile``): the garbage collector reports the goroutines blocked on
a channel, lock, Cond or WaitGroup that no runnable goroutine can reach any
more, i.e. blocked for good, with ``(leaked)`` after their wait reason. Unlike
dumps from outside it also proves a receive or a select that will never
return. It exists only in binaries built with the experiment, and is read only
from inside: so it is used for ``faultline observe --go-package PATH`` (unless
``--no-leak-profile``), where faultline compiles :data:`SOURCE` into the package
(``go build -overlay``: the program's directory is not touched). That file
writes the profile to ``$FAULTLINE_LEAKPROFILE_DIR/goroutineleak.txt`` once a
second (each write runs a GC cycle); nothing happens without the variable.
A plain binary, or an older Go, has no such profile: ``observe`` says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.observe.goroutines import Dump, parse_dump

__all__ = [
    "ENV",
    "EXPERIMENT",
    "FILE_NAME",
    "MIN_GO",
    "PROFILE",
    "SOURCE",
    "available",
    "read_profile",
]

EXPERIMENT = "goroutineleakprofile"
MIN_GO = (1, 26)
ENV = "FAULTLINE_LEAKPROFILE_DIR"
FILE_NAME = "zz_faultline_leakprofile.go"
PROFILE = "goroutineleak.txt"
SOURCE = f"""// Added by faultline observe --go-package (go build -overlay), not in the sources.
package main

import (
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"
)

func init() {{
	dir := os.Getenv("{ENV}")
	if dir == "" {{
		return
	}}
	go func() {{
		p := pprof.Lookup("goroutineleak")
		for p != nil {{
			time.Sleep(time.Second)
			tmp := filepath.Join(dir, "{PROFILE}.tmp")
			if f, err := os.Create(tmp); err == nil {{
				p.WriteTo(f, 2)
				f.Close()
				os.Rename(tmp, filepath.Join(dir, "{PROFILE}"))
			}}
		}}
	}}()
}}
"""


def available(go_version: str) -> bool:
    """Whether this Go (``go1.26.8``) has the experiment."""
    m = re.match(r"go(\d+)\.(\d+)", go_version)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= MIN_GO


def read_profile(directory: Path, *, taken_at: float) -> Dump | None:
    """The last profile written, as a dump whose leaked goroutines say ``(leaked)``."""
    try:
        text = (directory / PROFILE).read_text(errors="replace")
    except FileNotFoundError:
        return None
    return parse_dump(text, taken_at=taken_at)
