"""A hand-built stream format 2 sender for collector tests, from `proto.integrity` only
(the agent's own v2 sender is not used: collector tests must not depend on it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.conftest import NOV_27_2026, make_event


def register(keys_dir: Path, agent_id: str, key: Ed25519PrivateKey) -> None:
    """What `crm-audit keys register` leaves behind: the agent's public key file."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    with (keys_dir / f"{agent_id}.pub").open("ab") as out:
        out.write(integrity.public_key_pem(key.public_key()))


class V2Stream:
    """One stream of one agent: sequences, head chain and signed v2 seals."""

    def __init__(self, agent_id: str, key: Ed25519PrivateKey, stream_id: str | None = None) -> None:
        self.agent_id = agent_id
        self.key = key
        self.stream_id = stream_id or integrity.new_stream_id()
        self.head = integrity.genesis_v2(agent_id, self.stream_id)
        self.next_sequence = 1
        self.batch_id = 0
        # Per sequence: the event bytes and the head after it (what the tests expect).
        self.sent: dict[int, tuple[bytes, bytes]] = {}

    def event(self, sequence: int, **fields: Any) -> pb.AuditEvent:
        fields.setdefault("time_unix_nano", NOV_27_2026 + sequence)
        event = make_event(sequence, self.agent_id, **fields)
        event.stream_id = self.stream_id
        return event

    def batch(self, count: int, **fields: Any) -> pb.Batch:
        """The next `count` events, sealed."""
        events = []
        for _ in range(count):
            events.append(self.event(self.next_sequence, **fields))
            self.next_sequence += 1
        return self.sealed(events)

    def sealed(self, events: Sequence[pb.AuditEvent], *, prev: bytes | None = None) -> pb.Batch:
        """A signed batch of `events` continuing `prev` (default: the current head)."""
        datas = [integrity.event_bytes_v2(e) for e in events]
        hashes = [integrity.event_hash(d) for d in datas]
        start = self.head if prev is None else prev
        heads = integrity.heads_over(start, hashes)
        low, high = integrity.event_time_range(events)
        self.batch_id += 1
        seal = pb.Seal(
            agent_id=self.agent_id,
            first_sequence=events[0].sequence,
            last_sequence=events[-1].sequence,
            prev_chain_head=start,
            chain_head=heads[-1],
            event_count=len(events),
            time_unix_nano=NOV_27_2026 + 10_000 + self.batch_id,
            format_version=integrity.FORMAT_V2,
            stream_id=self.stream_id,
            event_hashes=hashes,
            min_event_time_unix_nano=low,
            max_event_time_unix_nano=high,
        )
        integrity.sign_seal(seal, self.key)
        for event, data, head in zip(events, datas, heads, strict=True):
            self.sent[event.sequence] = (data, head)
        if prev is None:
            self.head = heads[-1]
        return pb.Batch(
            batch_id=self.batch_id,
            agent_id=self.agent_id,
            format_version=integrity.FORMAT_V2,
            event_bytes=datas,
            seal=seal,
        )

    def heartbeat(self) -> pb.Batch:
        self.batch_id += 1
        last = self.next_sequence - 1
        seal = pb.Seal(
            agent_id=self.agent_id,
            first_sequence=last,
            last_sequence=last,
            prev_chain_head=self.head,
            chain_head=self.head,
            event_count=0,
            time_unix_nano=NOV_27_2026 + 10_000 + self.batch_id,
            format_version=integrity.FORMAT_V2,
            stream_id=self.stream_id,
        )
        integrity.sign_seal(seal, self.key)
        return pb.Batch(
            batch_id=self.batch_id,
            agent_id=self.agent_id,
            format_version=integrity.FORMAT_V2,
            seal=seal,
        )
