"""harness.gobuild: cache key, missing toolchain, real (concurrent) builds."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness import gobuild
from harness.errors import ConfigError, MissingDependency


def _tree(root: Path) -> Path:
    (root / "cmd" / "x").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/x\n\ngo 1.22\n")
    (root / "cmd" / "x" / "main.go").write_text("package main\n\nfunc main() {}\n")
    return root


def test_source_key_tracks_sources_flags_and_go_version(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    base = gobuild.source_key("x", race=False, go_ver="go1.26.0", src=src)
    assert base == gobuild.source_key("x", race=False, go_ver="go1.26.0", src=src)
    assert base != gobuild.source_key("x", race=True, go_ver="go1.26.0", src=src)
    assert base != gobuild.source_key("x", race=False, go_ver="go1.22.1", src=src)
    assert base != gobuild.source_key("y", race=False, go_ver="go1.26.0", src=src)

    # Tests and unrelated files do not change the binary, so not the key.
    (src / "cmd" / "x" / "main_test.go").write_text("package main\n")
    (src / "README.md").write_text("hello\n")
    assert gobuild.source_key("x", race=False, go_ver="go1.26.0", src=src) == base

    (src / "cmd" / "x" / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    changed = gobuild.source_key("x", race=False, go_ver="go1.26.0", src=src)
    assert changed != base
    (src / "go.sum").write_text("example.com/y v1.0.0 h1:abc=\n")
    assert gobuild.source_key("x", race=False, go_ver="go1.26.0", src=src) != changed


def test_missing_go_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FAULTLINE_GO", raising=False)
    monkeypatch.setattr(gobuild, "FALLBACK_GO_PATHS", ())
    with pytest.raises(MissingDependency) as info:
        gobuild.build("orderd")
    text = str(info.value)
    assert "Go" in text and "1.22" in text
    assert "apt-get install golang-go" in text and "https://go.dev/dl" in text


def test_too_old_go_is_missing_dependency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.19.8\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FAULTLINE_GO", str(fake))
    with pytest.raises(MissingDependency, match=r"found go1\.19\.8"):
        gobuild.build("orderd")


def test_unknown_target_is_config_error() -> None:
    with pytest.raises(ConfigError, match="orderd"):
        gobuild.build("no-such-target")


def _have_go() -> bool:
    try:
        gobuild.find_go()
    except MissingDependency:
        return False
    return True


needs_go = pytest.mark.skipif(not _have_go(), reason="Go toolchain not installed")


@needs_go
def test_real_build_concurrent_callers_share_one_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAULTLINE_CACHE_DIR", str(tmp_path / "cache"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda _: gobuild.build("deadlockd"), range(2)))
    assert paths[0] == paths[1]
    binary = paths[0]
    assert binary.parent == tmp_path / "cache" and binary.stat().st_mode & 0o111
    assert not list(binary.parent.glob(".*.tmp")), "temporary build files left behind"
    mtime = binary.stat().st_mtime_ns
    assert gobuild.build("deadlockd") == binary and binary.stat().st_mtime_ns == mtime

    res = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 2
    assert "fatal error: all goroutines are asleep - deadlock!" in res.stderr


@needs_go
def test_real_orderd_serves_http_and_grpc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    grpc = pytest.importorskip("grpc")
    monkeypatch.setenv("FAULTLINE_CACHE_DIR", str(tmp_path / "cache"))
    binary = gobuild.build("orderd")
    proc = subprocess.Popen(
        [str(binary), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
         "--admin-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ev = json.loads(proc.stdout.readline())
        assert ev["event"] == "listening"
        with urllib.request.urlopen(f"http://{ev['http']}/ping", timeout=5) as resp:
            assert resp.read() == b"pong\n"
        from harness._proto import orders_pb2, orders_pb2_grpc

        with grpc.insecure_channel(ev["grpc"]) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)  # type: ignore[no-untyped-call]
            created = stub.CreateOrder(orders_pb2.CreateOrderRequest(sku="py", qty=2), timeout=5)
            got = stub.GetOrder(orders_pb2.GetOrderRequest(id=created.order.id), timeout=5)
            assert got.order.sku == "py" and got.order.qty == 2
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_package_key_is_the_modules_own(tmp_path: Path) -> None:
    # A user's package: keyed by its own module's sources, not go_targets'.
    mod = _tree(tmp_path / "mod")
    assert gobuild.module_root(mod / "cmd" / "x") == mod.resolve()
    base = gobuild.source_key("pkg:cmd/x", race=False, go_ver="go1.26.0", src=mod)
    (mod / "cmd" / "x" / "extra.go").write_text("package main\n")
    assert gobuild.source_key("pkg:cmd/x", race=False, go_ver="go1.26.0", src=mod) != base


def test_build_package_refuses_what_is_not_a_go_package(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a directory with \.go files"):
        gobuild.build_package(tmp_path)
    (tmp_path / "main.go").write_text("package main\n\nfunc main() {}\n")
    with pytest.raises(ConfigError, match="not inside a Go module"):
        gobuild.build_package(tmp_path)


@needs_go
def test_build_package_builds_from_its_own_module_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAULTLINE_CACHE_DIR", str(tmp_path / "cache"))
    mod = _tree(tmp_path / "mod")
    (mod / "cmd" / "x" / "main.go").write_text(
        'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("from x") }\n'
    )
    binary = gobuild.build_package(mod / "cmd" / "x")
    assert binary.parent == tmp_path / "cache" and binary.name.startswith("x-")
    mtime = binary.stat().st_mtime_ns
    assert gobuild.build_package(mod / "cmd" / "x") == binary
    assert binary.stat().st_mtime_ns == mtime
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "from x\n"
    racy = gobuild.build_package(mod / "cmd" / "x", race=True)
    assert racy != binary and racy.name.endswith("-race")
