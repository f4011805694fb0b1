"""The real `crm-audit-collector` process under faults, against the real OpenSearch.

- `setup` installs and reports, then reports "unchanged"; retention classes route events
  into their own indices; /healthz and /metrics are scraped from the process.
- A mapping-breaking event goes to the dead-letter index; the batch is acked and the
  rest indexed.
- OpenSearch answering 429/503 for a while (a loopback proxy in front of the real
  cluster): nothing lost, nothing duplicated, once it recovers.
- SIGTERM during load: every acked event is in OpenSearch; what was not acked is resent
  to a restarted collector and every event ends up indexed exactly once.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml

from collector.index import Requester
from proto.v1 import audit_pb2, audit_pb2_grpc
from tests.collector import conftest as collector_fixtures
from tests.collector.conftest import Pki, make_event, refresh, search, write_config
from tests.collector.test_server_grpc import channel
from tests.helpers import free_port

pytestmark = pytest.mark.integration

# The collector tests' fixtures (real OpenSearch, per-test prefix, throw-away PKI).
os_url = collector_fixtures.os_url
os_http = collector_fixtures.os_http
prefix = collector_fixtures.prefix
pki = collector_fixtures.pki

BIN = Path(sys.executable).parent
Ack = audit_pb2.Ack


class Collector:
    """`crm-audit-collector run` as a process, without the OPENSEARCH_URL override."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "crm-audit-collector"), "run", "-c", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.wait_log("collector listening")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in collector log:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    return subprocess.run(
        [str(BIN / "crm-audit-collector"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def config_file(tmp_path: Path, pki: Pki, prefix: str, url: str, **overrides: Any) -> Path:
    port = free_port()
    path = write_config(tmp_path / "cfg", pki, prefix=prefix, url=url, listen=f"127.0.0.1:{port}")
    data = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def port_of(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["listen"].rsplit(":", 1)[1])


def ship(port: int, pki: Pki, agent: str, batches: list[audit_pb2.Batch]) -> list[audit_pb2.Ack]:
    cert, key = pki.layout.agent_cert(agent), pki.layout.agent_key(agent)
    if not cert.exists():
        pki.agent(agent)
    with channel(port, pki.layout.ca_cert, cert, key) as ch:
        stub = audit_pb2_grpc.CollectorStub(ch)
        return list(stub.Ship(iter(batches), timeout=120))


def events_batch(batch_id: int, agent: str, events: list[audit_pb2.AuditEvent]) -> audit_pb2.Batch:
    return audit_pb2.Batch(batch_id=batch_id, agent_id=agent, events=events)


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+]+)"
    match = re.search(rf"^{pattern}$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics:\n{text}"
    return float(match.group(1))


def count(http: Requester, index: str) -> int:
    refresh(http, index)
    response = http("GET", f"/{index}/_count", params={"ignore_unavailable": "true"})
    return int(response.body["count"]) if response.status == 200 else 0


# -- setup, retention classes, health and metrics ----------------------------------


def test_setup_classes_health_and_metrics(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester
) -> None:
    metrics_port = free_port()
    config = config_file(
        tmp_path,
        pki,
        prefix,
        os_url,
        retention={
            "classes": {
                "standard": {"policy": "opensearch/ism-standard.json"},
                "security": {"policy": "opensearch/ism-standard.json"},
            },
            "rules": [
                {"class": "security", "audit_category": ["security"]},
                {"class": "security", "action": ["login*"]},
            ],
        },
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
        # The collector only checks: `setup` (an admin) installs.
        opensearch={"setup_on_start": False},
    )
    dry = cli("setup", "-c", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"template {prefix}-events: would be created" in dry.stdout
    assert os_http("HEAD", f"/{prefix}-seals").status == 404

    first = cli("setup", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert f"template {prefix}-events: created" in first.stdout
    assert f"index {prefix}-holds: created" in first.stdout
    again = cli("setup", "-c", str(config))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and "updated" not in again.stdout
    assert f"template {prefix}-events: unchanged" in again.stdout
    assert "dry run: nothing changed" in cli("setup", "-c", str(config), "--dry-run").stdout

    collector = Collector(config, tmp_path / "collector.log")
    try:
        assert scrape(metrics_port, "/healthz") == (200, "ok\n")
        events = [
            make_event(1, audit_category=audit_pb2.AUDIT_CATEGORY_SECURITY),
            make_event(2, action="login"),
            make_event(3),
            make_event(4, action="record.view"),
        ]
        [ack] = ship(port_of(config), pki, "agent-1", [events_batch(1, "agent-1", events)])
        assert (ack.status, ack.indexed) == (Ack.STATUS_OK, 4)
        hits = search(os_http, f"{prefix}-events-*")
        by_index = {h["_id"]: h["_index"] for h in hits}
        assert by_index == {
            "agent-1:1": f"{prefix}-events-security-2026.11",
            "agent-1:2": f"{prefix}-events-security-2026.11",
            "agent-1:3": f"{prefix}-events-standard-2026.11",
            "agent-1:4": f"{prefix}-events-standard-2026.11",
        }
        # re-delivery: duplicates, same indices
        [again_ack] = ship(port_of(config), pki, "agent-1", [events_batch(2, "agent-1", events)])
        assert (again_ack.indexed, again_ack.duplicates) == (0, 4)

        status, text = scrape(metrics_port, "/metrics")
        assert status == 200
        ns = "crm_audit_collector_"
        assert metric(text, ns + "events_received_total") == 8
        assert metric(text, ns + "events_indexed_total") == 4
        assert metric(text, ns + "events_duplicate_total") == 4
        assert metric(text, ns + "events_dead_lettered_total") == 0
        assert metric(text, ns + "batches_total", 'status="ok"') == 2
        assert metric(text, ns + "bulk_latency_seconds_count") >= 2
        assert metric(text, ns + "ready") == 1
        assert metric(text, ns + "batches_in_flight") == 0
        seen = metric(text, ns + "agent_last_seen_timestamp_seconds", 'agent="agent-1"')
        assert abs(seen - time.time()) < 600
    finally:
        assert collector.stop() == 0
    assert "Traceback" not in collector.log()


def test_health_is_503_until_setup_is_done(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str
) -> None:
    metrics_port = free_port()
    config = config_file(
        tmp_path,
        pki,
        prefix,
        os_url,
        metrics={"listen": f"127.0.0.1:{metrics_port}", "health_check_interval_s": 0.1},
        opensearch={"setup_on_start": False},
    )
    collector = Collector(config, tmp_path / "collector.log")
    try:
        status, body = scrape(metrics_port, "/healthz")
        assert status == 503 and "setup not done" in body
        [ack] = ship(port_of(config), pki, "agent-1", [events_batch(1, "agent-1", [make_event(1)])])
        assert ack.status == Ack.STATUS_RETRY and "crm-audit-collector setup" in ack.detail
        assert cli("setup", "-c", str(config)).returncode == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # Readiness retries at most every 5 s
            [ack] = ship(
                port_of(config), pki, "agent-1", [events_batch(2, "agent-1", [make_event(1)])]
            )
            if ack.status == Ack.STATUS_OK:
                break
            time.sleep(0.5)
        assert ack.status == Ack.STATUS_OK
        assert scrape(metrics_port, "/healthz") == (200, "ok\n")
    finally:
        assert collector.stop() == 0


# -- dead letters --------------------------------------------------------------------


def test_mapping_breaking_event_is_dead_lettered_batch_acked_rest_indexed(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester
) -> None:
    metrics_port = free_port()
    config = config_file(
        tmp_path, pki, prefix, os_url, metrics={"listen": f"127.0.0.1:{metrics_port}"}
    )
    collector = Collector(config, tmp_path / "collector.log")
    try:
        # More nested crm.changes than index.mapping.nested_objects.limit (10000): a
        # well-formed event OpenSearch refuses for good.
        changes = [
            audit_pb2.FieldChange(field=f"f{i}", old_value="a", new_value="b")
            for i in range(10_001)
        ]
        events = [make_event(seq) for seq in range(1, 6)]
        events[1] = make_event(2, changes=changes, original="the raw line of event 2")
        [ack] = ship(port_of(config), pki, "agent-1", [events_batch(1, "agent-1", events)])
        assert ack.status == Ack.STATUS_OK
        assert (ack.indexed, ack.duplicates, ack.detail) == (5, 0, "1 dead-lettered")
        indexed = search(os_http, f"{prefix}-events-*")
        assert sorted(h["_id"] for h in indexed) == [
            "agent-1:1",
            "agent-1:3",
            "agent-1:4",
            "agent-1:5",
        ]
        [letter] = search(os_http, f"{prefix}-deadletter")
        assert letter["_id"] == "agent-1:2"
        assert letter["_source"]["event"]["original"] == "the raw line of event 2"
        assert letter["_source"]["deadletter"]["status"] == 400
        assert len(letter["_source"]["deadletter"]["document"]["crm"]["changes"]) == 10_001
        text = scrape(metrics_port, "/metrics")[1]
        assert metric(text, "crm_audit_collector_events_dead_lettered_total") == 1
        assert metric(text, "crm_audit_collector_events_indexed_total") == 4
    finally:
        assert collector.stop() == 0


# -- OpenSearch answering 429 / 503 for a while --------------------------------------


class FaultyProxy:
    """Loopback HTTP proxy to OpenSearch that answers 429 (_bulk) / 503 while `failing`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 9200)
        self.failing = threading.Event()
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.failing.is_set():
                    proxy.refused += 1
                    bulk = self.path.split("?")[0].endswith("/_bulk")
                    status = 429 if bulk else 503
                    reply = (
                        b'{"error":{"type":"es_rejected_execution_exception",'
                        b'"reason":"rejected (test proxy)"},"status":%d}' % status
                    )
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def proxy(os_url: str) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(os_url)
    yield faulty
    faulty.close()


class Shipper:
    """A minimal agent: batches on one stream, resends every batch not acked OK."""

    def __init__(self, port: int, pki: Pki, agent: str, batches: list[audit_pb2.Batch]) -> None:
        self.port, self.pki, self.agent = port, pki, agent
        self.pending = list(batches)
        self.acked: list[audit_pb2.Batch] = []
        self.retries = 0
        self.stream_errors = 0

    def run(self, deadline_s: float = 180) -> None:
        deadline = time.monotonic() + deadline_s
        cert, key = self.pki.layout.agent_cert(self.agent), self.pki.layout.agent_key(self.agent)
        if not cert.exists():
            self.pki.agent(self.agent)
        while self.pending and time.monotonic() < deadline:
            sent = {b.batch_id: b for b in self.pending}
            try:
                with channel(self.port, self.pki.layout.ca_cert, cert, key) as ch:
                    stub = audit_pb2_grpc.CollectorStub(ch)
                    for ack in stub.Ship(iter(list(sent.values())), timeout=120):
                        batch = sent.get(ack.batch_id)
                        if batch is not None and ack.status == Ack.STATUS_OK:
                            self.acked.append(batch)  # recorded as each Ack arrives
                            del sent[ack.batch_id]
                        else:
                            self.retries += 1
            except grpc.RpcError:
                self.stream_errors += 1
            self.pending = list(sent.values())
            if self.pending:
                time.sleep(0.5)


def test_opensearch_429_and_unavailable_for_a_while_loses_nothing(
    tmp_path: Path, pki: Pki, prefix: str, proxy: FaultyProxy, os_http: Requester
) -> None:
    metrics_port = free_port()
    config = config_file(
        tmp_path,
        pki,
        prefix,
        proxy.url,
        opensearch={"max_retries": 2, "retry_backoff_s": 0.2, "retry_max_backoff_s": 0.5},
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
    )
    collector = Collector(config, tmp_path / "collector.log")
    batches = [
        events_batch(i, "agent-1", [make_event(i * 50 + j) for j in range(50)]) for i in range(40)
    ]
    shipper = Shipper(port_of(config), pki, "agent-1", batches)
    try:
        proxy.failing.set()
        worker = threading.Thread(target=shipper.run)
        worker.start()
        time.sleep(8)  # OpenSearch "overloaded / away" for 8 s
        refused_during_outage = proxy.refused
        proxy.failing.clear()
        worker.join(timeout=240)
        assert not worker.is_alive()
        text = scrape(metrics_port, "/metrics")[1]
    finally:
        assert collector.stop() == 0
    assert refused_during_outage > 0
    assert shipper.pending == [] and len(shipper.acked) == 40
    assert shipper.retries > 0  # batches were answered STATUS_RETRY and resent
    assert count(os_http, f"{prefix}-events-*") == 2000
    ids = {h["_id"] for h in search(os_http, f"{prefix}-events-*", None)}
    assert len(ids) == 1000  # search() returns at most 1000 hits; _count above is exact
    assert metric(text, "crm_audit_collector_bulk_retried_documents_total") > 0
    assert metric(text, "crm_audit_collector_bulk_requests_total", 'status="429"') > 0
    assert metric(text, "crm_audit_collector_batches_total", 'status="retry"') > 0


# -- SIGTERM during load -------------------------------------------------------------


def test_sigterm_during_load_loses_nothing(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester
) -> None:
    config = config_file(tmp_path, pki, prefix, os_url)
    agents = ["agent-a", "agent-b"]
    batches = {
        agent: [
            events_batch(i, agent, [make_event(i * 100 + j, agent) for j in range(100)])
            for i in range(60)
        ]
        for agent in agents
    }
    collector = Collector(config, tmp_path / "collector-1.log")
    shippers = [Shipper(port_of(config), pki, a, batches[a]) for a in agents]
    workers = [threading.Thread(target=s.run, kwargs={"deadline_s": 20}) for s in shippers]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while sum(len(s.acked) for s in shippers) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        collector.proc.send_signal(signal.SIGTERM)
        assert collector.proc.wait(timeout=60) == 0
    finally:
        collector.stop()
    for worker in workers:
        worker.join(timeout=60)
    log = collector.log()
    assert "received SIGTERM" in log and "collector stopped" in log
    # Every acked event is in OpenSearch.
    acked_ids = {f"{s.agent}:{e.sequence}" for s in shippers for b in s.acked for e in b.events}
    assert 0 < len(acked_ids) < 12_000
    refresh(os_http, f"{prefix}-events-*")
    found = os_http(
        "POST",
        f"/{prefix}-events-*/_search",
        body={"size": 0, "query": {"ids": {"values": sorted(acked_ids)}}, "track_total_hits": True},
    )
    assert found.body["hits"]["total"]["value"] == len(acked_ids)
    # The rest is resent to a restarted collector: every event exactly once.
    restarted = Collector(config, tmp_path / "collector-2.log")
    try:
        for shipper in shippers:
            shipper.run(deadline_s=120)
            assert shipper.pending == []
    finally:
        assert restarted.stop() == 0
    assert count(os_http, f"{prefix}-events-*") == 12_000
