"""`crm-audit-collector run` as a real process: serves, then exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from proto.v1 import audit_pb2, audit_pb2_grpc
from tests.collector.conftest import Pki, write_config
from tests.collector.test_server_grpc import batch, channel

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "crm-audit-collector"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    for _ in range(300):
        content = path.read_text()
        if text in content:
            return content
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in log:\n{path.read_text()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_and_stops_cleanly_on_signal(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, sig: signal.Signals
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "cfg", pki, prefix=prefix, url="http://127.0.0.1:9", listen=f"127.0.0.1:{port}"
    )
    log = tmp_path / "collector.log"
    with log.open("wb") as err:
        # OPENSEARCH_URL overrides the (unreachable) url in the file
        proc = subprocess.Popen(
            [str(CLI), "run", "-c", str(config)],
            stderr=err,
            env={**os.environ, "OPENSEARCH_URL": os_url},
        )
    try:
        wait_for(log, "collector listening", proc)
        cert, key = pki.agent("agent-1")
        with channel(port, pki.layout.ca_cert, cert, key) as ch:
            stub = audit_pb2_grpc.CollectorStub(ch)
            [ack] = list(stub.Ship(iter([batch(1, "agent-1", range(3))]), timeout=60))
        assert (ack.status, ack.indexed) == (audit_pb2.Ack.STATUS_OK, 3)
        # A client without a certificate: refused in the TLS handshake by gRPC core,
        # which logs it itself (one line on stderr; Python never sees the connection).
        with channel(port, pki.layout.ca_cert) as ch:
            stub = audit_pb2_grpc.CollectorStub(ch)
            with pytest.raises(grpc.RpcError):
                list(stub.Ship(iter([audit_pb2.Batch()]), timeout=20))
        wait_for(log, "Handshake failed", proc)
        # SIGHUP is not a reload for the collector, and must not kill it either.
        proc.send_signal(signal.SIGHUP)
        wait_for(log, "received SIGHUP", proc)
        assert proc.poll() is None
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"indexing into {os_url}" in text
    assert "stream opened: agent agent-1 from ipv4:127.0.0.1:" in text
    assert "collector stopped" in text
    assert "Traceback" not in text
    assert "PRIVATE KEY" not in text


def test_run_notifies_systemd_ready_watchdog_and_stopping(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str
) -> None:
    """Under a Type=notify unit: READY=1 once serving, WATCHDOG=1 pings, STOPPING=1."""
    port = free_port()
    config = write_config(
        tmp_path / "cfg", pki, prefix=prefix, url=os_url, listen=f"127.0.0.1:{port}"
    )
    notify_path = tmp_path / "notify.sock"
    messages: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
        env.pop("OPENSEARCH_URL", None)
        log = tmp_path / "collector.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([str(CLI), "run", "-c", str(config)], stderr=err, env=env)
        try:
            while not any(m.startswith(b"READY=1") for m in messages):
                messages.append(notify.recv(4096))
            # Readiness means serving: a real agent batch is acked right away.
            cert, key = pki.agent("agent-1")
            with channel(port, pki.layout.ca_cert, cert, key) as ch:
                stub = audit_pb2_grpc.CollectorStub(ch)
                [ack] = list(stub.Ship(iter([batch(1, "agent-1", range(2))]), timeout=60))
            assert ack.status == audit_pb2.Ack.STATUS_OK
            while b"WATCHDOG=1" not in messages:
                messages.append(notify.recv(4096))
            proc.send_signal(signal.SIGTERM)
            while b"STOPPING=1" not in messages:
                messages.append(notify.recv(4096))
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ready = next(m for m in messages if m.startswith(b"READY=1"))
    assert f"STATUS=listening on 127.0.0.1:{port}".encode() in ready
