"""A small private CA for the mTLS link between agents and collectors.

Layout of a PKI directory (fixed; agent and collector configs point into it):

    DIR/ca.crt, DIR/ca.key                  the CA (ECDSA P-256)
    DIR/collector.crt, DIR/collector.key    collector server certificate (serverAuth)
    DIR/agents/NAME.crt, DIR/agents/NAME.key  one client certificate per agent (clientAuth)

The agent's identity is the CN of its client certificate (also its DNS SAN). Private
keys are created with mode 0600 (never widened and then narrowed), directories 0700.
Nothing is ever overwritten: an existing file is an `AlreadyExistsError`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector.admin.errors import (
    AlreadyExistsError,
    CaMissingError,
    InvalidNameError,
    PkiError,
)

AGENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
COLLECTOR_CN = "crm-audit-collector"
CA_CN = "crm-audit CA"
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 825
DEFAULT_COLLECTOR_SANS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

# Certificates are backdated a little so that a peer whose clock is slightly behind
# does not reject a certificate issued a moment ago.
_BACKDATE = dt.timedelta(minutes=5)

SanEntry = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class PkiLayout:
    """Where each file of a PKI directory lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def collector_cert(self) -> Path:
        return self.root / "collector.crt"

    @property
    def collector_key(self) -> Path:
        return self.root / "collector.key"

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    def agent_cert(self, name: str) -> Path:
        return self.agents_dir / f"{name}.crt"

    def agent_key(self, name: str) -> Path:
        return self.agents_dir / f"{name}.key"


@dataclass(frozen=True)
class IssuedCert:
    """Paths of a certificate and its private key as written."""

    cert: Path
    key: Path


def validate_agent_name(name: str) -> str:
    """Return `name` if it is a valid agent identity, else raise `InvalidNameError`."""
    if not AGENT_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid agent name {name!r}: use 1-63 characters A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def parse_sans(values: Iterable[str]) -> list[SanEntry]:
    """Turn SAN strings into entries: IP addresses become IP SANs, the rest DNS SANs."""
    entries: list[SanEntry] = []
    for value in values:
        value = value.strip()
        if not value:
            raise PkiError("empty --san value")
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            try:
                entries.append(x509.DNSName(value))
            except (ValueError, UnicodeError) as exc:
                raise PkiError(f"invalid --san value {value!r}: {exc}") from exc
    # keep order, drop duplicates (e.g. --san localhost)
    unique: list[SanEntry] = []
    for entry in entries:
        if entry not in unique:
            unique.append(entry)
    return unique


def init_ca(
    directory: Path,
    *,
    sans: Sequence[str] = (),
    days: int = DEFAULT_CA_DAYS,
    cert_days: int | None = None,
    now: dt.datetime | None = None,
) -> PkiLayout:
    """Create a CA and the collector server certificate in `directory`.

    `sans` are added to the collector certificate's default SANs (localhost,
    127.0.0.1, ::1). `days` is the CA's validity; the collector certificate gets
    `cert_days` (default: the shorter of `days` and 825). `now` defaults to the
    current time. Raises `AlreadyExistsError` if the directory already holds a CA.
    """
    _check_days(days)
    cert_days = min(days, DEFAULT_CERT_DAYS) if cert_days is None else cert_days
    _check_days(cert_days)
    layout = PkiLayout(Path(directory))
    for existing in (layout.ca_cert, layout.ca_key):
        if existing.exists() or existing.is_symlink():
            raise AlreadyExistsError(
                f"pki init: {layout.root} already holds a CA ({existing}); refusing to overwrite"
            )
    san_entries = parse_sans([*DEFAULT_COLLECTOR_SANS, *sans])
    start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_CN)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    collector_key = ec.generate_private_key(ec.SECP256R1())
    collector_cert = _leaf(
        ca_cert,
        ca_key,
        collector_key,
        common_name=COLLECTOR_CN,
        sans=san_entries,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        not_before=start,
        not_after=start + dt.timedelta(days=cert_days),
    )

    _make_dir(layout.root)
    # The key first: if anything is in the way we fail before writing a certificate
    # that would then lack its key.
    _write_key(layout.ca_key, ca_key)
    _write_cert(layout.ca_cert, ca_cert)
    _write_key(layout.collector_key, collector_key)
    _write_cert(layout.collector_cert, collector_cert)
    _make_dir(layout.agents_dir)
    return layout


def issue_agent(
    directory: Path,
    name: str,
    *,
    days: int = DEFAULT_CERT_DAYS,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCert:
    """Issue the client certificate of agent `name` from the CA in `directory`.

    Validity is `now - 5 min` .. `+ days` unless `not_before`/`not_after` are given
    (tests use them to make already-expired or not-yet-valid certificates). Raises
    `InvalidNameError`, `CaMissingError` or `AlreadyExistsError`.
    """
    validate_agent_name(name)
    layout = PkiLayout(Path(directory))
    ca_cert, ca_key = load_ca(layout)
    cert_path, key_path = layout.agent_cert(name), layout.agent_key(name)
    for existing in (cert_path, key_path):
        if existing.exists() or existing.is_symlink():
            raise AlreadyExistsError(f"pki agent: {existing} already exists; refusing to overwrite")
    if not_before is None or not_after is None:
        _check_days(days)
    start = not_before or (now or dt.datetime.now(dt.UTC)) - _BACKDATE
    end = not_after or start + dt.timedelta(days=days)
    if end <= start:
        raise PkiError(f"pki agent: not_after ({end}) must be later than not_before ({start})")

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(
        ca_cert,
        ca_key,
        key,
        common_name=name,
        sans=[x509.DNSName(name)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before=start,
        not_after=end,
    )
    _make_dir(layout.agents_dir)
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return IssuedCert(cert=cert_path, key=key_path)


def load_ca(layout: PkiLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read the CA certificate and key of a PKI directory."""
    if not layout.ca_cert.is_file() or not layout.ca_key.is_file():
        raise CaMissingError(
            f"no CA in {layout.root} ({layout.ca_cert} and {layout.ca_key} needed); "
            f"run `crm-audit pki init {layout.root}` first"
        )
    try:
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot read the CA in {layout.root}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{layout.ca_key}: not an EC private key")
    return cert, key


def load_certificate(path: Path) -> x509.Certificate:
    """Read one PEM certificate."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path}: {exc}") from exc


def common_name(cert: x509.Certificate) -> str:
    """The subject CN of `cert` (the agent identity for agent certificates)."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        raise PkiError("certificate has no subject CN")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    sans: Sequence[SanEntry],
    usage: x509.ObjectIdentifier,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"validity must be at least 1 day, got {days}")


def _make_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700; an existing directory is left as is."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise PkiError(f"{path} is not a directory")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite, not even when the file appeared after our check.
    # O_NOFOLLOW: never write through a symlink planted at the key's path.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise AlreadyExistsError(f"{path} already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise PkiError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_exclusive(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_exclusive(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
