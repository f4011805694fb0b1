"""The integrity hooks as the runtime wires them: spool links (undone when an append
fails), chain state saved on commit, sealed batches that never span a chain break, and
heartbeats restating the head submitted so far."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.batch import Batcher
from agent.errors import SpoolWriteError
from agent.integrity import AgentKey, Chainer, heartbeat, seal
from agent.outbox import Outbox
from agent.runtime import ChainHooks
from agent.ship import Outgoing
from agent.spool import HEADER_SIZE, Entry, Spool
from agent.statedisk import StateDisk
from proto import integrity
from proto.v1 import audit_pb2 as pb

AGENT = "a1"
OBSERVER = pb.Observer(agent_id=AGENT, hostname="h", agent_version="t")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def chained_spool(state: Path) -> tuple[Spool, Chainer]:
    chainer = Chainer.load(state, AGENT)
    hooks = ChainHooks(chainer, StateDisk(state))
    spool = Spool(
        state / "spool",
        max_bytes=1 << 20,
        segment_bytes=1 << 18,
        link=hooks.link,
        committed=hooks.committed,
        aborted=hooks.aborted,
    )
    spool.open(0)
    return spool, chainer


def events(n: int, start: int = 0) -> list[Entry]:
    return [Entry(pb.AuditEvent(action=f"e{start + i}")) for i in range(n)]


def spooled(spool: Spool) -> list[pb.AuditEvent]:
    reader = spool.reader(1)
    records, _ = reader.read(1000)
    reader.close()
    return [pb.AuditEvent.FromString(r.event) for r in records]


def test_failed_append_is_unlinked_and_its_sequences_relinked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, chainer = chained_spool(tmp_path)
    spool.append(events(2))
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(SpoolWriteError):
        spool.append(events(3, start=2))
    assert chainer.head_sequence == 2  # the links of the failed append are undone
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert spool.append(events(3, start=2)) == [3, 4, 5]
    stored = spooled(spool)
    prev = integrity.genesis(AGENT)
    for event in stored:
        assert event.chain_prev == prev
        assert event.chain_hash == integrity.chain_link(
            prev, integrity.canonical_event_bytes(event)
        )
        prev = event.chain_hash
    # chain.json follows each commit: a new Chainer continues where the spool ends.
    again = Chainer.load(tmp_path, AGENT)
    assert (again.head_sequence, again.head) == (5, prev)
    spool.close()


def test_batches_are_sealed_and_split_at_a_chain_break(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool, _ = chained_spool(tmp_path)
    spool.append(events(5))
    (segment,) = spool.segment_names()
    path = tmp_path / "spool" / segment
    data = bytearray(path.read_bytes())
    data[len(data) // 5 + HEADER_SIZE + 2] ^= 0xFF  # sequence 2 is lost to corruption
    path.write_bytes(bytes(data))
    sent: list[Outgoing] = []
    drain = threading.Event()
    drain.set()
    Outbox(
        agent_id=AGENT,
        observer=OBSERVER,
        spool=spool,
        reader=spool.reader(1),
        batcher=Batcher(3, 1 << 20, 1.0),
        submit=lambda item: sent.append(item) is None,
        wall_ns=lambda: 7,
        monotonic=Clock(),
        seal=lambda batch: seal(batch, key, now_unix_nano=7),
    ).run(drain)
    assert [[e.sequence for e in item.batch.events] for item in sent] == [[1], [3, 4, 5], [6]]
    keys = {key.key_id: key.private.public_key()}
    for item in sent:
        assert integrity.verify_batch(item.batch, AGENT, keys).authentic
    # The collector sees the loss as a gap between intact seals: 1 → (2 missing) → 3.
    assert sent[1].batch.seal.prev_chain_head != sent[0].batch.seal.chain_head
    assert sent[2].batch.seal.prev_chain_head == sent[1].batch.seal.chain_head
    spool.close()


def test_idle_outbox_sends_heartbeats_of_the_head_it_submitted(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    spool, chainer = chained_spool(tmp_path)
    clock = Clock()
    sent: list[Outgoing] = []
    drain = threading.Event()
    genesis = integrity.genesis(AGENT)

    def submit(item: Outgoing) -> bool:
        sent.append(item)
        if not item.batch.events:
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
        observer=OBSERVER,
        spool=spool,
        reader=spool.reader(1),
        batcher=Batcher(10, 1 << 20, 0.2),
        submit=submit,
        wall_ns=lambda: 7,
        monotonic=clock,
        seal=lambda batch: seal(batch, key, now_unix_nano=7),
        heartbeat=lambda seq, head: heartbeat(key, AGENT, seq, head, now_unix_nano=8),
        heartbeat_interval_s=5.0,
        head=chainer.snapshot(),
    ).run(drain)
    kinds = [len(item.batch.events) for item in sent]
    assert kinds == [0, 2, 0], kinds
    first, batch, second = (item.batch for item in sent)
    assert (first.seal.last_sequence, first.seal.chain_head) == (0, genesis)
    assert (second.seal.last_sequence, second.seal.chain_head) == (2, batch.seal.chain_head)
    keys = {key.key_id: key.private.public_key()}
    assert all(integrity.check_seal(b.seal, AGENT, keys) == [] for b in (first, second))
    spool.close()
