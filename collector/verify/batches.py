"""Format 2 event bytes kept in batch documents (`collector.batchbytes`), given to the
event documents that do not carry them inline.

A stream's events are read in ascending sequence (then index, document); its batch
documents alongside, in ascending ``batch.first``. A batch document is read only when
an event without inline bytes reaches its first sequence, and of what it holds only the
entries at or above the current sequence are kept (the events below it have passed):
memory is the batches overlapping the current sequence, whatever the stream's length.

A batch document becomes searchable at its index's next refresh, its events at theirs
(the same bulk, two indices, refresh timers of 1 s): a walk can meet a just-written
event before its batch document is visible. So an event without bytes, ingested within
`RECENT_S`, makes the batch documents be read again once (from its sequence), at least
`SETTLE_S` after the walk's first event without bytes was read (the events' point in
time was opened before that): every batch document written before then is searchable
by then (an active shard refreshes each second; a search-idle one refreshes when the
point in time is opened). Old data never waits.

Nothing here decides a verdict. An event gets the bytes listed at its sequence in a
batch document of its own index's batches index (`batchbytes.batches_index`), or none
and the reason (`StoredEvent.bytes_problem`); the walk then judges those bytes against
the seal's signed hashes exactly as inline ones (`collector.verify.signed`): bytes that
hash to nothing the seal signed, or none at all, are a finding, never VALID. Documents
with ``integrity.canonical`` (written before batch documents, forks, format 1) keep
their inline bytes, read as before.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from collector.batchbytes import (
    ENCODING,
    BatchBytesError,
    batches_index,
    decode,
    events_index_of,
)
from collector.documents import parse_iso_nanos
from collector.verify.reading import Peekable, StoredEvent
from proto import integrity
from proto.v1 import audit_pb2

BATCH_PAGE = 50
"""Batch documents per search page. One holds a whole batch's events (hundreds, up to
a gRPC message's worth), so a page of verify's events page size (`reading.PAGE`) would
hold far more than the two event pages a stream's walk keeps."""

SETTLE_S = 1.5
"""How long after the walk's first event a re-read waits at least: past one refresh of
the batches index (1 s, the default the template keeps)."""

RECENT_S = 60.0
"""An event ingested this recently, and without bytes, gets one re-read (module doc)."""

BATCH_SORT: list[dict[str, Any]] = [{"batch.first": "asc"}, {"_index": "asc"}, {"_doc": "asc"}]
"""The order `BatchBytes` reads a stream's batch documents in (``batch.first`` first)."""


def batch_query(agent: str, stream: str, first: int | None, last: int | None) -> dict[str, Any]:
    """The batch documents of a stream whose range meets `first`..`last` (either end
    open when None)."""
    filters: list[dict[str, Any]] = [
        {"term": {"agent.id": agent}},
        {"term": {"agent.stream": stream}},
    ]
    if first is not None:
        filters.append({"range": {"batch.last": {"gte": first}}})
    if last is not None:
        filters.append({"range": {"batch.first": {"lte": last}}})
    return {"bool": {"filter": filters}}


def has_inline_bytes(source: Mapping[str, Any]) -> bool:
    """The document carries ``integrity.canonical`` (readable or not): its own bytes
    are the ones judged, never a batch document's."""
    integ = source.get("integrity")
    return isinstance(integ, Mapping) and "canonical" in integ


@dataclass(frozen=True, slots=True)
class _Offer:
    data: bytes
    where: str  # "batch document <_id> in <index>"


@dataclass(frozen=True, slots=True)
class _Broken:
    """A batch document that does not decode, kept to name it for the events it lists."""

    index: str  # the events index whose bytes it holds
    first: int
    last: int
    why: str


Reopen = Callable[[int], Iterator[Mapping[str, Any]]]
"""The stream's batch documents again, from a sequence on (a new point in time)."""


class BatchBytes:
    """One stream's batch documents, read as its events need them (module docstring).

    `reopen`: reads them again from a sequence, for an event written a moment ago whose
    batch document was not searchable yet (None: never). `clock` (monotonic seconds),
    `wall_ns` and `sleep` are the real ones outside tests."""

    def __init__(
        self,
        prefix: str,
        hits: Iterator[Mapping[str, Any]],
        *,
        reopen: Reopen | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.prefix = prefix
        self._source = hits
        self._hits = Peekable(hits)
        self._at: int | None = None  # the sequence of the last event filled
        self._offers: dict[int, dict[str, list[_Offer]]] = {}  # sequence -> index -> bytes
        self._due: list[int] = []  # heap of the sequences in _offers, to drop passed ones
        self._broken: list[_Broken] = []
        self._reopen = reopen
        self._clock = clock
        self._wall_ns = wall_ns
        self._sleep = sleep
        # When the first event needing bytes came: the events' point in time existed.
        self._first_fill_at: float | None = None

    def fill(self, event: StoredEvent) -> None:
        """Give `event` the bytes the batch documents of its index list at its sequence,
        or the reason it has none."""
        if self._first_fill_at is None:
            self._first_fill_at = self._clock()
        self._advance(event.position)
        offers = self._offers.get(event.position, {}).get(event.index, [])
        if not offers and self._read_again(event):
            offers = self._offers.get(event.position, {}).get(event.index, [])
        if not offers:
            event.bytes_problem = self._why_none(event)
            return
        data = _choose(offers, event.source).data
        event.canonical = data
        with contextlib.suppress(DecodeError):
            event.decoded = audit_pb2.AuditEvent.FromString(data)

    def _read_again(self, event: StoredEvent) -> bool:
        """Once per stream, for a recent event: wait until its batch document must be
        searchable, then read the batch documents again from its sequence."""
        if self._reopen is None or not self._recent(event):
            return False
        reopen, self._reopen = self._reopen, None
        settled = (self._first_fill_at or self._clock()) + SETTLE_S
        wait = settled - self._clock()
        if wait > 0:
            self._sleep(wait)
        self.close()
        self._source = reopen(event.position)
        self._hits = Peekable(self._source)
        self._at = None
        self._advance(event.position)
        return True

    def _recent(self, event: StoredEvent) -> bool:
        ingested = event.source.get("event", {}).get("ingested")
        try:
            at = parse_iso_nanos(ingested) if isinstance(ingested, str) else None
        except ValueError:
            return False
        return at is not None and self._wall_ns() - at <= RECENT_S * 1e9

    def held(self) -> int:
        """Sequences whose bytes are held now (what bounds memory)."""
        return len(self._offers)

    def close(self) -> None:
        """Stop reading (a point in time the reader opened is closed)."""
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def _advance(self, position: int) -> None:
        """Drop what serves only sequences below `position`; read the batch documents
        starting at or before it. Events come in ascending sequence, so a position not
        above the last one (a document without a sequence sorts last, as -1) reads
        nothing new."""
        if self._at is not None and position <= self._at:
            return
        self._at = position
        while self._due and self._due[0] < position:
            del self._offers[heapq.heappop(self._due)]
        self._broken = [b for b in self._broken if b.last >= position]
        while (hit := self._hits.peek()) is not None and _first(hit) <= position:
            self._load(next(self._hits), position)

    def _load(self, hit: Mapping[str, Any], position: int) -> None:
        where = f"batch document {hit.get('_id')} in {hit.get('_index')}"
        try:
            index = events_index_of(self.prefix, str(hit.get("_index", "")))
        except ValueError:
            return  # not a batches index of this prefix: holds none of these events
        source = hit.get("_source")
        batch = source.get("batch") if isinstance(source, Mapping) else None
        if not isinstance(batch, Mapping):
            batch = {}
        last = _int(batch.get("last"))
        if last is not None and last < position:
            return  # lists only events that have passed: not even decoded
        try:
            entries = _entries(batch)
        except BatchBytesError as exc:
            self._remember_broken(index, batch, hit, f"{where}: {exc}")
            return
        for seq, data in entries:
            if seq >= position:
                self._offer(seq, index, _Offer(data, where))

    def _offer(self, seq: int, index: str, offer: _Offer) -> None:
        if seq not in self._offers:
            self._offers[seq] = {}
            heapq.heappush(self._due, seq)
        self._offers[seq].setdefault(index, []).append(offer)

    def _remember_broken(
        self, index: str, batch: Mapping[str, Any], hit: Mapping[str, Any], why: str
    ) -> None:
        """The range the undecodable document claims, from whatever of it is readable
        (searchable bounds, listed sequences); nothing readable: it cannot be named."""
        listed = batch.get("sequences")
        known = [s for s in listed if _is_int(s)] if isinstance(listed, list) else []
        known += [v for v in (_first(hit), _int(batch.get("last"))) if v is not None]
        if known:
            self._broken.append(_Broken(index, min(known), max(known), why))

    def _why_none(self, event: StoredEvent) -> str:
        for broken in self._broken:
            if broken.index == event.index and broken.first <= event.position <= broken.last:
                return broken.why
        try:
            where = batches_index(self.prefix, event.index)
        except ValueError:
            where = "no batches index"
        return f"no batch document in {where} lists sequence {event.position}"


def with_batch_bytes(events: Iterable[StoredEvent], batches: BatchBytes) -> Iterator[StoredEvent]:
    """`events` in their order, each without inline bytes filled from `batches`; the
    batch reading is closed when the events end or are no longer read."""
    try:
        for event in events:
            if event.canonical is None and not has_inline_bytes(event.source):
                batches.fill(event)
            yield event
    finally:
        batches.close()


def _entries(batch: Mapping[str, Any]) -> list[tuple[int, bytes]]:
    """(sequence, bytes) of a batch document; BatchBytesError when they do not decode or
    do not match what the document lists."""
    if batch.get("encoding") != ENCODING:
        raise BatchBytesError(f"unknown encoding {batch.get('encoding')!r}")
    sequences = batch.get("sequences")
    if not isinstance(sequences, list) or not all(_is_int(s) for s in sequences):
        raise BatchBytesError("batch.sequences is not a list of sequences")
    if batch.get("count") != len(sequences):
        raise BatchBytesError(
            f"batch.count {batch.get('count')!r} but {len(sequences)} sequences listed"
        )
    text = batch.get("bytes")
    if not isinstance(text, str):
        raise BatchBytesError("no batch.bytes")
    return list(zip(sequences, decode(text, len(sequences)), strict=True))


def _choose(offers: list[_Offer], source: Mapping[str, Any]) -> _Offer:
    """Of several batch documents' bytes for one document, those whose hash is the
    document's stored ``integrity.event_hash`` (an unsigned hint: it only picks which
    bytes the seal then judges), else the first read."""
    if len(offers) == 1:
        return offers[0]
    integ = source.get("integrity")
    hint = integ.get("event_hash") if isinstance(integ, Mapping) else None
    for offer in offers:
        if isinstance(hint, str) and integrity.event_hash(offer.data).hex() == hint:
            return offer
    return offers[0]


def _first(hit: Mapping[str, Any]) -> int:
    """The ``batch.first`` the document was sorted by (its sort value); -1 when there is
    none, so that it is read at once rather than never."""
    sort = hit.get("sort")
    value = _int(sort[0]) if isinstance(sort, list) and sort else None
    return value if value is not None else -1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return value if _is_int(value) else None
