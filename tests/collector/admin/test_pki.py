"""PKI: files and modes, certificate fields, refusals, and a real mTLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from collector.admin import pki as pkilib
from collector.admin.errors import AlreadyExistsError, CaMissingError, InvalidNameError
from tests.helpers import free_port


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA + collector cert + agent-1, shared by the tests of this module.

    (Not the session fixture `pki` of tests/conftest.py: tests/collector/conftest.py
    defines its own `pki`, which shadows it below tests/collector.)
    """
    directory = tmp_path_factory.mktemp("ca")
    pkilib.init_ca(directory)
    pkilib.issue_agent(directory, "agent-1")
    return directory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_layout_with_private_modes(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    layout = pkilib.init_ca(root)
    assert layout.root == root
    for key in (root / "ca.key", root / "collector.key"):
        assert _mode(key) == 0o600
    for cert in (root / "ca.crt", root / "collector.crt"):
        assert _mode(cert) & 0o077 == 0o044  # public, not writable by others
    assert _mode(root) == 0o700
    assert _mode(root / "agents") == 0o700


def test_private_keys_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pkilib.init_ca(tmp_path / "pki")
        issued = pkilib.issue_agent(tmp_path / "pki", "agent-9")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "pki" / "ca.key") == 0o600
    assert _mode(issued.key) == 0o600


def test_ca_certificate_fields(ca_dir: Path) -> None:
    ca = pkilib.load_certificate(ca_dir / "ca.crt")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_collector_certificate_fields(tmp_path: Path) -> None:
    pkilib.init_ca(tmp_path, sans=["collector.bank.internal", "10.1.2.3", "fd00::7"])
    cert = pkilib.load_certificate(tmp_path / "collector.crt")
    assert pkilib.common_name(cert) == "crm-audit-collector"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "collector.bank.internal"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fd00::7"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = pkilib.load_certificate(tmp_path / "ca.crt")
    cert.verify_directly_issued_by(ca)


def test_agent_certificate_fields(ca_dir: Path) -> None:
    cert = pkilib.load_certificate(ca_dir / "agents" / "agent-1.crt")
    assert pkilib.common_name(cert) == "agent-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["agent-1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(pkilib.load_certificate(ca_dir / "ca.crt"))
    assert _mode(ca_dir / "agents" / "agent-1.key") == 0o600


def test_validity_days(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    pkilib.init_ca(tmp_path, days=30, now=now)
    issued = pkilib.issue_agent(tmp_path, "a1", days=7, now=now)
    ca = pkilib.load_certificate(tmp_path / "ca.crt")
    agent = pkilib.load_certificate(issued.cert)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(days=30)
    assert agent.not_valid_after_utc - agent.not_valid_before_utc == dt.timedelta(days=7)
    assert agent.not_valid_before_utc <= now


def test_init_refuses_to_overwrite_a_ca(tmp_path: Path) -> None:
    pkilib.init_ca(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(AlreadyExistsError, match="already holds a CA"):
        pkilib.init_ca(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == before


def test_init_refuses_when_only_the_key_is_left(tmp_path: Path) -> None:
    pkilib.init_ca(tmp_path)
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(AlreadyExistsError, match=r"ca\.key"):
        pkilib.init_ca(tmp_path)


def test_agent_refuses_to_overwrite(ca_dir: Path) -> None:
    with pytest.raises(AlreadyExistsError, match=r"agent-1\.crt"):
        pkilib.issue_agent(ca_dir, "agent-1")


def test_agent_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(CaMissingError, match="no CA"):
        pkilib.issue_agent(tmp_path, "agent-1")
    assert not (tmp_path / "agents").exists()


@pytest.mark.parametrize(
    "name", ["", "-lead", ".hidden", "a b", "a/b", "../x", "x" * 64, "ümlaut", "a\nb"]
)
def test_invalid_agent_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidNameError):
        pkilib.issue_agent(tmp_path, name)


@pytest.mark.parametrize("name", ["a", "agent-1", "crm01.bank.example", "A_b-9", "x" * 63])
def test_valid_agent_names(name: str) -> None:
    assert pkilib.validate_agent_name(name) == name


def test_expired_agent_certificate(tmp_path: Path) -> None:
    pkilib.init_ca(tmp_path)
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    issued = pkilib.issue_agent(
        tmp_path, "old", not_before=past, not_after=past + dt.timedelta(days=1)
    )
    cert = pkilib.load_certificate(issued.cert)
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------- real mTLS over gRPC


def _identity_server(pki_dir: Path, port: int) -> grpc.Server:
    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        names = [bytes(name) for name in context.auth_context().get("x509_common_name", [])]
        return names[0] if names else b""

    handler = grpc.method_handlers_generic_handler(
        "test.Identity",
        {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [((pki_dir / "collector.key").read_bytes(), (pki_dir / "collector.crt").read_bytes())],
        root_certificates=(pki_dir / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    return server


@pytest.fixture
def identity_server(ca_dir: Path) -> Iterator[int]:
    port = free_port()
    server = _identity_server(ca_dir, port)
    try:
        yield port
    finally:
        server.stop(grace=None).wait()


def _whoami(port: int, ca: Path, cert: Path, key: Path, host: str = "localhost") -> bytes:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    with grpc.secure_channel(f"{host}:{port}", credentials) as channel:
        call = channel.unary_unary(
            "/test.Identity/WhoAmI", request_serializer=None, response_deserializer=None
        )
        result: bytes = call(b"", timeout=10)
        return result


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_mtls_handshake_carries_agent_identity(
    ca_dir: Path, identity_server: int, host: str
) -> None:
    agent = ca_dir / "agents"
    cn = _whoami(
        identity_server, ca_dir / "ca.crt", agent / "agent-1.crt", agent / "agent-1.key", host
    )
    assert cn == b"agent-1"


def test_mtls_refuses_expired_agent_certificate(
    ca_dir: Path, identity_server: int, tmp_path: Path
) -> None:
    # a second PKI sharing the session CA: copy the CA, issue an expired cert from it
    shared = tmp_path / "pki"
    shared.mkdir(mode=0o700)
    for name in ("ca.crt", "ca.key"):
        (shared / name).write_bytes((ca_dir / name).read_bytes())
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    issued = pkilib.issue_agent(
        shared, "expired", not_before=past, not_after=past + dt.timedelta(days=1)
    )
    with pytest.raises(grpc.RpcError) as failure:
        _whoami(identity_server, ca_dir / "ca.crt", issued.cert, issued.key)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_certificate_of_a_foreign_ca(
    ca_dir: Path, identity_server: int, tmp_path: Path
) -> None:
    pkilib.init_ca(tmp_path / "foreign")
    rogue = pkilib.issue_agent(tmp_path / "foreign", "agent-1")
    with pytest.raises(grpc.RpcError) as failure:
        _whoami(identity_server, ca_dir / "ca.crt", rogue.cert, rogue.key)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
