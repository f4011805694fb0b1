"""Stream format 2 as the runtime wires it: events serialized once at append, heads
folded by the outbox over the spooled bytes (recomputed the same after a restart),
sealed batches that never span a gap, heartbeats of the head submitted so far, wire
bytes built by concatenation, and a refused batch split and resealed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.batch import Batcher
from agent.errors import SpoolWriteError
from agent.outbox import Outbox
from agent.sealing import AgentKey
from agent.ship import Outgoing, split
from agent.spool import HEADER_SIZE, Entry, Spool
from proto import integrity
from proto.v1 import audit_pb2 as pb

AGENT = "a1"
STREAM = "0a1b2c3d4e5f6071"
OBSERVER = pb.Observer(agent_id=AGENT, hostname="h", agent_version="t")
GENESIS = integrity.genesis_v2(AGENT, STREAM)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def new_spool(state: Path) -> Spool:
    spool = Spool(state / "spool", max_bytes=1 << 20, segment_bytes=1 << 18)
    spool.open(0, stream_id=STREAM)
    return spool


def events(n: int, start: int = 0) -> list[Entry]:
    return [
        Entry(pb.AuditEvent(action=f"e{start + i}", time_unix_nano=10_000 - start - i))
        for i in range(n)
    ]


def outbox(
    spool: Spool,
    key: AgentKey,
    sent: list[Outgoing],
    *,
    head: tuple[int, bytes] = (0, GENESIS),
    max_events: int = 3,
) -> Outbox:
    return Outbox(
        agent_id=AGENT,
        stream_id=STREAM,
        key=key,
        observer=OBSERVER,
        spool=spool,
        reader=spool.reader(head[0] + 1),
        batcher=Batcher(max_events, 1 << 20, 1.0),
        submit=lambda item: sent.append(item) is None,
        wall_ns=lambda: 7,
        monotonic=Clock(),
        head=head,
    )


def drained(box: Outbox) -> None:
    drain = threading.Event()
    drain.set()
    box.run(drain)


def keys_of(key: AgentKey) -> dict[str, object]:
    return {key.key_id: key.private.public_key()}


def test_wire_bytes_are_the_serialized_batch_and_verify(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    spool.append(events(5))
    sent: list[Outgoing] = []
    drained(outbox(spool, key, sent))
    head = GENESIS
    for item in sent:
        item.batch_id = 42
        batch = pb.Batch(
            batch_id=42,
            agent_id=AGENT,
            seal=item.seal,
            format_version=2,
            event_bytes=list(item.event_bytes),
        )
        assert item.wire() == batch.SerializeToString()
        assert item.size() == len(item.wire())
        verdict = integrity.verify_batch(batch, AGENT, keys_of(key))  # type: ignore[arg-type]
        assert verdict.authentic, verdict.findings
        assert item.seal.prev_chain_head == head
        assert (item.seal.min_event_time_unix_nano, item.seal.max_event_time_unix_nano) == (
            integrity.event_time_range(verdict.events)
        )
        assert all(e.stream_id == STREAM for e in verdict.events)
        head = item.seal.chain_head
    assert [(i.first_sequence, i.last_sequence) for i in sent] == [(1, 3), (4, 5)]
    spool.close()


def test_a_failed_append_reuses_its_sequences_and_the_heads_follow_the_stored_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    spool.append(events(2))
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(SpoolWriteError):
        spool.append(events(3, start=2))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert spool.append(events(3, start=20)) == [3, 4, 5]
    sent: list[Outgoing] = []
    drained(outbox(spool, key, sent, max_events=10))
    (item,) = sent
    batch = item.to_batch()
    verdict = integrity.verify_batch(batch, AGENT, keys_of(key))  # type: ignore[arg-type]
    assert verdict.authentic, verdict.findings
    assert [e.action for e in verdict.events] == ["e0", "e1", "e20", "e21", "e22"]
    assert item.seal.chain_head == integrity.heads_over(GENESIS, verdict.event_hashes)[-1]
    spool.close()


def test_heads_after_a_restart_are_recomputed_from_the_spool_past_the_checkpoint(
    tmp_path: Path,
) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    spool.append(events(4))
    spool.append(events(4, start=4))
    whole: list[Outgoing] = []
    drained(outbox(spool, key, whole))
    # "Crash" after the first batch was acked: the checkpoint holds (3, its head); the
    # spool past it is read again and sealed into the same heads.
    acked = whole[0]
    again: list[Outgoing] = []
    drained(outbox(spool, key, again, head=(acked.last_sequence, acked.head)))
    assert [i.seal.SerializeToString() for i in again] == [
        i.seal.SerializeToString() for i in whole[1:]
    ]
    spool.close()


def test_batches_never_span_a_gap_left_by_a_corrupt_record(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    for entry in events(5):
        spool.append([entry])  # one record each: the corruption loses only sequence 2
    (segment,) = spool.segment_names()
    path = tmp_path / "spool" / segment
    data = bytearray(path.read_bytes())
    data[len(data) // 5 + HEADER_SIZE + 2] ^= 0xFF
    path.write_bytes(bytes(data))
    sent: list[Outgoing] = []
    drained(outbox(spool, key, sent))
    assert [(i.first_sequence, i.last_sequence) for i in sent] == [(1, 1), (3, 5), (6, 6)]
    for item in sent:
        verdict = integrity.verify_batch(item.to_batch(), AGENT, keys_of(key))  # type: ignore[arg-type]
        assert verdict.authentic, verdict.findings
    loss = pb.AuditEvent.FromString(sent[2].event_bytes[0])
    assert loss.action == "agent.spool_loss"
    # The collector sees the gap (2 missing) between two intact seals; the head chains
    # on over the events that exist.
    assert sent[1].seal.prev_chain_head == sent[0].seal.chain_head
    assert sent[2].seal.prev_chain_head == sent[1].seal.chain_head
    spool.close()


def test_a_split_batch_is_resealed_into_two_verifying_halves(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    spool.append(events(7))
    sent: list[Outgoing] = []
    box = outbox(spool, key, sent, max_events=10)
    drained(box)
    (whole,) = sent
    first, second = split(whole, box.reseal)
    assert first.partial and not second.partial and second.positions == whole.positions
    assert (first.first_sequence, first.last_sequence) == (1, 3)
    assert (second.first_sequence, second.last_sequence) == (4, 7)
    assert first.seal.prev_chain_head == GENESIS
    assert second.seal.prev_chain_head == first.seal.chain_head
    assert second.seal.chain_head == whole.seal.chain_head
    for piece in (first, second):
        verdict = integrity.verify_batch(piece.to_batch(), AGENT, keys_of(key))  # type: ignore[arg-type]
        assert verdict.authentic, verdict.findings
    spool.close()


def test_idle_outbox_sends_heartbeats_of_the_head_it_submitted(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool = new_spool(tmp_path)
    clock = Clock()
    sent: list[Outgoing] = []
    drain = threading.Event()

    def submit(item: Outgoing) -> bool:
        sent.append(item)
        if not item.events:
            if len(sent) == 1:
                spool.append(events(2))  # new events after the first heartbeat
            else:
                drain.set()
        return True

    def tick(_known: int, _timeout: float) -> None:
        clock.now += 0.5

    spool.wait = tick  # type: ignore[method-assign]
    Outbox(
        agent_id=AGENT,
        stream_id=STREAM,
        key=key,
        observer=OBSERVER,
        spool=spool,
        reader=spool.reader(1),
        batcher=Batcher(10, 1 << 20, 0.2),
        submit=submit,
        wall_ns=lambda: 7,
        monotonic=clock,
        head=(0, GENESIS),
        heartbeat_interval_s=5.0,
    ).run(drain)
    kinds = [item.events for item in sent]
    assert kinds == [0, 2, 0], kinds
    first, batch, second = sent
    assert (first.seal.last_sequence, first.seal.chain_head) == (0, GENESIS)
    assert (second.seal.last_sequence, second.seal.chain_head) == (2, batch.seal.chain_head)
    for beat in (first, second):
        verdict = integrity.verify_batch(beat.to_batch(), AGENT, keys_of(key))  # type: ignore[arg-type]
        assert verdict.authentic and beat.seal.format_version == 2
    spool.close()
