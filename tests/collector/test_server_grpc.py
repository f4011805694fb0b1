"""The real collector: gRPC over mTLS with certificates from our PKI, into OpenSearch."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from collector.admin.pki import init_ca
from collector.config import load_config
from collector.errors import ConfigError
from collector.index import Requester
from collector.server import CollectorServer
from proto import limits
from proto.v1 import audit_pb2, audit_pb2_grpc
from tests.collector.conftest import Pki, make_event, search, write_config

pytestmark = pytest.mark.integration

Ack = audit_pb2.Ack


@pytest.fixture
def server(tmp_path: Path, pki: Pki, prefix: str, os_url: str) -> Iterator[CollectorServer]:
    config = load_config(write_config(tmp_path / "cfg", pki, prefix=prefix, url=os_url))
    collector = CollectorServer(config)
    collector.start()
    yield collector
    collector.stop(grace_s=5)


def channel(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def ship(
    server: CollectorServer, pki: Pki, name: str, batches: list[audit_pb2.Batch]
) -> list[audit_pb2.Ack]:
    cert, key = pki.layout.agent_cert(name), pki.layout.agent_key(name)
    if not cert.exists():
        pki.agent(name)
    with channel(server.port, pki.layout.ca_cert, cert, key) as ch:
        stub = audit_pb2_grpc.CollectorStub(ch)
        return list(stub.Ship(iter(batches), timeout=60))


def batch(batch_id: int, agent_id: str, sequences: range, observer: str = "") -> audit_pb2.Batch:
    events = [make_event(seq, observer or agent_id) for seq in sequences]
    return audit_pb2.Batch(batch_id=batch_id, agent_id=agent_id, events=events)


def test_batch_is_indexed_and_acked_ok(
    server: CollectorServer, pki: Pki, os_http: Requester, prefix: str
) -> None:
    [ack] = ship(server, pki, "agent-1", [batch(1, "agent-1", range(10))])
    assert (ack.batch_id, ack.status, ack.indexed, ack.duplicates) == (1, Ack.STATUS_OK, 10, 0)
    hits = search(os_http, f"{prefix}-events-*")
    assert sorted(h["_id"] for h in hits) == sorted(f"agent-1:{i}" for i in range(10))
    assert {h["_index"] for h in hits} == {f"{prefix}-events-standard-2026.11"}
    assert {h["_source"]["agent"]["id"] for h in hits} == {"agent-1"}


def test_redelivery_yields_duplicates_and_no_new_docs(
    server: CollectorServer, pki: Pki, os_http: Requester, prefix: str
) -> None:
    acks = ship(
        server,
        pki,
        "agent-1",
        [
            batch(1, "agent-1", range(5)),
            batch(2, "agent-1", range(5)),
            batch(3, "agent-1", range(3, 8)),
        ],
    )
    assert [(a.batch_id, a.status, a.indexed, a.duplicates) for a in acks] == [
        (1, Ack.STATUS_OK, 5, 0),
        (2, Ack.STATUS_OK, 0, 5),
        (3, Ack.STATUS_OK, 3, 2),
    ]
    assert len(search(os_http, f"{prefix}-events-*")) == 8


def test_identity_mismatch_is_rejected_and_stream_goes_on(
    server: CollectorServer,
    pki: Pki,
    os_http: Requester,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="collector"):
        acks = ship(
            server,
            pki,
            "agent-1",
            [batch(1, "agent-2", range(3)), batch(2, "agent-1", range(3), observer="agent-2")],
        )
    assert [(a.batch_id, a.status) for a in acks] == [(1, Ack.STATUS_REJECTED), (2, Ack.STATUS_OK)]
    assert "'agent-2'" in acks[0].detail and "'agent-1'" in acks[0].detail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'agent-2'" in w and "'agent-1'" in w for w in warnings), warnings
    opened = [r.getMessage() for r in caplog.records if "stream opened" in r.getMessage()]
    assert opened and opened[0].startswith("stream opened: agent agent-1 from ipv4:127.0.0.1:")
    # the payload's observer id is not trusted: documents carry the certificate's
    hits = search(os_http, f"{prefix}-events-*")
    assert {h["_source"]["agent"]["id"] for h in hits} == {"agent-1"}
    assert all("observer_agent_id_mismatch" in h["_source"]["integrity"]["flags"] for h in hits)


def test_empty_batch_is_ok(server: CollectorServer, pki: Pki) -> None:
    [ack] = ship(server, pki, "agent-1", [audit_pb2.Batch(batch_id=4, agent_id="agent-1")])
    assert (ack.batch_id, ack.status) == (4, Ack.STATUS_OK)


def _refused(ch: grpc.Channel) -> grpc.RpcError:
    stub = audit_pb2_grpc.CollectorStub(ch)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Ship(iter([audit_pb2.Batch(batch_id=1, agent_id="x")]), timeout=20))
    return info.value


def test_client_without_certificate_cannot_connect(server: CollectorServer, pki: Pki) -> None:
    with channel(server.port, pki.layout.ca_cert) as ch:
        assert _refused(ch).code() == grpc.StatusCode.UNAVAILABLE


def test_client_with_foreign_ca_certificate_cannot_connect(
    server: CollectorServer, pki: Pki, tmp_path: Path
) -> None:
    foreign = init_ca(tmp_path / "foreign")
    from collector.admin.pki import issue_agent

    issued = issue_agent(foreign.root, "agent-1")
    with channel(server.port, pki.layout.ca_cert, issued.cert, issued.key) as ch:
        assert _refused(ch).code() == grpc.StatusCode.UNAVAILABLE


def test_client_with_expired_certificate_cannot_connect(server: CollectorServer, pki: Pki) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert, key = pki.agent("old-agent", not_before=past, not_after=past + dt.timedelta(days=1))
    with channel(server.port, pki.layout.ca_cert, cert, key) as ch:
        assert _refused(ch).code() == grpc.StatusCode.UNAVAILABLE


def test_opensearch_down_gives_retry_not_ok(tmp_path: Path, pki: Pki, prefix: str) -> None:
    # Nothing listens on port 9 of loopback: templates cannot be installed.
    config = load_config(
        write_config(tmp_path / "cfg", pki, prefix=prefix, url="http://127.0.0.1:9")
    )
    collector = CollectorServer(config)
    collector.start()
    try:
        [ack] = ship(collector, pki, "agent-1", [batch(1, "agent-1", range(2))])
    finally:
        collector.stop(grace_s=5)
    assert ack.status == Ack.STATUS_RETRY
    assert ack.detail.startswith("collector not ready")


def test_stop_lets_in_flight_batch_finish(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester
) -> None:
    import threading

    from collector.index import Response

    entered, release = threading.Event(), threading.Event()

    def slow(method: str, path: str, **kwargs: object) -> Response:
        if path == "/_bulk":
            entered.set()
            assert release.wait(30)
        return os_http(method, path, **kwargs)  # type: ignore[arg-type]

    config = load_config(write_config(tmp_path / "cfg", pki, prefix=prefix, url=os_url))
    collector = CollectorServer(config, request=slow)
    collector.start()
    acks: list[audit_pb2.Ack] = []
    shipper = threading.Thread(
        target=lambda: acks.extend(ship(collector, pki, "agent-1", [batch(1, "agent-1", range(4))]))
    )
    shipper.start()
    assert entered.wait(30)
    stopper = threading.Thread(target=collector.stop, kwargs={"grace_s": 30})
    stopper.start()
    release.set()
    stopper.join(60)
    shipper.join(60)
    assert not stopper.is_alive() and not shipper.is_alive()
    assert [(a.status, a.indexed) for a in acks] == [(Ack.STATUS_OK, 4)]
    assert len(search(os_http, f"{prefix}-events-*")) == 4
    # stopped: new connections are refused
    cert, key = pki.layout.agent_cert("agent-1"), pki.layout.agent_key("agent-1")
    with channel(collector.port, pki.layout.ca_cert, cert, key) as ch:
        assert _refused(ch).code() == grpc.StatusCode.UNAVAILABLE


def test_unsealed_batch_is_indexed_with_an_alert(
    server: CollectorServer, pki: Pki, os_http: Requester, prefix: str
) -> None:
    """Old agents send no seal: nothing is dropped, the collector says so in an alert."""
    [ack] = ship(server, pki, "agent-1", [batch(1, "agent-1", range(1, 4))])
    assert ack.status == Ack.STATUS_OK
    hits = search(os_http, f"{prefix}-events-*")
    assert len(hits) == 3
    assert all(h["_source"]["integrity"]["canonical"] for h in hits)
    alerts = search(os_http, f"{prefix}-alerts")
    assert [
        (a["_source"]["alert"]["kind"], a["_source"]["alert"]["first_sequence"]) for a in alerts
    ] == [("unsealed", 1)]


def test_a_batch_over_max_events_is_refused_and_ends_the_stream(
    server: CollectorServer,
    pki: Pki,
    os_http: Requester,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert server.config.server.max_events_per_batch == limits.MAX_BATCH_EVENTS
    huge = audit_pb2.Batch(
        batch_id=1,
        agent_id="agent-1",
        events=[audit_pb2.AuditEvent(sequence=n) for n in range(1, 100_001)],
    )
    with caplog.at_level(logging.WARNING, logger="collector"):
        acks = ship(server, pki, "agent-1", [huge, batch(2, "agent-1", range(3))])
    # The batch behind the refused one is not processed: the stream ended.
    assert [(a.batch_id, a.status) for a in acks] == [(1, Ack.STATUS_REJECTED)]
    assert acks[0].detail.startswith(limits.BATCH_TOO_LARGE)
    assert "100000 events" in acks[0].detail and "10000" in acks[0].detail
    assert any("agent-1" in r.getMessage() and "100000" in r.getMessage() for r in caplog.records)
    assert search(os_http, f"{prefix}-events-*") == []


def test_a_message_that_is_not_a_batch_is_logged_with_the_agent(
    server: CollectorServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    pki.agent("agent-7")
    cert, key = pki.layout.agent_cert("agent-7"), pki.layout.agent_key("agent-7")
    with (
        caplog.at_level(logging.WARNING, logger="collector"),
        channel(server.port, pki.layout.ca_cert, cert, key) as ch,
    ):
        raw = ch.stream_stream(
            "/crm_audit.v1.Collector/Ship",
            request_serializer=lambda data: data,
            response_deserializer=audit_pb2.Ack.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(raw(iter([b"\xff\xff\xff garbage"]), timeout=20))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in caplog.records]
    assert any("agent agent-7" in m and "not a Batch" in m for m in messages), messages


def test_max_message_bytes_below_the_wire_limit_is_refused(tmp_path: Path, pki: Pki) -> None:
    path = write_config(
        tmp_path / "small",
        pki,
        server={"max_concurrent_streams": 8, "max_message_bytes": 4 * 1024 * 1024},
    )
    with pytest.raises(ConfigError, match=r"server\.max_message_bytes: .*16777216"):
        load_config(path)
