"""`crm-audit verify`, format 2: what an anchor's head decides. A signed checkpoint or
receipt that disagrees with the signed heads makes the sequence ALTERED; the unsigned
chain head record (any OpenSearch writer can edit it) is itself the finding,
CHAIN_HEAD_ALTERED, and the intact event it names stays VALID. Events after the last
seal that chain into a head a signed anchor attests are genuine events whose seal was
deleted: SEAL_MISSING, not INSERTED. (The same attacks through the real pipeline:
tests/integration/test_attacks_v2.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.verify.anchors import CHAIN_HEAD_ALTERED, CHAIN_HEAD_RECORD
from collector.verify.reading import Peekable, SealInfo, read_event
from collector.verify.report import AgentReport
from collector.verify.signed import StreamWalk
from collector.verify.verdicts import ALTERED, INSERTED, SEAL_MISSING, VALID, Range, resolve
from collector.verify.verifier import Verifier
from proto.v1 import audit_pb2 as pb
from tests.collector.v2sender import V2Stream
from tests.integration.v2_store import event_doc

AGENT = "crm-heads"
INDEX = "p-events-standard-2026.11"
HEADS = "p-chainheads"


def verifier() -> Verifier:
    def unused(*_: Any, **__: Any) -> Any:
        raise AssertionError("no OpenSearch request expected")

    return Verifier(unused, "p", lambda _: {})


Anchors = dict[int, list[tuple[bytes, str, str]]]


def walk(anchors: Callable[[V2Stream], Anchors], batches: int = 1, sealed: int = 1) -> AgentReport:
    """`batches` batches of ten events stored untouched, only the first `sealed` seals
    kept, walked with the anchors made for them."""
    stream = V2Stream(AGENT, Ed25519PrivateKey.generate())
    made = [stream.batch(10) for _ in range(batches)]
    attested = anchors(stream)
    docs = []
    for batch in made:
        for data in batch.event_bytes:
            event = pb.AuditEvent.FromString(data)
            head = stream.sent[event.sequence][1]
            doc_id = f"{AGENT}:{stream.stream_id}:{event.sequence}"
            source = event_doc(AGENT, event, data, head)
            docs.append(read_event({"_id": doc_id, "_index": INDEX, "_source": source}))
    out = AgentReport(AGENT, stream_id=stream.stream_id)
    walker = StreamWalk(verifier(), AGENT, stream.stream_id, out, attested)
    events = Peekable(iter(docs))
    for batch in made[:sealed]:
        walker.seal(SealInfo(batch.seal, (INDEX,), "", "p-seals", signed_ok=True), events)
    walker.finish(events)
    out.ranges = resolve(out.ranges + walker.breaks)
    return out


def walk_one_batch(anchors: Callable[[V2Stream], Anchors]) -> AgentReport:
    return walk(anchors)


def kinds(out: AgentReport) -> list[tuple[str, int, int]]:
    return [(r.kind, r.first, r.last) for r in out.ranges]


def test_an_edited_chain_head_record_is_the_finding_not_the_event() -> None:
    forged = bytes(32)
    out = walk_one_batch(lambda _: {10: [(forged, CHAIN_HEAD_RECORD, HEADS)]})
    assert out.ranges == [Range(VALID, 1, 10)]
    ((kind, detail),) = out.stream
    assert kind == CHAIN_HEAD_ALTERED
    assert f"in {HEADS} says head {forged.hex()[:16]} at sequence 10" in detail
    assert not out.valid


def test_a_signed_anchor_that_disagrees_is_altered_there() -> None:
    out = walk_one_batch(lambda _: {5: [(bytes(32), "signed checkpoint of T", "")]})
    assert [(r.kind, r.first, r.last) for r in out.ranges] == [
        (VALID, 1, 4),
        (ALTERED, 5, 5),
        (VALID, 6, 10),
    ]
    assert out.stream == []


def test_agreeing_anchors_are_silent() -> None:
    out = walk_one_batch(
        lambda s: {
            10: [(s.head, CHAIN_HEAD_RECORD, HEADS)],
            5: [(s.sent[5][1], "signed receipt of T", "")],
        }
    )
    assert out.ranges == [Range(VALID, 1, 10)]
    assert out.stream == []


def test_genuine_events_whose_last_seal_was_deleted_are_seal_missing() -> None:
    checkpoint = "signed checkpoint of T"
    out = walk(lambda s: {20: [(s.head, checkpoint, "")]}, batches=2, sealed=1)
    assert kinds(out) == [(VALID, 1, 10), (SEAL_MISSING, 11, 20)]
    assert checkpoint in out.ranges[1].detail
    # a receipt vouches for 11-15 only: the rest is not proven genuine
    out = walk(lambda s: {15: [(s.sent[15][1], "signed receipt", "")]}, batches=2, sealed=1)
    assert kinds(out) == [(VALID, 1, 10), (SEAL_MISSING, 11, 15), (INSERTED, 16, 20)]


def test_the_chain_head_record_vouches_for_no_unsealed_event() -> None:
    out = walk(lambda s: {20: [(s.head, CHAIN_HEAD_RECORD, HEADS)]}, batches=2, sealed=1)
    assert kinds(out) == [(VALID, 1, 10), (INSERTED, 11, 20)]
    # nor does a signed head the unsealed events do not chain into
    out = walk(lambda s: {20: [(bytes(32), "signed checkpoint of T", "")]}, batches=2, sealed=1)
    assert kinds(out) == [(VALID, 1, 10), (INSERTED, 11, 20)]
