"""Stream format 2 on the collector, against an in-memory OpenSearch stand-in: documents,
seals and chain heads per the storage contract, effective time, nothing dropped."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.documents import iso_nanos, to_document
from collector.gate import FORK, RESTARTED, UNKNOWN_START, IntegrityGate
from collector.index import BulkIndexer, Response
from collector.keys import KeyRing
from collector.lifecycle import LifecycleReport
from collector.server import BatchProcessor, CollectorService, Readiness
from collector.verify.checks import field_differences
from collector.verify.reading import StoredEvent
from proto import integrity
from proto.continuation import STREAM_CONTINUED
from proto.v1 import audit_pb2 as pb
from tests.collector.conftest import NOV_27_2026, make_event
from tests.collector.v2sender import V2Stream, register
from tests.helpers import batch_bytes, stored_bytes

AGENT = "agent-1"
NOW = NOV_27_2026 + 3_600_000_000_000


class MiniOpenSearch:
    """Documents by (index, _id): create-only bulk (409 when present), GET/PUT with
    seq_no, and a term search on agent.id sorted by @timestamp (enough for the gate)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.seq_no: dict[tuple[str, str], int] = {}

    def __call__(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Response:
        params = params or {}
        if path == "/_bulk":
            return self._bulk(body.decode() if isinstance(body, bytes) else body)
        if path == "/_mget":
            return self._mget(body)
        parts = path.strip("/").split("/")
        if parts[-1] == "_refresh":
            return Response(200, {})
        if parts[-1] == "_search":
            return self._search(parts[0], body)
        if len(parts) == 3 and parts[1] == "_doc":
            key = (parts[0], parts[2])
            if method == "GET":
                if key not in self.docs:
                    return Response(404, {"found": False})
                return Response(
                    200,
                    {"_source": self.docs[key], "_seq_no": self.seq_no[key], "_primary_term": 1},
                )
            if method == "PUT":
                if params.get("op_type") == "create" and key in self.docs:
                    return Response(409, {})
                if "if_seq_no" in params and int(params["if_seq_no"]) != self.seq_no.get(key):
                    return Response(409, {})
                self._store(key, body)
                return Response(201, {"_seq_no": self.seq_no[key], "_primary_term": 1})
        raise AssertionError(f"unexpected request {method} {path}")

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> None:
        self.docs[key] = body
        self.seq_no[key] = self.seq_no.get(key, -1) + 1

    def _bulk(self, text: str) -> Response:
        lines = text.splitlines()
        items = []
        for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
            action = json.loads(action_line)["create"]
            key = (action["_index"], action["_id"])
            if key in self.docs:
                items.append({"create": {"status": 409}})
            else:
                self._store(key, json.loads(source_line))
                items.append({"create": {"status": 201}})
        return Response(200, {"errors": False, "items": items})

    def _mget(self, body: dict[str, Any]) -> Response:
        docs = []
        for wanted in body["docs"]:
            key = (wanted["_index"], wanted["_id"])
            found = {"_index": key[0], "_id": key[1], "found": key in self.docs}
            if key in self.docs:
                found["_source"] = self.docs[key]
            docs.append(found)
        return Response(200, {"docs": docs})

    def _search(self, index: str, body: dict[str, Any]) -> Response:
        agent = body["query"]["term"]["agent.id"]
        hits = [
            {"_id": key[1], "_source": doc}
            for key, doc in self.docs.items()
            if key[0] == index and doc.get("agent", {}).get("id") == agent
        ]
        hits.sort(key=lambda h: h["_source"]["@timestamp"], reverse=True)
        return Response(200, {"hits": {"hits": hits}})

    def index(self, name: str) -> dict[str, dict[str, Any]]:
        return {doc_id: doc for (index, doc_id), doc in self.docs.items() if index == name}

    def events(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            doc_id: (index, doc)
            for (index, doc_id), doc in self.docs.items()
            if index.startswith("p-events-")
        }

    def batches(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            doc_id: (index, doc)
            for (index, doc_id), doc in self.docs.items()
            if index.startswith("p-batches-")
        }

    def event_bytes(self, doc_id: str) -> bytes:
        """The stored bytes of event document `doc_id`, wherever the collector put them."""
        index, doc = self.events()[doc_id]
        return stored_bytes(index, doc, batch_bytes("p", self.batches().values()))


class _Installed:
    def install(self) -> LifecycleReport:
        return LifecycleReport()


@pytest.fixture
def key(tmp_path: Path) -> Ed25519PrivateKey:
    value = Ed25519PrivateKey.generate()
    register(tmp_path / "keys", AGENT, value)
    return value


def processor(
    store: MiniOpenSearch,
    keys: Path,
    clock: list[int] | None = None,
    receipt_key: Ed25519PrivateKey | None = None,
) -> BatchProcessor:
    indexer = BulkIndexer(store, deadletter_index="p-deadletter", sleep=lambda _: None)
    now = clock or [NOW]
    return BatchProcessor(
        indexer,
        Readiness(_Installed()),
        prefix="p",
        retention_class="standard",
        granularity="monthly",
        clock_ns=lambda: now[0],
        gate=IntegrityGate(store, indexer, KeyRing(keys), prefix="p"),
        receipt_key=receipt_key,
    )


def test_a_v2_batch_is_stored_per_the_storage_contract(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    batches = [stream.batch(4), stream.batch(3)]
    acks = [proc.process(b, identity=AGENT) for b in batches]
    ok = pb.Ack.STATUS_OK
    assert [(a.status, a.indexed, a.duplicates) for a in acks] == [(ok, 4, 0), (ok, 3, 0)]
    events = store.events()
    s = stream.stream_id
    assert sorted(events) == sorted(f"{AGENT}:{s}:{n}" for n in range(1, 8))
    for sequence, (data, head) in stream.sent.items():
        index, doc = events[f"{AGENT}:{s}:{sequence}"]
        assert index == "p-events-standard-2026.11"
        assert doc["agent"]["stream"] == s and doc["event"]["sequence"] == sequence
        # the bytes exactly as received, never re-serialized, stored once per batch
        assert "canonical" not in doc["integrity"]
        assert store.event_bytes(f"{AGENT}:{s}:{sequence}") == data
        assert doc["integrity"]["event_hash"] == integrity.event_hash(data).hex()
        assert doc["integrity"]["chain_hash"] == head.hex()
        event = pb.AuditEvent.FromString(data)
        assert doc["@timestamp"] == iso_nanos(integrity.effective_time(event))

    seals = store.index("p-seals")
    first = batches[0].seal
    seal_id = f"{AGENT}:{s}:1-4:{first.chain_head.hex()[:32]}"
    assert set(seals) == {seal_id, f"{AGENT}:{s}:5-7:{batches[1].seal.chain_head.hex()[:32]}"}
    doc = seals[seal_id]["seal"]
    assert doc["stream"] == s and doc["format_version"] == 2 and doc["verified"] is True
    assert doc["min_event_time"] == iso_nanos(first.min_event_time_unix_nano)
    assert doc["max_event_time"] == iso_nanos(first.max_event_time_unix_nano)
    assert pb.Seal.FromString(base64.b64decode(doc["raw"])) == first

    heads = store.index("p-chainheads")
    assert set(heads) == {f"{AGENT}:{s}"}
    head_doc = heads[f"{AGENT}:{s}"]
    assert head_doc["agent"] == {"id": AGENT, "stream": s}
    assert head_doc["chain"]["sequence"] == 7 and head_doc["chain"]["head"] == stream.head.hex()
    assert "previous_stream" not in head_doc["chain"]  # the agent's only stream
    assert store.index("p-alerts") == {}
    assert proc.gate is not None
    assert proc.gate.verified.snapshot() == {(AGENT, s): (7, stream.head)}
    # One batch document per batch and events index, beside the events' index.
    batch_docs = sorted(store.batches().values(), key=lambda b: b[1]["batch"]["first"])
    assert [(index, doc["batch"]["sequences"]) for index, doc in batch_docs] == [
        ("p-batches-standard-2026.11", [1, 2, 3, 4]),
        ("p-batches-standard-2026.11", [5, 6, 7]),
    ]
    assert all(doc["agent"] == {"id": AGENT, "stream": s} for _index, doc in batch_docs)


def test_redelivery_is_duplicates_and_the_head_stays(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    batch = stream.batch(5)
    assert proc.process(batch, identity=AGENT).indexed == 5
    again = proc.process(batch, identity=AGENT)
    assert (again.status, again.indexed, again.duplicates) == (pb.Ack.STATUS_OK, 0, 5)
    assert store.index("p-chainheads")[f"{AGENT}:{stream.stream_id}"]["chain"]["sequence"] == 5
    assert store.index("p-alerts") == {}


def test_a_heartbeat_of_a_new_stream_creates_its_head_at_genesis(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    assert proc.process(stream.heartbeat(), identity=AGENT).status == pb.Ack.STATUS_OK
    head = store.index("p-chainheads")[f"{AGENT}:{stream.stream_id}"]["chain"]
    assert head["head"] == integrity.genesis_v2(AGENT, stream.stream_id).hex()
    assert "sequence" not in head
    assert proc.process(stream.batch(2), identity=AGENT).indexed == 2
    assert store.index("p-alerts") == {}


def test_an_altered_event_is_indexed_and_alerted_not_dropped(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    batch = stream.batch(3)
    altered = pb.AuditEvent.FromString(batch.event_bytes[1])
    altered.user.name = "mallory"
    batch.event_bytes[1] = integrity.event_bytes_v2(altered)
    ack = proc.process(batch, identity=AGENT)
    assert (ack.status, ack.indexed) == (pb.Ack.STATUS_OK, 3)
    alerts = [a["alert"] for a in store.index("p-alerts").values()]
    assert [(a["kind"], a["first_sequence"]) for a in alerts] == [
        (integrity.EVENT_HASH_MISMATCH, 2)
    ]
    assert store.index("p-chainheads") == {}  # an unverified batch moves no head
    [seal] = store.index("p-seals").values()
    assert seal["seal"]["verified"] is False


def test_event_bytes_that_do_not_parse_go_to_the_dead_letter_index(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    batch = stream.batch(3)
    garbage = b"\xff\xff\xff"
    batch.event_bytes[1] = garbage
    ack = proc.process(batch, identity=AGENT)
    assert (ack.status, ack.indexed) == (pb.Ack.STATUS_OK, 3)
    assert len(store.events()) == 2
    [letter] = store.index("p-deadletter").values()
    kept = letter["deadletter"]["document"]
    assert base64.b64decode(kept["event_bytes"]) == garbage
    assert kept["event_hash"] == integrity.event_hash(garbage).hex()
    kinds = {a["alert"]["kind"] for a in store.index("p-alerts").values()}
    assert kinds == {integrity.MALFORMED_EVENT}


def test_v2_batches_count_against_max_events_per_batch(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    service = CollectorService(
        processor(MiniOpenSearch(), tmp_path / "keys"), max_events_per_batch=3
    )
    stream = V2Stream(AGENT, key)
    refusal = service._too_large(stream.batch(4), AGENT, "peer")
    assert refusal is not None and refusal.status == pb.Ack.STATUS_REJECTED
    assert service._too_large(stream.batch(3), AGENT, "peer") is None


@pytest.mark.parametrize(
    ("time", "observed"),
    [(NOV_27_2026, NOV_27_2026 + 5), (0, NOV_27_2026 + 5), (NOV_27_2026, 0)],
)
def test_timestamp_is_the_effective_time(time: int, observed: int) -> None:
    """The index month and @timestamp follow the time a v2 seal's signed range uses."""
    event = make_event(1, AGENT, time_unix_nano=time, observed_unix_nano=observed)
    doc = to_document(event, agent_id=AGENT, received_unix_nano=NOW, stream_id="0" * 16)
    assert doc.timestamp_unix_nano == integrity.effective_time(event)
    assert doc.doc_id == f"{AGENT}:{'0' * 16}:1"


def restart_alerts(store: MiniOpenSearch) -> dict[str, dict[str, Any]]:
    return {
        doc_id: doc
        for doc_id, doc in store.index("p-alerts").items()
        if doc["alert"]["kind"] == RESTARTED
    }


def test_a_new_stream_of_a_known_agent_is_alerted_once(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    clock = [NOW]
    proc = processor(store, tmp_path / "keys", clock)
    old = V2Stream(AGENT, key)
    for _ in range(2):
        assert proc.process(old.batch(5), identity=AGENT).status == pb.Ack.STATUS_OK
    assert restart_alerts(store) == {}
    clock[0] = NOW + 60_000_000_000
    new = V2Stream(AGENT, key)  # state lost: a new stream from its genesis
    first = new.batch(3)
    assert proc.process(first, identity=AGENT).status == pb.Ack.STATUS_OK
    assert proc.process(first, identity=AGENT).duplicates == 3  # re-delivered
    assert proc.process(new.batch(2), identity=AGENT).indexed == 2
    [(alert_id, alert)] = restart_alerts(store).items()
    assert alert_id == f"{AGENT}:{RESTARTED}:{new.stream_id}"
    assert alert["agent"] == {"id": AGENT, "stream": new.stream_id}
    assert alert["alert"]["reason"] == (
        f"agent {AGENT} restarted without state at {iso_nanos(first.seal.time_unix_nano)}; "
        f"previous stream {old.stream_id} ended at sequence 10"
    )
    chain = store.index("p-chainheads")[f"{AGENT}:{new.stream_id}"]["chain"]
    assert (chain["previous_stream"], chain["previous_sequence"]) == (old.stream_id, 10)
    assert chain["sequence"] == 5  # kept through the later head moves
    old_chain = store.index("p-chainheads")[f"{AGENT}:{old.stream_id}"]["chain"]
    assert old_chain["sequence"] == 10 and "previous_stream" not in old_chain
    # Both streams' heads are what the checkpoints sign.
    assert proc.gate is not None
    assert proc.gate.verified.snapshot() == {
        (AGENT, old.stream_id): (10, old.head),
        (AGENT, new.stream_id): (5, new.head),
    }


def test_a_first_v2_stream_after_format_1_history_is_alerted(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    store._store(
        ("p-chainheads", AGENT),
        {
            "@timestamp": iso_nanos(NOW),
            "agent": {"id": AGENT},
            "chain": {"sequence": 42, "head": "00" * 32},
        },
    )
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    assert proc.process(stream.heartbeat(), identity=AGENT).status == pb.Ack.STATUS_OK
    assert proc.process(stream.batch(2), identity=AGENT).status == pb.Ack.STATUS_OK
    [alert] = restart_alerts(store).values()
    assert alert["alert"]["reason"].endswith("previous stream v1 ended at sequence 42")
    chain = store.index("p-chainheads")[f"{AGENT}:{stream.stream_id}"]["chain"]
    assert (chain["previous_stream"], chain["previous_sequence"]) == ("v1", 42)


def test_a_new_stream_not_at_its_genesis_is_an_unknown_start_not_a_restart(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys")
    proc.process(V2Stream(AGENT, key).batch(2), identity=AGENT)
    later = V2Stream(AGENT, key)
    later.batch(4)  # sequences 1-4 never arrive
    proc.process(later.batch(2), identity=AGENT)
    kinds = sorted(a["alert"]["kind"] for a in store.index("p-alerts").values())
    assert kinds == [UNKNOWN_START]


def test_a_redelivered_event_that_differs_is_kept_in_the_forks_index(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    assert proc.process(stream.batch(5), identity=AGENT).indexed == 5
    # The same sequences again, two of them with other content, signed by the agent.
    events = [pb.AuditEvent.FromString(stream.sent[n][0]) for n in range(1, 6)]
    events[1].user.name = "mallory"
    events[3].action = "record.delete"
    genesis = integrity.genesis_v2(AGENT, stream.stream_id)
    stored = {n: stream.sent[n] for n in range(1, 6)}
    again = stream.sealed(events, prev=genesis)
    for _ in range(2):  # the fork itself re-delivered: still one copy, one alert
        ack = proc.process(again, identity=AGENT)
        assert (ack.status, ack.indexed, ack.duplicates) == (pb.Ack.STATUS_OK, 0, 5)
    s = stream.stream_id
    forks = store.index("p-forks")
    expected = {}
    for n in (2, 4):
        data = integrity.event_bytes_v2(events[n - 1])
        expected[f"{AGENT}:{s}:{n}:{integrity.event_hash(data).hex()[:16]}"] = data
    assert set(forks) == set(expected)
    for doc_id, data in expected.items():
        assert base64.b64decode(forks[doc_id]["integrity"]["canonical"]) == data
    for n, (data, _head) in stored.items():  # the stored ones are untouched
        assert store.event_bytes(f"{AGENT}:{s}:{n}") == data
    alerts = sorted(
        (a["alert"] for a in store.index("p-alerts").values()), key=lambda a: a["first_sequence"]
    )
    # Per event (the 409s compared) and for the chain (the sealed head differs).
    assert [(a["kind"], a["first_sequence"], a["last_sequence"]) for a in alerts] == [
        (FORK, 2, 4),
        (FORK, 5, 5),
    ]
    assert "2 re-delivered events" in alerts[0]["reason"] and "(2, 4)" in alerts[0]["reason"]
    # The stored events stay the stream's: so do its head and what checkpoints sign.
    assert store.index("p-chainheads")[f"{AGENT}:{s}"]["chain"]["head"] == stored[5][1].hex()
    assert proc.gate is not None
    assert proc.gate.verified.snapshot() == {(AGENT, s): (5, stored[5][1])}


def test_an_identical_redelivery_is_no_fork(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    batch = stream.batch(3)
    proc.process(batch, identity=AGENT)
    recut = stream.sealed(
        [pb.AuditEvent.FromString(stream.sent[n][0]) for n in (2, 3)], prev=stream.sent[1][1]
    )
    assert proc.process(recut, identity=AGENT).duplicates == 2
    assert store.index("p-forks") == {} and store.index("p-alerts") == {}


def test_a_stored_hash_that_cannot_be_read_is_a_retry(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    batch = stream.batch(2)
    proc.process(batch, identity=AGENT)

    def failing(method: str, path: str, **kwargs: Any) -> Response:
        if path == "/_mget":
            return Response(503, {"error": "unavailable"})
        return store(method, path, **kwargs)

    proc.forks.request = failing
    assert proc.process(batch, identity=AGENT).status == pb.Ack.STATUS_RETRY


def test_ok_acks_of_sealed_v2_batches_carry_a_signed_receipt(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    collector_key = Ed25519PrivateKey.generate()
    trusted = {integrity.key_id(collector_key.public_key()): collector_key.public_key()}
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys", receipt_key=collector_key)
    stream = V2Stream(AGENT, key)
    batches = [stream.batch(4), stream.batch(2), stream.heartbeat()]
    acks = [proc.process(batch, identity=AGENT) for batch in batches]
    assert all(a.status == pb.Ack.STATUS_OK and a.HasField("receipt") for a in acks)
    receipts = [a.receipt for a in acks]
    assert all(integrity.receipt_valid(r, trusted) for r in receipts)
    assert {(r.agent_id, r.stream_id, r.received_unix_nano) for r in receipts} == {
        (AGENT, stream.stream_id, NOW)
    }
    # The heartbeat restates the head of sequence 6.
    assert [r.last_sequence for r in receipts] == [4, 6, 6]
    assert [r.head for r in receipts] == [stream.sent[n][1] for n in (4, 6, 6)]
    tampered = pb.Receipt()
    tampered.CopyFrom(receipts[0])
    tampered.last_sequence = 5
    assert not integrity.receipt_valid(tampered, trusted)


def test_no_receipt_without_key_for_v1_unverified_or_forked_batches(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    stream = V2Stream(AGENT, key)
    batch = stream.batch(3)
    assert (
        not processor(MiniOpenSearch(), tmp_path / "keys")
        .process(batch, identity=AGENT)
        .HasField("receipt")
    )
    collector_key = Ed25519PrivateKey.generate()
    store = MiniOpenSearch()
    proc = processor(store, tmp_path / "keys", receipt_key=collector_key)
    assert proc.process(batch, identity=AGENT).HasField("receipt")
    v1 = pb.Batch(batch_id=9, agent_id=AGENT, events=[make_event(1, AGENT)])
    assert not proc.process(v1, identity=AGENT).HasField("receipt")
    forged = stream.batch(2)
    forged.seal.signature = bytes(64)
    ack = proc.process(forged, identity=AGENT)
    assert ack.status == pb.Ack.STATUS_OK and not ack.HasField("receipt")
    events = [pb.AuditEvent.FromString(stream.sent[n][0]) for n in (1, 2, 3)]
    events[0].user.name = "mallory"
    fork = stream.sealed(events, prev=integrity.genesis_v2(AGENT, stream.stream_id))
    ack = proc.process(fork, identity=AGENT)
    assert ack.status == pb.Ack.STATUS_OK and not ack.HasField("receipt")


V1_HEAD = bytes(range(32))


def format1_history(store: MiniOpenSearch, ended: int = 42, head: bytes = V1_HEAD) -> None:
    store._store(
        ("p-chainheads", AGENT),
        {
            "@timestamp": iso_nanos(NOW),
            "agent": {"id": AGENT},
            "chain": {"sequence": ended, "head": head.hex()},
        },
    )


def continued(stream: V2Stream, attributes: Mapping[str, str]) -> pb.Batch:
    """The stream's genesis batch: the continuation event, then two lines."""
    first = stream.event(1, action=STREAM_CONTINUED)
    first.attributes.clear()
    first.attributes.update(attributes)
    events = [first, stream.event(2), stream.event(3)]
    stream.next_sequence = 4
    return stream.sealed(events)


def test_an_upgrade_from_format_1_that_continues_its_head_is_not_a_restart(
    tmp_path: Path, key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    store = MiniOpenSearch()
    format1_history(store)
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    claim = {"previous_format": "1", "previous_sequence": "42", "previous_head": V1_HEAD.hex()}
    with caplog.at_level("INFO", logger="collector.gate"):
        assert proc.process(continued(stream, claim), identity=AGENT).indexed == 3
    assert proc.process(stream.batch(2), identity=AGENT).indexed == 2
    assert restart_alerts(store) == {}
    assert store.index("p-alerts") == {}
    assert (
        f"agent {AGENT} moved from stream format 1 (ended at 42) to stream {stream.stream_id}"
        in caplog.messages
    )
    chain = store.index("p-chainheads")[f"{AGENT}:{stream.stream_id}"]["chain"]
    assert (chain["previous_stream"], chain["previous_sequence"], chain["sequence"]) == (
        "v1",
        42,
        5,
    )


def test_an_upgrade_claim_without_head_is_checked_on_the_sequence(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = MiniOpenSearch()
    format1_history(store)
    proc = processor(store, tmp_path / "keys")
    claim = {"previous_format": "1", "previous_sequence": "42"}
    assert proc.process(continued(V2Stream(AGENT, key), claim), identity=AGENT).indexed == 3
    assert restart_alerts(store) == {}


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        (
            {"previous_format": "1", "previous_sequence": "41"},
            "the continuation claim did not match: its first event claims the format 1 "
            "history ended at sequence 41, it ends at 42",
        ),
        (
            {"previous_format": "1", "previous_sequence": "42", "previous_head": "ab" * 32},
            f"the continuation claim did not match: its first event claims the format 1 head "
            f"{'ab' * 8} at sequence 42, the head there is {V1_HEAD.hex()[:16]}",
        ),
        (
            {"previous_format": "1", "previous_sequence": "forty-two"},
            "its first event claims to continue format 1 history, but previous_format must "
            "be 1 and previous_sequence a number",
        ),
    ],
)
def test_an_upgrade_claim_that_does_not_match_is_alerted_as_a_restart(
    tmp_path: Path, key: Ed25519PrivateKey, claim: dict[str, str], why: str
) -> None:
    store = MiniOpenSearch()
    format1_history(store)
    proc = processor(store, tmp_path / "keys")
    stream = V2Stream(AGENT, key)
    first = continued(stream, claim)
    assert proc.process(first, identity=AGENT).indexed == 3  # nothing dropped
    [(alert_id, alert)] = restart_alerts(store).items()
    assert alert_id == f"{AGENT}:{RESTARTED}:{stream.stream_id}"
    assert alert["alert"]["reason"] == (
        f"agent {AGENT} restarted without state at {iso_nanos(first.seal.time_unix_nano)}; "
        f"previous stream v1 ended at sequence 42; {why}"
    )


def test_an_upgrade_claim_after_another_format_2_stream_is_alerted(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The format 1 history did not end where this stream starts: a v2 stream came after."""
    store = MiniOpenSearch()
    format1_history(store)
    clock = [NOW + 1]
    proc = processor(store, tmp_path / "keys", clock)
    claim = {"previous_format": "1", "previous_sequence": "42", "previous_head": V1_HEAD.hex()}
    upgraded = V2Stream(AGENT, key)
    assert proc.process(continued(upgraded, claim), identity=AGENT).indexed == 3
    assert restart_alerts(store) == {}
    clock[0] = NOW + 60_000_000_000
    replayed = V2Stream(AGENT, key)  # an old format 1 state restored and taken over again
    assert proc.process(continued(replayed, claim), identity=AGENT).indexed == 3
    [alert] = restart_alerts(store).values()
    assert alert["alert"]["reason"].endswith(
        f"previous stream {upgraded.stream_id} ended at sequence 3; its first event claims to "
        f"continue the format 1 history ended at 42 (head {V1_HEAD.hex()[:16]}), but stream "
        f"{upgraded.stream_id} came after that history"
    )


def test_a_v2_document_carries_its_raw_line_once(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """The line is in the stored event bytes; ``event.original`` repeats it only on a
    record with a problem, and `verify` re-derives exactly what was stored."""
    store = MiniOpenSearch()
    stream = V2Stream(AGENT, key)
    proc = processor(store, tmp_path / "keys")
    clean = stream.event(1, original='{"raw": "line 1"}')
    broken = stream.event(2, original="not json at all", parse_error="line is not JSON")
    flagged = stream.event(3, original='{"raw": "line 3"}', flags=["line_truncated"])
    ack = proc.process(stream.sealed([clean, broken, flagged]), identity=AGENT)
    assert ack.status == pb.Ack.STATUS_OK and ack.indexed == 3
    events = store.events()
    s = stream.stream_id
    docs = {n: events[f"{AGENT}:{s}:{n}"][1] for n in (1, 2, 3)}
    assert "original" not in docs[1]["event"]
    canonical = store.event_bytes(f"{AGENT}:{s}:1")
    assert pb.AuditEvent.FromString(canonical).original == '{"raw": "line 1"}'
    assert docs[2]["event"]["original"] == "not json at all"
    assert docs[3]["event"]["original"] == '{"raw": "line 3"}'
    for n, doc in docs.items():
        data = store.event_bytes(f"{AGENT}:{s}:{n}")
        stored = StoredEvent(
            n, f"{AGENT}:{s}:{n}", "i", doc, data, pb.AuditEvent.FromString(data), None
        )
        assert field_differences(stored, AGENT) == []
        altered = json.loads(json.dumps(doc))
        altered["event"]["action"] = "something.else"
        moved = StoredEvent(n, stored.doc_id, "i", altered, data, stored.decoded, None)
        assert field_differences(moved, AGENT) == ["event.action"]
    # A format 1 document keeps its line as before.
    assert (
        "original"
        in to_document(make_event(1), agent_id=AGENT, received_unix_nano=NOW).source["event"]
    )
