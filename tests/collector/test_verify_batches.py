"""`crm-audit verify`, format 2: event documents without ``integrity.canonical`` get
their bytes from the batch documents of their index (`collector.verify.batches`), and
the walk judges them as inline bytes. Fake hits, no OpenSearch: documents written both
ways, copies in two indices, and batch documents missing, undecodable or altered, which
must leave their events findings, never VALID. (Against a real OpenSearch:
tests/integration/test_verify_batches.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.batchbytes import batch_doc_id, batch_document, batches_index
from collector.documents import parse_iso_nanos
from collector.verify.batches import RECENT_S, SETTLE_S, BatchBytes, with_batch_bytes
from collector.verify.reading import Peekable, SealInfo, StoredEvent, read_event
from collector.verify.report import AgentReport
from collector.verify.signed import StreamWalk
from collector.verify.verdicts import ALTERED, INSERTED, REORDERED, VALID, Range, resolve
from collector.verify.verifier import Verifier
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.v2sender import V2Stream
from tests.integration.v2_store import event_doc

AGENT = "crm-batches"
PREFIX = "p"
INDEX = "p-events-standard-2026.11"  # the month of the events' time
OTHER = "p-events-standard-2026.12"
BATCHES = batches_index(PREFIX, INDEX)


class Made:
    """One sealed batch of `count` events."""

    def __init__(self, count: int = 10) -> None:
        self.stream = V2Stream(AGENT, Ed25519PrivateKey.generate())
        self.batch = self.stream.batch(count)

    def data(self, seq: int) -> bytes:
        return self.stream.sent[seq][0]

    def event_hit(self, seq: int, *, inline: bool = False, index: str = INDEX) -> dict[str, Any]:
        """The event document of `seq`, with its bytes inline or (the new layout) not."""
        data, head = self.stream.sent[seq]
        source = event_doc(AGENT, pb.AuditEvent.FromString(data), data, head, inline=inline)
        doc_id = f"{AGENT}:{self.stream.stream_id}:{seq}"
        return {"_id": doc_id, "_index": index, "_source": source}

    def batch_hit(
        self,
        seqs: Sequence[int],
        datas: Sequence[bytes] | None = None,
        *,
        index: str = INDEX,
        doc: int = 0,
    ) -> dict[str, Any]:
        """The batch document of `seqs` (their own bytes unless `datas`) for `index`."""
        datas = [self.data(s) for s in seqs] if datas is None else datas
        hashes = [integrity.event_hash(d) for d in datas]
        source = batch_document(
            agent_id=AGENT,
            stream_id=self.stream.stream_id,
            sequences=seqs,
            datas=datas,
            timestamp="2026-11-27T12:00:00Z",
        )
        where = batches_index(PREFIX, index)
        return {
            "_id": batch_doc_id(AGENT, self.stream.stream_id, seqs, hashes),
            "_index": where,
            "_source": source,
            "sort": [min(seqs), where, doc],
        }

    def walk(
        self, event_hits: Sequence[Mapping[str, Any]], batch_hits: Sequence[Mapping[str, Any]]
    ) -> AgentReport:
        out = AgentReport(AGENT, stream_id=self.stream.stream_id)
        walker = StreamWalk(verifier(), AGENT, self.stream.stream_id, out)
        events = Peekable(joined(event_hits, batch_hits))
        info = SealInfo(self.batch.seal, (INDEX,), "", "p-seals", signed_ok=True)
        walker.seal(info, events)
        walker.finish(events)
        out.ranges = resolve(out.ranges + walker.breaks)
        return out


def verifier() -> Verifier:
    def unused(*_: Any, **__: Any) -> Any:
        raise AssertionError("no OpenSearch request expected")

    return Verifier(unused, PREFIX, lambda _: {})


def joined(
    event_hits: Sequence[Mapping[str, Any]], batch_hits: Sequence[Mapping[str, Any]]
) -> Iterator[StoredEvent]:
    return with_batch_bytes(
        (read_event(h) for h in event_hits), BatchBytes(PREFIX, iter(batch_hits))
    )


def kinds(out: AgentReport) -> list[tuple[str, int, int]]:
    return [(r.kind, r.first, r.last) for r in out.ranges]


class Counted(Iterator[Mapping[str, Any]]):
    """Batch hits, counting how many were read."""

    def __init__(self, hits: Sequence[Mapping[str, Any]]) -> None:
        self.hits = list(hits)
        self.read = 0

    def __next__(self) -> Mapping[str, Any]:
        if self.read == len(self.hits):
            raise StopIteration
        self.read += 1
        return self.hits[self.read - 1]


def test_bytes_from_a_batch_document_verify_valid() -> None:
    made = Made()
    out = made.walk([made.event_hit(s) for s in range(1, 11)], [made.batch_hit(range(1, 11))])
    assert out.ranges == [Range(VALID, 1, 10)]


def test_inline_and_batch_document_events_side_by_side() -> None:
    """Documents written before batch documents keep their inline bytes (no migration)."""
    made = Made()
    hits = [made.event_hit(s, inline=s <= 5) for s in range(1, 11)]
    out = made.walk(hits, [made.batch_hit([6, 7, 8, 9, 10])])
    assert out.ranges == [Range(VALID, 1, 10)]


def test_inline_bytes_win_and_need_no_batch_document() -> None:
    made = Made()
    wrong = made.batch_hit(range(1, 11), [b"\x00"] * 10)  # would be ALTERED if used
    hits = Counted([wrong])
    events = [read_event(made.event_hit(s, inline=True)) for s in range(1, 11)]  # read as before
    for event in with_batch_bytes(events, BatchBytes(PREFIX, hits)):
        assert event.canonical == made.data(event.position)
    assert hits.read == 0  # never searched


def test_a_missing_batch_document_leaves_its_events_altered() -> None:
    made = Made()
    out = made.walk([made.event_hit(s) for s in range(1, 11)], [made.batch_hit([1, 2, 3, 4, 5])])
    # one range per event: the detail names each document, as for inline bytes
    assert kinds(out) == [(VALID, 1, 5)] + [(ALTERED, s, s) for s in range(6, 11)]
    assert out.ranges[1].detail == (
        f"{AGENT}:{made.stream.stream_id}:6: stored bytes unreadable: "
        f"no batch document in {BATCHES} lists sequence 6"
    )
    assert out.ranges[1].indices == (INDEX,)
    assert not out.valid


def test_an_undecodable_batch_document_is_named() -> None:
    made = Made()
    broken = made.batch_hit(range(1, 11))
    text = broken["_source"]["batch"]["bytes"]
    raw = base64.b64decode(text)
    broken["_source"]["batch"]["bytes"] = base64.b64encode(raw[:-9]).decode()  # truncated
    out = made.walk([made.event_hit(s) for s in range(1, 11)], [broken])
    assert [r.kind for r in out.ranges] == [ALTERED] * 10
    assert f"batch document {broken['_id']} in {BATCHES}: batch bytes" in out.ranges[0].detail


def test_a_batch_document_whose_listing_was_edited_is_named() -> None:
    made = Made()
    for edit in (
        {"count": 9},
        {"sequences": "1-10"},
        {"encoding": "gzip"},
        {"bytes": None},
    ):
        broken = made.batch_hit(range(1, 11))
        broken["_source"]["batch"].update(edit)
        out = made.walk([made.event_hit(s) for s in range(1, 11)], [broken])
        assert [r.kind for r in out.ranges] == [ALTERED] * 10, edit
        assert f"batch document {broken['_id']}" in out.ranges[0].detail, edit


def test_altered_bytes_in_a_batch_document_are_altered() -> None:
    made = Made()
    forged = pb.AuditEvent.FromString(made.data(3))
    forged.user.name = "mallory"
    datas = [integrity.event_bytes_v2(forged) if s == 3 else made.data(s) for s in range(1, 11)]
    out = made.walk(
        [made.event_hit(s) for s in range(1, 11)], [made.batch_hit(range(1, 11), datas)]
    )
    assert kinds(out) == [(VALID, 1, 2), (ALTERED, 3, 3), (VALID, 4, 10)]
    assert out.ranges[1].detail == "stored bytes differ from the signed event hash"


def test_bytes_swapped_between_two_events_are_findings() -> None:
    made = Made()
    order = [1, 2, 4, 3, 5, 6, 7, 8, 9, 10]  # sequence 3 listed with the bytes of 4
    out = made.walk(
        [made.event_hit(s) for s in range(1, 11)],
        [made.batch_hit(range(1, 11), [made.data(s) for s in order])],
    )
    # the signed events 3 and 4 are there, each given to the other's document
    assert kinds(out) == [(VALID, 1, 2), (REORDERED, 3, 4), (VALID, 5, 10)]
    assert not out.valid


def test_a_copy_in_another_index_gets_the_bytes_of_its_own_index() -> None:
    """Sequence 4 stored twice, each copy with its index's batch document: the copy in
    the other month's index is the extra one, as with inline bytes."""
    made = Made()
    hits = [made.event_hit(s) for s in range(1, 11)]
    hits.insert(4, made.event_hit(4, index=OTHER))  # events sort by sequence, index
    batch_hits = [made.batch_hit(range(1, 11)), made.batch_hit([4], index=OTHER)]
    batch_hits.sort(key=lambda h: h["sort"])
    out = made.walk(hits, batch_hits)
    assert kinds(out) == [(VALID, 1, 3), (INSERTED, 4, 4), (VALID, 5, 10)]
    assert f"in {OTHER} (the signed one is" in out.ranges[1].detail
    events = list(joined(hits, batch_hits))
    assert events[4].index == OTHER and events[4].canonical == made.data(4)


def test_a_copy_whose_index_has_no_batch_document_gets_no_bytes() -> None:
    made = Made()
    hits = [made.event_hit(s) for s in range(1, 11)]
    hits.insert(4, made.event_hit(4, index=OTHER))
    events = list(joined(hits, [made.batch_hit(range(1, 11))]))
    copy = events[4]
    assert copy.index == OTHER and copy.canonical is None
    assert copy.bytes_problem == (
        f"no batch document in {batches_index(PREFIX, OTHER)} lists sequence 4"
    )
    out = made.walk(hits, [made.batch_hit(range(1, 11))])
    assert kinds(out) == [(VALID, 1, 3), (INSERTED, 4, 4), (VALID, 5, 10)]


def test_of_two_offers_the_one_hashing_to_the_stored_hint_is_used() -> None:
    """A re-delivered batch cut differently, or a forged document beside the genuine one:
    the document's stored event_hash picks; the seal still judges what was picked."""
    made = Made()
    forged = made.batch_hit([4], [b"forged"], doc=0)
    genuine = made.batch_hit(range(1, 11), doc=1)
    forged["sort"] = genuine["sort"] = [1, BATCHES, 0]
    hits = [made.event_hit(s) for s in range(1, 11)]
    out = made.walk(hits, [forged, genuine])
    assert out.ranges == [Range(VALID, 1, 10)]
    # the hint pointing at the forged bytes: they are used, and are no signed event
    hits[3]["_source"]["integrity"]["event_hash"] = integrity.event_hash(b"forged").hex()
    out = made.walk(hits, [forged, genuine])
    assert (ALTERED, 4, 4) in kinds(out)
    assert not out.valid
    # no hint matches: the first read is used
    hits[3]["_source"]["integrity"]["event_hash"] = "00"
    events = list(joined(hits, [forged, genuine]))
    assert events[3].canonical == b"forged"


def test_batch_documents_are_read_as_events_reach_them_and_dropped_behind() -> None:
    """Memory: only the batch documents overlapping the current sequence are held."""
    made = Made(40)
    batch_hits = Counted([made.batch_hit(range(f, f + 10)) for f in (1, 11, 21, 31)])
    batches = BatchBytes(PREFIX, batch_hits)
    held = []
    read = {}
    for event in with_batch_bytes((read_event(made.event_hit(s)) for s in range(1, 41)), batches):
        assert event.canonical == made.data(event.position)
        held.append(batches.held())
        read[event.position] = batch_hits.read
    assert max(held) == 10
    assert held[:3] == [10, 9, 8]
    # one document ahead (peeked at to compare its first sequence), no more
    assert read[1] == 2 and read[10] == 2 and read[11] == 3 and read[40] == 4


def test_a_batch_document_behind_the_current_sequence_is_not_decoded() -> None:
    """A range of the stream (verify's worker processes) starting inside a batch."""
    made = Made(20)
    behind = made.batch_hit(range(1, 11))
    behind["_source"]["batch"]["bytes"] = "not base64!"  # would be named if decoded
    batch_hits = [behind, made.batch_hit(range(11, 21))]
    events = list(joined([made.event_hit(s) for s in range(11, 21)], batch_hits))
    assert [e.canonical for e in events] == [made.data(s) for s in range(11, 21)]
    assert all(not e.bytes_problem for e in events)


class Clock:
    """Monotonic seconds that only move when slept through."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def late_batch_document_case(
    age_s: float,
) -> tuple[list[StoredEvent], list[int], Clock, Made]:
    """Events 1-10 whose batch document of 6-10 was not searchable at the first read
    (it is on the re-read), the walk's events ingested `age_s` before now."""
    made = Made()
    events = [read_event(made.event_hit(s)) for s in range(1, 11)]
    ingested = parse_iso_nanos(events[0].source["event"]["ingested"])
    reopened: list[int] = []

    def reopen(since: int) -> Iterator[Mapping[str, Any]]:
        reopened.append(since)
        return iter([made.batch_hit([6, 7, 8, 9, 10])])

    clock = Clock()
    batches = BatchBytes(
        PREFIX,
        iter([made.batch_hit([1, 2, 3, 4, 5])]),
        reopen=reopen,
        clock=clock,
        wall_ns=lambda: ingested + int(age_s * 1e9),
        sleep=clock.sleep,
    )
    return list(with_batch_bytes(events, batches)), reopened, clock, made


def test_a_batch_document_not_yet_searchable_is_read_again_once() -> None:
    """Written a moment ago: its events were searchable before it. One re-read, a
    refresh interval after the walk began, finds it."""
    events, reopened, clock, made = late_batch_document_case(age_s=2)
    assert reopened == [6]
    assert clock.slept == [SETTLE_S]
    assert [e.canonical for e in events] == [made.data(s) for s in range(1, 11)]


def test_old_events_without_a_batch_document_are_not_waited_for() -> None:
    events, reopened, clock, _made = late_batch_document_case(age_s=RECENT_S + 1)
    assert reopened == [] and clock.slept == []
    assert [e.position for e in events if e.canonical is None] == [6, 7, 8, 9, 10]
    assert events[5].bytes_problem.endswith("lists sequence 6")
