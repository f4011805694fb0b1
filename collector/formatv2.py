"""Stream format 2 batches on the collector: the received event bytes -> documents.

A format 2 batch carries each event as the exact bytes the agent serialized once and
hashed (``Batch.event_bytes``); `proto.integrity.verify_batch` parsed them already
(``BatchVerdict.events``), so they are not parsed again here. Every document stores its
event hash and the stream head after it; its ``_id`` and ``agent.stream`` name the
event's stream. The bytes themselves are stored unchanged (never re-serialized: a
re-encoding could differ in unknown fields or field order) once per batch and events
index, compressed, in a batch document (`batch_writes`, `collector.batchbytes`)
written in the same bulk; with ``inline_bytes`` each document carries its own
(``integrity.canonical``), as fork documents do.

Nothing is dropped: event bytes that do not parse as an `AuditEvent` go to the
dead-letter index as they came (base64), with their event hash, and the batch's
``malformed_event`` finding becomes an alert.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from collector import batchbytes, native
from collector.documents import Document, DocumentBytes, EventDocument, iso_nanos, to_document
from collector.gate import event_integrity_fields
from collector.index import IndexRequest
from proto import integrity
from proto.v1 import audit_pb2


def event_count(batch: audit_pb2.Batch) -> int:
    """How many events `batch` carries, in either format."""
    if batch.format_version == integrity.FORMAT_V2:
        return len(batch.event_bytes)
    return len(batch.events)


# Valid stream ids seen (a stream carries thousands of events): the pattern match once
# per stream, not per event. Bounded: cleared when full.
_VALID_STREAMS: set[str] = set()
_VALID_STREAMS_LIMIT = 4096


def stream_of(event: audit_pb2.AuditEvent) -> str:
    """The stream an event names; a malformed stream id (the batch is alerted
    ``stream_mismatch``) is replaced by a stable stand-in that cannot collide with a
    valid one, its raw value staying in the stored event bytes."""
    stream_id = event.stream_id
    if stream_id in _VALID_STREAMS:
        return stream_id
    if integrity.valid_stream_id(stream_id):
        if len(_VALID_STREAMS) >= _VALID_STREAMS_LIMIT:
            _VALID_STREAMS.clear()
        _VALID_STREAMS.add(stream_id)
        return stream_id
    digest = hashlib.sha256(stream_id.encode("utf-8")).hexdigest()[:16]
    return f"invalid-{digest}"


@dataclass
class Documents:
    """A format 2 batch as documents: (document, original line) in batch order, plus
    dead letters for event bytes that do not parse. A document is an `EventDocument`
    built in Python or a `DocumentBytes` from the compiled kernel (`collector.native`)."""

    events: list[tuple[EventDocument | DocumentBytes, str]] = field(default_factory=list)
    unparsed: list[IndexRequest] = field(default_factory=list)
    # Per document of `events`: the event's bytes and its hash.
    signed: list[tuple[bytes, bytes]] = field(default_factory=list)


def documents_v2(
    batch: audit_pb2.Batch,
    verdict: integrity.BatchVerdict,
    *,
    agent_id: str,
    received_unix_nano: int,
    deadletter_index: str,
    kernel: native.Kernel | None = native.KERNEL,
    inline_bytes: bool = False,
) -> Documents:
    """The documents of format 2 `batch`, with `verdict`'s hashes and heads.

    With the compiled `kernel`, each event it builds arrives serialized; the events it
    declines, and every event without it, are built here by `to_document`. Without
    `inline_bytes` the caller stores the events' bytes (``signed``) by `batch_writes`."""
    out = Documents()
    parsed_all = len(verdict.facts) == len(batch.event_bytes)
    # verify_batch kept each event's bytes (``canonical``): reused, not copied again
    # out of the batch.
    datas: Sequence[bytes] = verdict.canonical if parsed_all else batch.event_bytes
    heads: Sequence[bytes | None] = verdict.hashes or [None] * len(datas)
    built: Sequence[native.Built] = ()
    if kernel is not None and parsed_all and datas:
        built = kernel(
            list(datas),
            list(verdict.hashes),
            list(verdict.event_hashes),
            agent_id,
            received_unix_nano,
            inline_bytes,
        )
    append = out.events.append
    keep = out.signed.append
    for position, data in enumerate(datas):
        if built:
            entry = built[position]
            if entry is not None:
                doc_id, sequence, timestamp, body, original = entry
                append((DocumentBytes(doc_id, sequence, timestamp, body), original))
                keep((data, verdict.event_hashes[position]))
                continue
        if parsed_all:
            event = verdict.event_at(position)
            hash_of_event = verdict.event_hashes[position]
        else:  # verify_batch stopped at a malformed event: parse the rest here
            hash_of_event = integrity.event_hash(data)
            event = audit_pb2.AuditEvent()
            try:
                event.ParseFromString(data)
            except DecodeError as exc:
                out.unparsed.append(
                    _dead_letter(
                        agent_id,
                        data,
                        hash_of_event,
                        str(exc),
                        received_unix_nano,
                        deadletter_index,
                    )
                )
                continue
        doc = to_document(
            event,
            agent_id=agent_id,
            received_unix_nano=received_unix_nano,
            stream_id=stream_of(event),
        )
        fields = event_integrity_fields(
            data, heads[position], hash_of_event, inline_bytes=inline_bytes
        )
        source = doc.source
        stored = source.get("integrity")
        if stored is None:
            source["integrity"] = fields
        else:
            stored.update(fields)
        append((doc, event.original))
        keep((data, hash_of_event))
    return out


def batch_writes(
    requests: Sequence[IndexRequest],
    signed: Sequence[tuple[bytes, bytes]],
    *,
    prefix: str,
    agent_id: str,
    received_unix_nano: int,
) -> list[IndexRequest]:
    """The batch documents storing the bytes of `requests`' events (`signed`, one entry
    per request), one per events index and stream, written beside them (``companion``:
    confirmed like the events, not counted as events)."""
    # A format 2 _id is agent:stream:sequence (`documents.document_id`): all but its
    # last part names the stream.
    groups: dict[tuple[str, str], list[int]] = {}
    for position, request in enumerate(requests):
        key = (request.index, request.doc_id.rpartition(":")[0])
        groups.setdefault(key, []).append(position)
    timestamp = iso_nanos(received_unix_nano)
    writes: list[IndexRequest] = []
    stream_at = len(agent_id) + 1
    for (index, agent_stream), positions in groups.items():
        stream = agent_stream[stream_at:]
        sequences = [requests[p].sequence for p in positions]
        body = batchbytes.batch_document(
            agent_id=agent_id,
            stream_id=stream,
            sequences=sequences,
            datas=[signed[p][0] for p in positions],
            timestamp=timestamp,
        )
        doc_id = batchbytes.batch_doc_id(
            agent_id, stream, sequences, (signed[p][1] for p in positions)
        )
        writes.append(
            IndexRequest(
                batchbytes.batches_index(prefix, index),
                doc_id,
                body,
                agent_id=agent_id,
                companion=True,
            )
        )
    return writes


def _dead_letter(
    agent_id: str,
    data: bytes,
    hash_of_event: bytes,
    error: str,
    received_unix_nano: int,
    index: str,
) -> IndexRequest:
    body: Document = {
        "@timestamp": iso_nanos(received_unix_nano),
        "agent": {"id": agent_id},
        "deadletter": {
            "error_type": "unparseable_event",
            "reason": f"event bytes of a format 2 batch do not parse as an AuditEvent: {error}",
            "document": {
                "event_bytes": base64.b64encode(data).decode("ascii"),
                "event_hash": hash_of_event.hex(),
            },
        },
    }
    doc_id = f"{agent_id}:unparsed:{hash_of_event.hex()[:32]}"
    return IndexRequest(index, doc_id, body, agent_id=agent_id)


def signed_bytes(
    requests: Sequence[IndexRequest], signed: Sequence[tuple[bytes, bytes]]
) -> dict[tuple[str, str], bytes]:
    """(index, _id) -> the event's bytes, for the documents of `requests` (a fork
    document carries its own, `collector.forks`)."""
    return {(r.index, r.doc_id): signed[p][0] for p, r in enumerate(requests)}
