"""One OpenSearch node with the security plugin, for the least-privilege tests.

`secured_cluster` (module-scoped fixture) starts a single node on a free loopback port
in a fresh temp dir and stops it afterwards:

- TLS on HTTP and transport with certificates made here (RSA, PKCS#8 keys as the plugin
  wants them): a CA, the node's certificate (SAN 127.0.0.1 / localhost, named in
  ``plugins.security.nodes_dn``), a client certificate with CN ``crm-audit-collector``
  (the writer, by certificate) and a superuser certificate (``plugins.security.authcz.
  admin_dn``) that only the test harness uses to look at what happened. A second,
  foreign CA signs nothing the node trusts: clients given it must fail verification.
- The security index is bootstrapped on first start from ``config/opensearch-security/``
  (``plugins.security.allow_default_init_securityindex``): roles.yml, roles_mapping.yml
  and config.yml are the files shipped in config/opensearch/security, copied unchanged;
  internal_users.yml is written here; action groups, tenants, nodes_dn, allowlist and
  audit stay the plugin's own.
- Internal users: ``crm-audit-collector`` (writer), ``crm-audit-admin`` (admin),
  ``crm-audit-retention`` (the retention job) and an
  analyst with backend role ``soc-analysts``, each with a random password hashed by the
  plugin's own ``tools/hash.sh`` (bcrypt; no Python dependency for it).

The node is OpenSearch 2.19.4 with opensearch-security 2.19.4.0, not the 2.19.6 of the
rest of the suite: plugins must match the core version exactly, and Maven Central serves
opensearch-security only as 2.11.1.0, 2.19.3.0, 2.19.4.0 and 3.4.0.0. When that download
fails the fixture skips, with the reason.

Nothing here reads ``OPENSEARCH_URL``: the tests need this node, whatever cluster the
rest of the session uses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector.admin.errors import DownloadError
from collector.admin.opensearch_node import EmbeddedOpenSearch, defaults_from_env
from collector.index import ClientAuth, OpenSearchHttp, Requester, make_client
from tests.helpers import TEST_NODE_JAVA_OPTS, free_port, self_signed_ca, traversable_tmpdir

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "opensearch" / "security"
SECURITY_PLUGIN = "opensearch-security"
# Core and plugin versions must be equal; 2.19.4.0 is the newest 2.19 security zip on
# Maven Central (2.19.6.0 is not published there).
VERSIONS = ("2.19.4",)
# The shipped roles name crm-audit-* indices: the cluster is this module's alone, so the
# tests use the default prefix rather than a random one.
PREFIX = "crm-audit"

WRITER = "crm-audit-collector"
ADMIN = "crm-audit-admin"
RETENTION = "crm-audit-retention"  # `retention run` from the timer (crm_audit_retention)
ANALYST = "soc-analyst-1"
ANALYST_BACKEND_ROLE = "soc-analysts"

NODE_NAME = "crm-audit-secured-1"
_ORG = "crm-audit-test"
START_TIMEOUT_S = 180.0


def _log(message: str) -> None:
    print(f"[secured opensearch] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PKCS#8 PEM private key (0600)."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    # O first, CN last: the RFC 4514 string (what nodes_dn / admin_dn compare) then
    # reads "CN=...,O=...".
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,  # the security plugin reads PKCS#8 only
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


class TestCa:
    """A throw-away CA issuing server and client certificates."""

    def __init__(self, directory: Path, cn: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        self.name = _name(cn)
        self.cert = self_signed_ca(self.key, self.name, not_before=now, days=2)
        self.cert_path = directory / "ca.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, cn: str, *, server: bool) -> tuple[KeyPair, str]:
        """A certificate for `cn` (serverAuth + clientAuth when `server`, else clientAuth)
        and its subject as an RFC 4514 string."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            # transport TLS: every node is server and client of the others
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair, cert.subject.rfc4514_string()


# ---------------------------------------------------------------------------- users


@dataclass(frozen=True)
class User:
    """An internal user: name, password and a 0600 file holding it (for configs)."""

    name: str
    password: str
    password_file: Path
    backend_roles: tuple[str, ...] = ()


def _hash_password(dist: Path, java_home: Path | None, password: str) -> str:
    """The bcrypt hash of `password` from the plugin's own tools/hash.sh."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CRM_AUDIT_TEST_PW": password}
    if java_home is not None:
        env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    # -env: the password is read from the environment, not shown in the process list
    done = subprocess.run(
        # the zip does not mark the script executable
        [
            "bash",
            str(dist / "plugins" / SECURITY_PLUGIN / "tools" / "hash.sh"),
            "-env",
            "CRM_AUDIT_TEST_PW",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    hashed = [line for line in done.stdout.splitlines() if line.startswith("$2")]
    if done.returncode != 0 or len(hashed) != 1:
        raise RuntimeError(f"hash.sh failed ({done.returncode}): {done.stdout}{done.stderr}")
    return hashed[0]


def _internal_users_yml(users: list[User], hashes_: list[str]) -> str:
    lines = [
        "# Written by tests/integration/secured_opensearch.py: only these users exist.",
        "_meta:",
        '  type: "internalusers"',
        "  config_version: 2",
    ]
    for user, hashed in zip(users, hashes_, strict=True):
        lines += [f"{user.name}:", f'  hash: "{hashed}"', "  reserved: false"]
        if user.backend_roles:
            lines.append(
                "  backend_roles: [" + ", ".join(f'"{r}"' for r in user.backend_roles) + "]"
            )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- cluster


@dataclass
class SecuredCluster:
    """The running node and what clients need to reach it."""

    node: EmbeddedOpenSearch
    root: Path
    ca: Path
    foreign_ca: Path
    users: dict[str, User]
    writer_cert: KeyPair
    superuser_cert: KeyPair
    start_seconds: float
    # one client (connection pool) per identity, however often a test polls
    _clients: dict[ClientAuth, Requester] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return self.node.url

    def http(self, user: str) -> Requester:
        """A requester authenticated with basic auth as internal user `user`."""
        who = self.users[user]
        return self._requester(ClientAuth(username=who.name, password=who.password, ca=self.ca))

    def cert_http(self, pair: KeyPair) -> Requester:
        """A requester authenticated by client certificate `pair` only."""
        return self._requester(ClientAuth(ca=self.ca, client_cert=pair.cert, client_key=pair.key))

    def superuser(self) -> Requester:
        """The test harness's view: the admin_dn certificate, allowed everything."""
        return self.cert_http(self.superuser_cert)

    def _requester(self, auth: ClientAuth) -> Requester:
        if auth not in self._clients:
            self._clients[auth] = OpenSearchHttp(make_client(self.url, timeout_s=30, auth=auth))
        return self._clients[auth]

    def opensearch_section(self, user: str | None, *, cert: KeyPair | None = None) -> str:
        """The keys under ``opensearch:`` of a collector.yaml reaching this node as
        internal user `user` and/or with client certificate `cert`."""
        lines = [f"ca: {self.ca}"]
        if user is not None:
            who = self.users[user]
            lines += [f"username: {who.name}", f"password_file: {who.password_file}"]
        if cert is not None:
            lines += [f"client_cert: {cert.cert}", f"client_key: {cert.key}"]
        return "\n".join(lines)


def _security_settings(node_dn: str, superuser_dn: str) -> dict[str, object]:
    pem = {
        "pemcert_filepath": "node.crt",
        "pemkey_filepath": "node.key",
        "pemtrustedcas_filepath": "ca.crt",
    }
    settings: dict[str, object] = {}
    for layer in ("transport", "http"):
        for key, value in pem.items():
            settings[f"plugins.security.ssl.{layer}.{key}"] = value
    settings.update(
        {
            "plugins.security.ssl.http.enabled": True,
            # OPTIONAL: a client certificate is asked for, not required (basic-auth
            # users have none)
            "plugins.security.ssl.http.clientauth_mode": "OPTIONAL",
            "plugins.security.nodes_dn": [node_dn],
            "plugins.security.authcz.admin_dn": [superuser_dn],
            # bootstrap the security index from config/opensearch-security/*.yml
            "plugins.security.allow_default_init_securityindex": True,
        }
    )
    return settings


def start_secured_cluster(root: Path) -> SecuredCluster:
    """Install, configure and start the node under `root` (see the module docstring)."""
    pki_dir, secrets_dir = root / "pki", root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    ca = TestCa(pki_dir, "crm-audit test OpenSearch CA")
    foreign = TestCa(root / "foreign-pki", "crm-audit test foreign CA")
    node_pair, node_dn = ca.issue("node", NODE_NAME, server=True)
    writer_pair, _ = ca.issue("writer", WRITER, server=False)
    superuser_pair, superuser_dn = ca.issue("superuser", "crm-audit-test-superuser", server=False)

    users: dict[str, User] = {}
    for name, roles in (
        (WRITER, ()),
        (ADMIN, ()),
        (RETENTION, ()),
        (ANALYST, (ANALYST_BACKEND_ROLE,)),
    ):
        password = secrets.token_urlsafe(18)
        path = secrets_dir / f"{name}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        users[name] = User(name, password, path, tuple(roles))

    defaults = defaults_from_env(os.environ, os.geteuid())
    admin = users[ADMIN]
    node = EmbeddedOpenSearch(
        root / "node",
        free_port(),
        cache_dir=defaults.cache_dir,
        java_home=defaults.java_home,
        run_as=defaults.run_as,
        versions=VERSIONS,
        log=_log,
        plugins=(SECURITY_PLUGIN,),
        settings=_security_settings(node_dn, superuser_dn),
        transport_port=free_port(),
        node_name=NODE_NAME,
        java_opts=TEST_NODE_JAVA_OPTS,
        scheme="https",
        ca_file=ca.cert_path,
        probe_credentials=(admin.name, admin.password),
    )
    installed = node.ensure_installed()
    config = node.config_dir
    for source, target in (
        (ca.cert_path, "ca.crt"),
        (node_pair.cert, "node.crt"),
        (node_pair.key, "node.key"),
    ):
        shutil.copyfile(source, config / target)
    (config / "node.key").chmod(0o600)
    security = config / "opensearch-security"
    # The shipped files, byte for byte: the test proves what operators install.
    for name in ("roles.yml", "roles_mapping.yml", "config.yml"):
        shutil.copyfile(SHIPPED / name, security / name)
    ordered = list(users.values())
    with ThreadPoolExecutor(max_workers=len(ordered)) as pool:  # one JVM each, ~1 s
        hashed = list(
            pool.map(
                lambda u: _hash_password(installed.dist, defaults.java_home, u.password), ordered
            )
        )
    (security / "internal_users.yml").write_text(_internal_users_yml(ordered, hashed))

    started = time.monotonic()
    node.start(timeout=START_TIMEOUT_S)
    return SecuredCluster(
        node=node,
        root=root,
        ca=ca.cert_path,
        foreign_ca=foreign.cert_path,
        users=users,
        writer_cert=writer_pair,
        superuser_cert=superuser_pair,
        start_seconds=time.monotonic() - started,
    )


@pytest.fixture(scope="module")
def secured_cluster() -> Iterator[SecuredCluster]:
    """The secured node of a test module (started once, stopped at module end)."""
    root = traversable_tmpdir("crm-audit-secured-os-")
    cluster: SecuredCluster | None = None
    try:
        try:
            cluster = start_secured_cluster(root)
        except DownloadError as exc:
            pytest.skip(reason=f"OpenSearch {VERSIONS[0]} with {SECURITY_PLUGIN}: {exc}")
        _log(f"node ready at {cluster.url} in {cluster.start_seconds:.1f} s")
        yield cluster
    finally:
        if cluster is not None:
            cluster.node.stop()
        else:
            # a start that failed half-way may have left the node running
            EmbeddedOpenSearch(root / "node", 0, run_as=None).stop()
        shutil.rmtree(root, ignore_errors=True)
