"""`crm-audit-agent run` as a real process: ships, then exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent import stream
from agent.checkpoint import CheckpointStore
from agent.sealing import PUBLIC_KEY_FILE
from proto import integrity
from tests.agent.certs import make_pki
from tests.agent.fake_collector import FakeCollector, Server, events

CLI = Path(sys.executable).parent / "crm-audit-agent"


def write_config(tmp_path: Path, port: int, pki_dir: str) -> Path:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:{port}"
  server_name: localhost
  tls: {{ca: {pki_dir}/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}}
  retry: {{initial_s: 0.05, max_s: 0.2}}
batch: {{max_events: 10, max_wait_s: 0.1}}
sources:
  - {{name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"], poll_interval_s: 0.05}}
"""
    )
    return cfg


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


def test_run_ships_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "logs").mkdir()
    lines = [json.dumps({"event": "record.view", "n": i}) for i in range(25)] + ["not json"]
    (tmp_path / "logs" / "app.jsonl").write_text("\n".join(lines) + "\n")
    collector = FakeCollector()
    with Server(collector, pki) as server:
        cfg = write_config(tmp_path, server.port, "pki")
        process = subprocess.Popen(
            [str(CLI), "run", "-c", str(cfg)], stderr=subprocess.PIPE, text=True
        )
        try:
            collector.wait_for(lambda: sum(len(events(b)) for b in collector.received) >= 26)
            store = CheckpointStore(tmp_path / "state")
            deadline = time.monotonic() + 30
            while store.load().next_sequence != 27 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            code, stderr = stop(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert all(" INFO " in line or " WARNING " in line for line in stderr.splitlines()), stderr
    assert store.load().next_sequence == 27
    batches = [b for b in collector.received if events(b)]
    last = events(batches[-1])[-1]
    assert list(last.flags) == ["parse_error"] and last.original == "not json"
    # Every batch is a format 2 batch sealed with the key the agent created, and the
    # head runs on from batch to batch, starting at the genesis of the agent's stream.
    keys = {
        integrity.key_id(k): k
        for k in integrity.load_public_keys((tmp_path / "state" / PUBLIC_KEY_FILE).read_bytes())
    }
    stream_id = stream.read(tmp_path / "state")
    assert stream_id is not None and last.stream_id == stream_id
    head = integrity.genesis_v2("crm-host-1", stream_id)
    for batch in batches:
        assert batch.format_version == 2 and not batch.events
        verdict = integrity.verify_batch(batch, "crm-host-1", keys)
        assert verdict.authentic, verdict.findings
        assert batch.seal.prev_chain_head == head
        head = batch.seal.chain_head
    assert f"public key {tmp_path / 'state' / PUBLIC_KEY_FILE}" in stderr


def test_run_without_collector_logs_reason_and_exits_on_sigterm(tmp_path: Path) -> None:
    make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other")  # the collector's CA is not the one the agent trusts
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.jsonl").write_text('{"event": "login"}\n')
    with Server(FakeCollector(), other) as server:
        cfg = write_config(tmp_path, server.port, "pki")
        process = subprocess.Popen(
            [str(CLI), "run", "-c", str(cfg)], stderr=subprocess.PIPE, text=True
        )
        assert process.stderr is not None
        seen: list[str] = []
        found = threading.Event()

        def collect() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                seen.append(line)
                if "cannot ship to" in line:
                    found.set()

        reader = threading.Thread(target=collect)
        reader.start()
        try:
            found.wait(30)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
            reader.join(30)
            process.stderr.close()
    stderr = "".join(seen)
    assert code == 0, stderr
    reasons = [line for line in stderr.splitlines() if "cannot ship to" in line]
    assert reasons and "CERTIFICATE_VERIFY_FAILED" in reasons[0], stderr
    assert "ssl_transport_security" not in stderr  # grpc's own log lines are silenced
    assert not (tmp_path / "state" / "checkpoint.json").exists()


def test_run_notifies_systemd_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """Type=notify: READY=1 once running, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM."""
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.jsonl").write_text('{"event": "login"}\n')
    sock_path = tmp_path / "notify.sock"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        Server(FakeCollector(), pki) as server,
    ):
        notify.bind(str(sock_path))
        notify.settimeout(30)
        cfg = write_config(tmp_path, server.port, "pki")
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
        process = subprocess.Popen(
            [str(CLI), "run", "-c", str(cfg)], stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            messages = [notify.recv(4096).decode()]
            assert messages[0].startswith("READY=1\n"), messages
            while messages.count("WATCHDOG=1") < 3:
                messages.append(notify.recv(4096).decode())
            process.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages:
                messages.append(notify.recv(4096).decode())
        finally:
            code, stderr = stop(process)
    assert code == 0, stderr
    assert set(messages) <= {messages[0], "WATCHDOG=1", "STOPPING=1"}, messages
