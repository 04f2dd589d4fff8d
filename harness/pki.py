"""A per-run certificate authority and leaf certificates, good ones and broken ones.

Everything lives in the run's ``pki/`` directory (mode 0700), recorded in the
run's ledger (inverse ``remove_tree``) before it is created, so a SIGKILLed
run loses its keys with ``faultline clean``. Keys are ECDSA P-256 (the curve
the TLS storm targets), written 0600 and never logged.

>>> pki = Pki.create(run)                                       # doctest: +SKIP
>>> srv = pki.server("etcd-0")            # SAN 127.0.0.1, ::1, localhost
>>> peer = pki.peer("etcd-0-peer")        # serverAuth + clientAuth
>>> cli = pki.client("orderd")
>>> bad = pki.expired("etcd-0-expired")   # for certificate faults
>>> srv.ca, srv.cert, srv.key
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import ConfigError
from harness.run import Run

__all__ = ["CertKind", "CertPaths", "Pki"]

log = logging.getLogger(__name__)

LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_NAMES = ("localhost",)
# A name no resolver answers (RFC 6761), so a wrong-SAN cert can never match a real host.
WRONG_SAN = "wrong-san.faultline.invalid"
# Leaves outlive any run; backdated a little so a peer's clock skew does not reject them.
VALIDITY = datetime.timedelta(days=7)
BACKDATE = datetime.timedelta(minutes=5)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class CertKind(enum.Enum):
    """What a leaf certificate is for: its extended key usages."""

    SERVER = "server"
    PEER = "peer"  # both ends of a mutual-TLS link: etcd peers
    CLIENT = "client"


_EKUS = {
    CertKind.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
    CertKind.PEER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    CertKind.CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
}


@dataclass(frozen=True)
class CertPaths:
    """A leaf's files. ``ca`` is the run's CA: what the holder trusts (even when
    ``cert`` itself is deliberately signed by another CA)."""

    ca: Path
    cert: Path
    key: Path

    def __iter__(self) -> Iterator[Path]:
        """Unpacks as ``ca, cert, key = paths``."""
        return iter((self.ca, self.cert, self.key))


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _new_ca(common_name: str, now: datetime.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Ca(key, cert)


class Pki:
    """The run's CA and the leaves issued from it; see the module docstring."""

    def __init__(self, dir: Path, ca: _Ca) -> None:
        self.dir = dir
        self._ca = ca
        self._rogue: _Ca | None = None
        self.ca_cert = dir / "ca.crt"

    @classmethod
    def create(cls, run: Run) -> Pki:
        """Record, then create ``<run dir>/pki`` (0700) with a fresh CA in it."""
        path = run.dir / "pki"
        seq = run.ledger.record("pki directory", {"op": "remove_tree", "path": str(path)})
        pki_dir = run.subdir("pki")
        os.chmod(pki_dir, 0o700)
        ca = _new_ca(f"faultline run {run.run_id} CA", _now())
        # The CA key stays in memory: nothing outside this process ever signs with it.
        (pki_dir / "ca.crt").write_bytes(_cert_pem(ca.cert))
        run.ledger.applied(seq, path=str(pki_dir))
        log.info("pki for run %s in %s", run.run_id, pki_dir)
        return cls(pki_dir, ca)

    # Good certificates ---------------------------------------------------------------

    def server(self, name: str, *, hosts: Sequence[str] = (), ips: Sequence[str] = ()) -> CertPaths:
        """A server cert valid for 127.0.0.1, ::1, localhost and ``hosts``/``ips``."""
        return self._issue(name, CertKind.SERVER, hosts=hosts, ips=ips)

    def peer(self, name: str, *, hosts: Sequence[str] = (), ips: Sequence[str] = ()) -> CertPaths:
        """Like :meth:`server`, also usable as a client cert (mutual TLS between peers)."""
        return self._issue(name, CertKind.PEER, hosts=hosts, ips=ips)

    def client(self, name: str, *, groups: Sequence[str] = ()) -> CertPaths:
        """A client cert with common name ``name`` (etcd maps it to a user) and an
        organization per group (Kubernetes maps them to groups: ``system:masters``)."""
        return self._issue(name, CertKind.CLIENT, groups=groups)

    # Broken on purpose, for certificate faults ---------------------------------------

    def expired(self, name: str, kind: CertKind = CertKind.SERVER) -> CertPaths:
        """Otherwise good, but its validity ended yesterday."""
        now = _now()
        return self._issue(
            name,
            kind,
            not_before=now - datetime.timedelta(days=2),
            not_after=now - datetime.timedelta(days=1),
        )

    def untrusted(self, name: str, kind: CertKind = CertKind.SERVER) -> CertPaths:
        """Otherwise good, but signed by a second CA that nobody in the run trusts."""
        if self._rogue is None:
            self._rogue = _new_ca("faultline untrusted CA", _now())
            (self.dir / "untrusted-ca.crt").write_bytes(_cert_pem(self._rogue.cert))
        return self._issue(name, kind, issuer=self._rogue)

    def wrong_san(self, name: str, kind: CertKind = CertKind.SERVER) -> CertPaths:
        """Trusted and valid, but its only SAN is a name no client connects to."""
        return self._issue(name, kind, loopback=False, hosts=(WRONG_SAN,))

    # ----------------------------------------------------------------------------------

    def _issue(
        self,
        name: str,
        kind: CertKind,
        *,
        hosts: Sequence[str] = (),
        ips: Sequence[str] = (),
        loopback: bool = True,
        groups: Sequence[str] = (),
        issuer: _Ca | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertPaths:
        if not _NAME_RE.match(name):
            raise ConfigError(
                "name", f"{name!r} is not a usable certificate name", expected="[A-Za-z0-9._-]+"
            )
        ca = issuer or self._ca
        now = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        if kind is not CertKind.CLIENT:
            dns = [*LOOPBACK_NAMES, *hosts] if loopback else list(hosts)
            addrs = [*LOOPBACK_IPS, *ips] if loopback else list(ips)
            try:
                sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addrs)]
            except ValueError as err:
                raise ConfigError("ips", str(err), expected="IP addresses") from err
            sans += [x509.DNSName(h) for h in dict.fromkeys(dns)]
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - BACKDATE)
            .not_valid_after(not_after or now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(_EKUS[kind]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca.key, hashes.SHA256())
        paths = CertPaths(
            ca=self.ca_cert, cert=self.dir / f"{name}.crt", key=self.dir / f"{name}.key"
        )
        _write_private(paths.key, _key_pem(key))
        paths.cert.write_bytes(_cert_pem(cert))
        log.debug("issued %s certificate %s", kind.value, paths.cert)
        return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
