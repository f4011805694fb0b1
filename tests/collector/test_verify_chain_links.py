"""`crm-audit verify`: consecutive seals must link (CHAIN_BREAK), heartbeats included.

The trail is built as the collector stores it — events linked by `agent.sealing.Chainer`
and sealed by `agent.sealing.seal`, checked by `proto.integrity.verify_batch`, mapped by
`collector.documents.to_document` with the collector's integrity fields, seals stored by
`collector.gate.seal_document` — and served to the real `Verifier` by an in-memory
OpenSearch fake (point in time, sort, term/range filters). The same check against the
real OpenSearch and collector process is in `tests/integration/test_verify_chain_break.py`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.sealing import AgentKey, Chainer, heartbeat, seal
from collector.documents import index_name, to_document
from collector.gate import event_integrity_fields, seal_document, seal_id, seals_index
from collector.index import Response
from collector.verify import (
    ALTERED,
    CHAIN_BREAK,
    INSERTED,
    PENDING,
    SEAL_INVALID,
    SEAL_MISSING,
    TAIL_TRUNCATED,
    VALID,
    Range,
    Report,
    Verifier,
    resolve,
)
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.conftest import NOV_27_2026, make_event

PREFIX = "vfy"
AGENT = "crm-link-1"


class FakeOpenSearch:
    """Just the requests `collector.verify.Reader` makes, over documents held in memory."""

    def __init__(self) -> None:
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}

    def put(self, index: str, doc_id: str, source: dict[str, Any]) -> None:
        self.indices.setdefault(index, {})[doc_id] = source

    def _matching(self, pattern: str) -> list[str]:
        return sorted(i for i in self.indices if fnmatch.fnmatchcase(i, pattern))

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        parts = path.strip("/").split("/")
        if method == "POST" and parts[1:] == ["_search", "point_in_time"]:
            if not self._matching(parts[0]):
                return Response(404, {"error": {"type": "index_not_found_exception"}})
            return Response(200, {"pit_id": parts[0]})
        if method == "DELETE" and parts == ["_search", "point_in_time"]:
            return Response(200, {})
        if method == "POST" and parts == ["_search"]:
            return Response(200, {"hits": {"hits": self._search(body)}})
        if method == "POST" and len(parts) == 2 and parts[1] == "_search" and "aggs" in body:
            return Response(
                200, {"aggregations": {"s": {"buckets": self._streams(parts[0], body)}}}
            )
        if method == "GET" and len(parts) == 2 and parts[1] == "_settings":
            return Response(200 if parts[0] in self.indices else 404, {})
        if method == "GET" and len(parts) == 3 and parts[1] == "_doc":
            source = self.indices.get(parts[0], {}).get(parts[2])
            if source is None:
                return Response(404, {"found": False})
            return Response(200, {"_source": source, "_seq_no": 0, "_primary_term": 1})
        raise AssertionError(f"unexpected request {method} {path}")

    def _streams(self, pattern: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The composite aggregation (agent, stream) `Reader.streams` asks for (one page)."""
        sources = body["aggs"]["s"]["composite"]["sources"]
        stream_field = sources[1]["stream"]["terms"]["field"]
        wanted = body["query"].get("terms", {}).get("agent.id")
        keys = set()
        for index in self._matching(pattern):
            for source in self.indices[index].values():
                agent = source.get("agent", {}).get("id")
                if wanted is not None and agent not in wanted:
                    continue
                hit = {"_source": source}
                try:
                    stream = _value(hit, stream_field)
                except KeyError:
                    stream = None
                keys.add((agent, stream))
        return [{"key": {"agent": a, "stream": s}} for a, s in sorted(keys, key=str)]

    def _search(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        assert "search_after" not in body  # every test trail fits in one page
        filters = body["query"]["bool"]["filter"]
        hits: list[dict[str, Any]] = []
        for index in self._matching(body["pit"]["id"]):
            for position, (doc_id, source) in enumerate(self.indices[index].items()):
                if all(_matches(source, f) for f in filters):
                    hit = {"_index": index, "_id": doc_id, "_doc": position, "_source": source}
                    hit["sort"] = [_value(hit, next(iter(key))) for key in body["sort"]]
                    hits.append(hit)
        hits.sort(key=lambda h: h["sort"])
        return hits


def _value(hit: Mapping[str, Any], dotted: str) -> Any:
    if dotted.startswith("_"):
        return hit[dotted]
    value: Any = hit["_source"]
    for part in dotted.split("."):
        value = value[part]
    return value


def _matches(source: Mapping[str, Any], clause: Mapping[str, Any]) -> bool:
    hit = {"_source": source}
    if "bool" in clause:  # must_not exists: the only bool clause `collector.verify` sends
        for inner in clause["bool"]["must_not"]:
            try:
                _value(hit, inner["exists"]["field"])
            except KeyError:
                continue
            return False
        return True
    if "term" in clause:
        ((name, wanted),) = clause["term"].items()
        return bool(_value(hit, name) == wanted)
    ((name, bounds),) = clause["range"].items()
    value = _value(hit, name)
    return bool(bounds.get("gte", value) <= value <= bounds.get("lte", value))


class Trail:
    """One agent's events and seals as the collector stores them."""

    def __init__(self, store: FakeOpenSearch, state: Path) -> None:
        self.store = store
        self.key = AgentKey.load_or_create(state)
        self.chainer = Chainer(AGENT, None, integrity.genesis(AGENT))
        self.next_sequence = 1
        self.clock = NOV_27_2026
        self.sent: list[pb.AuditEvent] = []

    def keys(self, agent: str) -> dict[str, Any]:
        return {self.key.key_id: self.key.private.public_key()} if agent == AGENT else {}

    def ship(self, *sizes: int) -> None:
        """Link, seal and store one batch per size."""
        for size in sizes:
            events = []
            for _ in range(size):
                event = make_event(self.next_sequence, AGENT)
                self.next_sequence += 1
                self.chainer.link(event)
                events.append(event)
            self.sent.extend(events)
            self.store_batch(events)

    def store_batch(self, events: list[pb.AuditEvent], *, doc_suffix: str = "") -> None:
        """Seal `events` (already linked) and store them with their seal, as the collector."""
        self.clock += 1_000_000_000
        batch = pb.Batch(agent_id=AGENT, events=events)
        seal(batch, self.key, now_unix_nano=self.clock)
        verdict = integrity.verify_batch(batch, AGENT, self.keys(AGENT))
        assert verdict.signature_ok and verdict.hashes
        indices = []
        for position, event in enumerate(batch.events):
            doc = to_document(event, agent_id=AGENT, received_unix_nano=self.clock)
            doc.source.setdefault("integrity", {}).update(
                event_integrity_fields(verdict.canonical[position], verdict.hashes[position])
            )
            index = index_name(PREFIX, "standard", "monthly", doc.timestamp_unix_nano)
            self.store.put(index, doc.doc_id, doc.source)
            indices.append(index)
        self._store_seal(batch.seal, indices, doc_suffix)

    def heartbeat(self, sequence: int | None = None, head: bytes | None = None) -> None:
        """A heartbeat restating the chain head (or the one given)."""
        self.clock += 1_000_000_000
        batch = heartbeat(
            self.key,
            AGENT,
            self.chainer.head_sequence if sequence is None else sequence,
            self.chainer.head if head is None else head,
            now_unix_nano=self.clock,
        )
        self._store_seal(batch.seal, [], "")

    def _store_seal(self, signed: pb.Seal, indices: list[str], suffix: str) -> None:
        doc = seal_document(
            AGENT, signed, received_unix_nano=self.clock, indices=indices, verified=True
        )
        self.store.put(seals_index(PREFIX), seal_id(AGENT, signed) + suffix, doc)

    def restart_chain(self, head: bytes | None = None) -> None:
        """What an agent does that lost chain.json and did not recover it from the spool."""
        self.chainer = Chainer(AGENT, None, head or integrity.genesis(AGENT))

    def verify(self) -> Report:
        return Verifier(self.store, PREFIX, self.keys).run([AGENT])


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    return Trail(FakeOpenSearch(), tmp_path / "state")


def ranges(report: Report) -> list[tuple[str, int, int]]:
    return [(r.kind, r.first, r.last) for r in report.agents[AGENT].ranges]


def test_untouched_trail_is_valid(trail: Trail) -> None:
    trail.ship(10, 10, 10)
    trail.heartbeat()
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 30)]
    assert report.valid


def test_chain_restarted_from_genesis_mid_stream(trail: Trail) -> None:
    trail.ship(10, 10)
    trail.restart_chain()
    trail.ship(10, 10)
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 20), (CHAIN_BREAK, 21, 30), ("VALID", 31, 40)]
    assert not report.valid  # exit code 1
    detail = report.agents[AGENT].ranges[1].detail
    assert "seal 21-30" in detail and "genesis" in detail and "at sequence 20" in detail
    assert "CHAIN_BREAK    21-30" in report.to_text()


def test_chain_restarted_from_another_head(trail: Trail) -> None:
    trail.ship(10, 5)
    trail.restart_chain(os.urandom(32))
    trail.ship(1, 10)
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 15), (CHAIN_BREAK, 16, 16), ("VALID", 17, 26)]
    assert "genesis" not in report.agents[AGENT].ranges[1].detail


def test_more_serious_finding_inside_the_broken_seal_still_shows(trail: Trail) -> None:
    trail.ship(10)
    trail.restart_chain()
    trail.ship(10)
    index = index_name(PREFIX, "standard", "monthly", NOV_27_2026 + 14)
    trail.store.indices[index][f"{AGENT}:14"]["user"]["name"] = "mallory"
    report = trail.verify()
    assert ranges(report) == [
        ("VALID", 1, 10),
        (CHAIN_BREAK, 11, 13),
        (ALTERED, 14, 14),
        (CHAIN_BREAK, 15, 20),
    ]


def test_heartbeats_must_link(trail: Trail) -> None:
    trail.ship(10, 10)
    real_head = trail.chainer.head
    trail.heartbeat()  # restates the head at 20: links
    trail.heartbeat(20, os.urandom(32))  # a head at 20 the chain never had
    trail.ship(10)
    trail.heartbeat()  # the newest heartbeat links again
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 19), (CHAIN_BREAK, 20, 20), ("VALID", 21, 30)]
    detail = report.agents[AGENT].ranges[1].detail
    assert "heartbeat" in detail and real_head.hex()[:16] in detail


def test_heartbeat_ahead_of_its_seal_is_compared_once_covered(trail: Trail) -> None:
    # Seals sort by first sequence: a heartbeat at 20 comes before the seal 20-29.
    trail.ship(10, 9, 10)
    trail.heartbeat(20, integrity.chain_link(os.urandom(32), b"x"))
    trail.heartbeat(20, trail.sent[19].chain_hash)  # the real head at 20: links
    trail.heartbeat()
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 19), (CHAIN_BREAK, 20, 20), ("VALID", 21, 29)]


def test_resent_and_recut_seals_are_not_breaks(trail: Trail) -> None:
    trail.ship(10, 10, 10)
    # A batch re-sealed on resend (same range and heads, a later time), stored twice,
    # and a re-cut batch overlapping two earlier ones: all agree with the chain.
    trail.store_batch(trail.sent[10:20], doc_suffix=":again")
    trail.store_batch(trail.sent[4:14])
    trail.store_batch(trail.sent[25:30])
    trail.heartbeat()
    trail.heartbeat()
    # ... while a real restart later in the same trail is found.
    trail.restart_chain()
    trail.ship(10)
    report = trail.verify()
    assert ranges(report) == [("VALID", 1, 30), (CHAIN_BREAK, 31, 40)]
    assert report.agents[AGENT].seals == 9


def test_overlapping_verdicts_resolve_to_one_per_sequence() -> None:
    resolved = resolve(
        [
            Range(VALID, 1, 10),
            Range(SEAL_MISSING, 11, 20, "chain", ("ix-a",)),
            Range(SEAL_INVALID, 11, 20, "bad", ("seals",)),
            Range(PENDING, 21, 25, "", ("ix-a",)),
            Range(INSERTED, 24, 24, "extra", ("ix-b",)),
            Range(TAIL_TRUNCATED, 21, 30, "checkpoint"),
            Range(VALID, 3, 3),  # a duplicate reading of a VALID sequence merges
        ]
    )
    assert [(r.kind, r.first, r.last, r.indices) for r in resolved] == [
        (VALID, 1, 10, ()),
        (SEAL_INVALID, 11, 20, ("seals",)),
        (TAIL_TRUNCATED, 21, 23, ()),
        (INSERTED, 24, 24, ("ix-b",)),
        (TAIL_TRUNCATED, 25, 30, ()),
    ]
