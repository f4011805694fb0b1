"""Small helpers shared by tests (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from collector import batchbytes
from collector.admin.opensearch_node import JAVA_OPTS, EmbeddedOpenSearch, Log

REPO = Path(__file__).resolve().parents[1]


BytesTable = dict[tuple[str, int], bytes]


def load_script(name: str) -> ModuleType:
    """scripts/`name`.py imported as the module `name` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cargo_installed() -> bool:
    """Whether cargo is here (on PATH, or in ~/.cargo/bin where rustup puts it): then
    `make venv` builds the compiled kernels, and tests expect them."""
    return shutil.which("cargo") is not None or (Path.home() / ".cargo" / "bin" / "cargo").exists()


def require_kernel(usable: bool, description: str, python_path: str) -> None:
    """At a kernel test module's top: fail where cargo is installed (so `make venv` built
    the kernel) but it is not usable, skip where there is none to test (no cargo, or
    CRM_AUDIT_NATIVE=off on purpose: then `python_path`, tested by the rest of the
    suite, does the work)."""
    if usable:
        return
    if cargo_installed() and os.environ.get("CRM_AUDIT_NATIVE", "") != "off":
        pytest.fail(
            f"cargo is installed but the compiled kernel is not usable: {description} "
            "(make venv builds it: scripts/build-native.sh)",
            pytrace=False,
        )
    why = (
        f"the compiled kernel is optional and absent here ({description}); "
        f"{python_path} is tested by the rest of the suite"
    )
    pytest.skip(reason=why, allow_module_level=True)


#: The JVM options of every OpenSearch node the tests start: the default heap, and the
#: JIT's first tier only. A test node lives minutes and spends them on many small
#: index, template and mapping changes rather than on hot loops the second tier would
#: pay back: on four integration test files the node's and the tests' CPU together
#: fell from 192 to 144 s and their wall time from 210 to 188 s. `make demo`, `crm-audit
#: opensearch start` and the benchmarks keep the default JIT.
TEST_NODE_JAVA_OPTS = f"{JAVA_OPTS} -XX:TieredStopAtLevel=1"


def embedded_test_node(home: Path, *, log: Log) -> EmbeddedOpenSearch:
    """A single OpenSearch node in `home` on a free port, as the environment says
    (`defaults_from_env`: cache, Java, the user it runs as), with the tests' JVM options."""
    return EmbeddedOpenSearch.from_env(
        os.environ,
        os.geteuid(),
        home=home,
        port=free_port(),
        log=log,
        java_opts=TEST_NODE_JAVA_OPTS,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def traversable_tmpdir(prefix: str) -> Path:
    """A fresh directory directly under the system temp dir.

    pytest's own tmp dirs live under a 0700 directory of the current user; a process
    that runs as another user (the OpenSearch node runs as `crm-audit-os` when tests
    run as root) cannot reach them. The caller removes the directory.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


def self_signed_ca(
    key: CertificateIssuerPrivateKeyTypes,
    name: x509.Name,
    *,
    not_before: dt.datetime,
    days: int,
) -> x509.Certificate:
    """A test CA certificate for `key`: CA:true, path length 0, cert and CRL signing."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
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
        .sign(key, hashes.SHA256())
    )


class FakeClock:
    """A monotonic clock the test moves by setting `now` (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `mount` (created) with `options` ("size=64k"), lazily
    unmounted afterwards. Skips the test when not root or when mounting fails."""
    if os.geteuid() != 0:
        pytest.skip(reason="mounting a small tmpfs needs root")
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(reason=f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def nest(doc: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`doc` with each value of `fields` put at its dunder path (``user__name`` ->
    doc["user"]["name"]), creating the objects on the way; returns `doc`."""
    for dotted, value in fields.items():
        node = doc
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return doc


def batch_bytes(prefix: str, batch_docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BytesTable:
    """(events index, sequence) -> the event's bytes, from batch documents given as
    (batches index, source) (collector.batchbytes: how the collector stores them)."""
    table: BytesTable = {}
    for index, source in batch_docs:
        batch = source["batch"]
        events_index = batchbytes.events_index_of(prefix, index)
        datas = batchbytes.decode(batch["bytes"], batch["count"])
        for sequence, data in zip(batch["sequences"], datas, strict=True):
            table.setdefault((events_index, int(sequence)), data)
    return table


def stored_bytes(index: str, source: Mapping[str, Any], table: BytesTable) -> bytes:
    """An event document's signed bytes: its own (``integrity.canonical``: format 1,
    forks) or its batch document's (`batch_bytes`)."""
    inline = source.get("integrity", {}).get("canonical")
    if inline is not None:
        return base64.b64decode(inline)
    return table[(index, int(source["event"]["sequence"]))]
