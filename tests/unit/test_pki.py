"""The run's PKI: good certificates verify, broken ones fail in the stated way."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from harness.errors import ConfigError
from harness.pki import WRONG_SAN, CertKind, CertPaths, Pki
from harness.run import Run


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run.open(tmp_path / "state", watchdog=False)
    yield r
    assert r.close() == []


@pytest.fixture
def pki(run: Run) -> Pki:
    return Pki.create(run)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return set(ext.get_values_for_type(x509.DNSName)), ips


def openssl_verify(paths: CertPaths, *extra: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: apt-get install -y openssl")
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(paths.ca), *extra, str(paths.cert)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_pki_dir_is_recorded_before_it_exists_and_removed_with_the_run(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "state", watchdog=False)
    pki = Pki.create(run)
    (entry,) = run.ledger.entries()
    assert entry.inverse == {"op": "remove_tree", "path": str(pki.dir)}
    assert entry.applied
    assert stat.S_IMODE(pki.dir.stat().st_mode) == 0o700
    assert run.close() == []
    assert not pki.dir.exists()


def test_server_cert_chains_to_the_ca_with_loopback_and_extra_sans(pki: Pki) -> None:
    paths = pki.server("etcd-0", hosts=["etcd-0.faultline"], ips=["127.0.0.2"])
    ca, leaf = load(paths.ca), load(paths.cert)
    leaf.verify_directly_issued_by(ca)
    dns, ips = sans(leaf)
    assert dns == {"localhost", "etcd-0.faultline"}
    assert ips == {"127.0.0.1", "::1", "127.0.0.2"}
    assert ekus(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH}
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("::1")))
    )
    verifier.verify(leaf, [])
    assert openssl_verify(paths, "-verify_ip", "127.0.0.1").returncode == 0
    assert openssl_verify(paths, "-verify_hostname", "localhost").returncode == 0


def test_peer_cert_serves_both_ends_and_client_cert_only_the_client_end(pki: Pki) -> None:
    peer, client = pki.peer("etcd-0-peer"), pki.client("orderd")
    assert ekus(load(peer.cert)) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert ekus(load(client.cert)) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert openssl_verify(peer, "-purpose", "sslserver").returncode == 0
    assert openssl_verify(peer, "-purpose", "sslclient").returncode == 0
    assert openssl_verify(client, "-purpose", "sslclient").returncode == 0
    for wrong_use in (
        openssl_verify(client, "-purpose", "sslserver"),
        openssl_verify(pki.server("srv-only"), "-purpose", "sslclient"),
    ):
        assert wrong_use.returncode != 0
        assert "certificate purpose" in wrong_use.stdout + wrong_use.stderr


def test_keys_are_0600_p256_and_never_logged(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    paths = pki.server("srv")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in paths.key.read_bytes()
    assert load(paths.cert).public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert "PRIVATE KEY" not in caplog.text
    ca, cert, key = paths  # unpacks for components that want the three paths
    assert (ca, cert, key) == (paths.ca, paths.cert, paths.key)


def test_good_cert_is_valid_now_and_expired_cert_ended_before_now(pki: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    good, expired = load(pki.server("good").cert), load(pki.expired("old").cert)
    assert good.not_valid_before_utc < now < good.not_valid_after_utc
    assert expired.not_valid_after_utc < now
    load(pki.expired("old2").cert).verify_directly_issued_by(load(pki.ca_cert))
    result = openssl_verify(pki.expired("old3"))
    assert result.returncode != 0
    assert "certificate has expired" in result.stdout + result.stderr


def test_untrusted_cert_is_signed_by_another_ca(pki: Pki) -> None:
    paths = pki.untrusted("rogue", CertKind.CLIENT)
    leaf = load(paths.cert)
    with pytest.raises(ValueError):  # the signature is not the run CA's
        leaf.verify_directly_issued_by(load(paths.ca))
    leaf.verify_directly_issued_by(load(pki.dir / "untrusted-ca.crt"))
    result = openssl_verify(paths)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_wrong_san_cert_is_trusted_but_matches_no_loopback_name(pki: Pki) -> None:
    paths = pki.wrong_san("misnamed")
    leaf, ca = load(paths.cert), load(paths.ca)
    leaf.verify_directly_issued_by(ca)
    assert sans(leaf) == ({WRONG_SAN}, set())
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("localhost"))
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])
    assert openssl_verify(paths).returncode == 0  # the chain itself is fine...
    mismatch = openssl_verify(paths, "-verify_ip", "127.0.0.1")  # ...the name is not
    assert mismatch.returncode != 0
    assert "mismatch" in mismatch.stdout + mismatch.stderr


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "-leading-dash", "x" * 80])
def test_unusable_names_are_refused_before_any_file_is_written(pki: Pki, name: str) -> None:
    before = sorted(pki.dir.iterdir())
    with pytest.raises(ConfigError) as info:
        pki.server(name)
    assert info.value.field == "name"
    assert sorted(pki.dir.iterdir()) == before
