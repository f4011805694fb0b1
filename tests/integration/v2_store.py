"""Stream format 2 documents written into a real OpenSearch exactly as the storage
contract says the collector writes them (docs/design/stream-format-v2.md): event
documents ``agent:stream:sequence`` with ``agent.stream``, ``integrity.canonical`` (the
event bytes as the agent serialized them), ``integrity.event_hash`` and
``integrity.chain_hash`` (the head after the event); signed v2 seals with their
searchable copies; one chain head document per stream. Used by the verify tests and
the verify benchmark to build streams without an agent process.

Or in the per-batch layout (`collector.batchbytes`, `store(..., batch_bytes_from=N)`):
event documents from sequence N on without ``integrity.canonical``, their bytes in one
batch document per seal and events index in ``{prefix}-batches-<class>-<period>``;
those before N inline, as documents written before the change.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from collector.batchbytes import BATCHES_MAPPING, batch_doc_id, batch_document, batches_index
from collector.documents import EVENTS_MAPPING, iso_nanos, to_document
from collector.gate import (
    CHAINHEADS_MAPPING,
    SEALS_MAPPING,
    chainheads_index,
    event_integrity_fields,
    seal_document,
    seals_index,
)
from proto import integrity
from proto.v1 import audit_pb2 as pb

_KW = {"type": "keyword", "ignore_above": 1024}


def events_mapping() -> dict[str, Any]:
    mapping = copy.deepcopy(EVENTS_MAPPING)
    mapping["properties"]["agent"]["properties"]["stream"] = _KW
    mapping["properties"]["integrity"]["properties"]["event_hash"] = _KW
    return mapping


def seals_mapping() -> dict[str, Any]:
    mapping = copy.deepcopy(SEALS_MAPPING)
    props = mapping["properties"]["seal"]["properties"]
    props["stream"] = _KW
    props["format_version"] = {"type": "integer"}
    props["min_event_time"] = {"type": "date_nanos"}
    props["max_event_time"] = {"type": "date_nanos"}
    return mapping


def chainheads_mapping() -> dict[str, Any]:
    mapping = copy.deepcopy(CHAINHEADS_MAPPING)
    mapping["properties"]["agent"]["properties"]["stream"] = _KW
    return mapping


def create_indices(
    client: OpenSearch, prefix: str, events_indices: Sequence[str], *, batches: bool = False
) -> None:
    """The events indices (and with `batches` their batches indices), seals, chain heads."""
    for name in events_indices:
        client.indices.create(
            index=name,
            body={"settings": {"number_of_replicas": 0}, "mappings": events_mapping()},
        )
        if batches:
            client.indices.create(
                index=batches_index(prefix, name),
                body={"settings": {"number_of_replicas": 0}, "mappings": BATCHES_MAPPING},
            )
    for name, mapping in (
        (seals_index(prefix), seals_mapping()),
        (chainheads_index(prefix), chainheads_mapping()),
    ):
        client.indices.create(
            index=name, body={"settings": {"number_of_replicas": 0}, "mappings": mapping}
        )


def month_index(prefix: str, time_unix_nano: int) -> str:
    return f"{prefix}-events-standard-{iso_nanos(time_unix_nano)[:7].replace('-', '.')}"


@dataclass
class Stream:
    """One stream's events and seals as the agent made them."""

    agent: str
    stream: str
    key: Ed25519PrivateKey
    events: list[pb.AuditEvent] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    seals: list[pb.Seal] = field(default_factory=list)


def make_event(agent: str, stream: str, sequence: int, time_unix_nano: int) -> pb.AuditEvent:
    return pb.AuditEvent(
        sequence=sequence,
        stream_id=stream,
        observer=pb.Observer(agent_id=agent, hostname="crm-01", agent_version="0.2.0"),
        time_unix_nano=time_unix_nano,
        observed_unix_nano=time_unix_nano + 1_000_000,
        event_category=["database"],
        event_type=["change"],
        action="record.update",
        outcome=pb.OUTCOME_SUCCESS,
        user=pb.User(id=f"u{sequence % 7}", name="alice", email="alice@example.com"),
        object=pb.CrmObject(type="customer", id=f"c-{sequence}", name="ACME"),
        message=f"alice updated customer c-{sequence}",
        original=json.dumps({"user": "alice", "seq": sequence}),
        attributes={"tenant": "eu"},
    )


def build_stream(
    agent: str,
    stream: str,
    key: Ed25519PrivateKey,
    count: int,
    *,
    batch: int,
    start_time: int,
    sealed_time: int | None = None,
) -> Stream:
    """`count` events from sequence 1, sealed every `batch` events (v2 seals)."""
    out = Stream(agent, stream, key)
    head = integrity.genesis_v2(agent, stream)
    for first in range(1, count + 1, batch):
        last = min(first + batch - 1, count)
        events = [
            make_event(agent, stream, seq, start_time + seq * 1_000_000_000)
            for seq in range(first, last + 1)
        ]
        data = [integrity.event_bytes_v2(e) for e in events]
        hashes = [integrity.event_hash(d) for d in data]
        heads = integrity.heads_over(head, hashes)
        low, high = integrity.event_time_range(events)
        seal = pb.Seal(
            agent_id=agent,
            first_sequence=first,
            last_sequence=last,
            prev_chain_head=head,
            chain_head=heads[-1],
            event_count=len(events),
            time_unix_nano=(sealed_time or start_time) + last * 1_000_000_000,
            format_version=integrity.FORMAT_V2,
            stream_id=stream,
            event_hashes=hashes,
            min_event_time_unix_nano=low,
            max_event_time_unix_nano=high,
        )
        integrity.sign_seal(seal, key)
        out.events += events
        out.data += data
        out.heads += heads
        out.seals.append(seal)
        head = heads[-1]
    return out


def event_doc(
    agent: str, event: pb.AuditEvent, data: bytes, head: bytes, *, inline: bool = True
) -> dict[str, Any]:
    """The event document; without `inline`, no ``integrity.canonical`` (the bytes are
    in a batch document)."""
    doc = to_document(event, agent_id=agent, received_unix_nano=event.time_unix_nano + 10**9)
    source = doc.source
    source["agent"]["stream"] = event.stream_id
    source["integrity"] = {
        **source.get("integrity", {}),
        **event_integrity_fields(data, head),
        "event_hash": integrity.event_hash(data).hex(),
    }
    if not inline:
        del source["integrity"]["canonical"]
    return source


def batch_docs(
    prefix: str, s: Stream, seal: pb.Seal, since: int
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(index, _id, body) of the batch documents of `seal`'s events from sequence
    `since` on: one per events index they went to, as the collector writes them."""
    by_index: dict[str, list[int]] = {}
    for seq in range(max(seal.first_sequence, since), seal.last_sequence + 1):
        event = s.events[seq - 1]
        by_index.setdefault(month_index(prefix, event.time_unix_nano), []).append(seq)
    for index, seqs in sorted(by_index.items()):
        datas = [s.data[seq - 1] for seq in seqs]
        doc_id = batch_doc_id(s.agent, s.stream, seqs, [integrity.event_hash(d) for d in datas])
        body = batch_document(
            agent_id=s.agent,
            stream_id=s.stream,
            sequences=seqs,
            datas=datas,
            timestamp=iso_nanos(seal.time_unix_nano),
        )
        yield batches_index(prefix, index), doc_id, body


def seal_doc(agent: str, seal: pb.Seal, indices: Sequence[str]) -> tuple[str, dict[str, Any]]:
    body = seal_document(
        agent, seal, received_unix_nano=seal.time_unix_nano, indices=indices, verified=True
    )
    body["seal"]["stream"] = seal.stream_id
    body["seal"]["format_version"] = seal.format_version
    body["seal"]["min_event_time"] = iso_nanos(seal.min_event_time_unix_nano)
    body["seal"]["max_event_time"] = iso_nanos(seal.max_event_time_unix_nano)
    stream = seal.stream_id
    if seal.event_count == 0:
        sid = f"{agent}:{stream}:hb:{seal.time_unix_nano}:{seal.chain_head.hex()[:16]}"
    else:
        sid = (
            f"{agent}:{stream}:{seal.first_sequence}-{seal.last_sequence}:"
            f"{seal.chain_head.hex()[:32]}"
        )
    return sid, body


def _bulk_lines(prefix: str, s: Stream, since: int | None) -> Iterator[dict[str, Any]]:
    for event, data, head in zip(s.events, s.data, s.heads, strict=True):
        index = month_index(prefix, event.time_unix_nano)
        inline = since is None or event.sequence < since
        yield {"index": {"_index": index, "_id": f"{s.agent}:{s.stream}:{event.sequence}"}}
        yield event_doc(s.agent, event, data, head, inline=inline)
    for seal in s.seals:
        if since is not None and seal.event_count:
            for where, doc_id, body in batch_docs(prefix, s, seal, since):
                yield {"index": {"_index": where, "_id": doc_id}}
                yield body
        indices = sorted(
            {
                month_index(prefix, e.time_unix_nano)
                for e in s.events[seal.first_sequence - 1 : seal.last_sequence]
            }
        )
        sid, body = seal_doc(s.agent, seal, indices)
        yield {"index": {"_index": seals_index(prefix), "_id": sid}}
        yield body
    if s.events:
        yield {"index": {"_index": chainheads_index(prefix), "_id": f"{s.agent}:{s.stream}"}}
        yield {
            "@timestamp": iso_nanos(s.seals[-1].time_unix_nano),
            "agent": {"id": s.agent, "stream": s.stream},
            "chain": {
                "sequence": s.events[-1].sequence,
                "head": s.heads[-1].hex(),
                "key_id": s.seals[-1].key_id,
            },
        }


def store(
    client: OpenSearch,
    prefix: str,
    s: Stream,
    chunk: int = 4000,
    *,
    batch_bytes_from: int | None = None,
) -> None:
    """Bulk-index the stream's documents, seals and chain head; refresh. From sequence
    `batch_bytes_from` on (None: never) the event bytes go to batch documents."""
    lines = list(_bulk_lines(prefix, s, batch_bytes_from))
    for start in range(0, len(lines), chunk * 2):
        part = lines[start : start + chunk * 2]
        body = "\n".join(json.dumps(x) for x in part) + "\n"
        result = client.bulk(body=body, request_timeout=300)
        assert not result["errors"], json.dumps(result)[:2000]
    client.indices.refresh(index=f"{prefix}-*")


def write_public_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(integrity.public_key_pem(key.public_key()))


def receipt_line(
    key: Ed25519PrivateKey, agent: str, stream: str, sequence: int, head: bytes, received: int
) -> str:
    receipt = pb.Receipt(
        agent_id=agent,
        stream_id=stream,
        last_sequence=sequence,
        head=head,
        received_unix_nano=received,
    )
    integrity.sign_receipt(receipt, key)
    raw = base64.b64encode(receipt.SerializeToString(deterministic=True)).decode("ascii")
    return json.dumps(
        {
            "receipt": raw,
            "agent_id": agent,
            "stream_id": stream,
            "last_sequence": sequence,
            "head": head.hex(),
            "received": iso_nanos(received),
        }
    )
