"""agent.sealing: key creation, format 2 seals and heartbeats."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.sealing import (
    KEY_FILE,
    LEGACY_CHAIN_FILE,
    PUBLIC_KEY_FILE,
    AgentKey,
    Chainer,
    IntegrityError,
    heartbeat,
    heartbeat_seal,
    seal,
    seal_events,
)
from proto import integrity as it
from proto.v1 import audit_pb2 as pb

AGENT = "agent-1"
STREAM = "00112233aabbccdd"


def ev(seq: int) -> pb.AuditEvent:
    return pb.AuditEvent(
        sequence=seq,
        stream_id=STREAM,
        action="login",
        original=f"line {seq}",
        time_unix_nano=1_000 + (seq % 3),
    )


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = AgentKey.load_or_create(state)
    assert stat.S_IMODE((state / KEY_FILE).stat().st_mode) == 0o600
    pub = it.load_public_keys((state / PUBLIC_KEY_FILE).read_bytes())
    assert it.key_id(pub[0]) == key.key_id
    again = AgentKey.load_or_create(state)
    assert again.key_id == key.key_id


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    AgentKey.load_or_create(tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(IntegrityError, match="chmod 600"):
        AgentKey.load_or_create(tmp_path)


def sealed_over(key: AgentKey, events: list[pb.AuditEvent], first: int, prev: bytes) -> pb.Batch:
    data = [it.event_bytes_v2(e) for e in events]
    seal = seal_events(
        key,
        agent_id=AGENT,
        stream_id=STREAM,
        first_sequence=first,
        prev_head=prev,
        event_hashes=[it.event_hash(d) for d in data],
        time_range=it.event_time_range(events),
        now_unix_nano=123,
    )
    return pb.Batch(batch_id=1, agent_id=AGENT, format_version=2, event_bytes=data, seal=seal)


def test_sealed_batches_and_heartbeat_verify_with_the_registered_key(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    events = [ev(s) for s in range(1, 11)]
    keys = {key.key_id: key.private.public_key()}
    head = it.genesis_v2(AGENT, STREAM)
    for first, chunk in ((1, events[:4]), (5, events[4:])):
        batch = sealed_over(key, chunk, first, head)
        verdict = it.verify_batch(batch, AGENT, keys)
        assert verdict.authentic, verdict.findings
        assert batch.seal.format_version == 2 and batch.seal.stream_id == STREAM
        assert (batch.seal.first_sequence, batch.seal.event_count) == (first, len(chunk))
        head = batch.seal.chain_head
    assert (
        head
        == it.heads_over(
            it.genesis_v2(AGENT, STREAM), [it.event_hash(it.event_bytes_v2(e)) for e in events]
        )[-1]
    )
    beat = heartbeat_seal(
        key, agent_id=AGENT, stream_id=STREAM, sequence=10, head=head, now_unix_nano=124
    )
    hb = pb.Batch(agent_id=AGENT, format_version=2, seal=beat)
    assert it.verify_batch(hb, AGENT, keys).authentic
    assert (beat.last_sequence, beat.chain_head, beat.event_count) == (10, head, 0)


def test_a_seal_over_other_bytes_names_the_altered_event(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    batch = sealed_over(key, [ev(s) for s in range(1, 4)], 1, it.genesis_v2(AGENT, STREAM))
    altered = ev(2)
    altered.original = "changed in the spool"
    batch.event_bytes[1] = it.event_bytes_v2(altered)
    verdict = it.verify_batch(batch, AGENT, {key.key_id: key.private.public_key()})
    assert [(f.kind, f.first, f.last) for f in verdict.findings] == [(it.EVENT_HASH_MISMATCH, 2, 2)]


def test_an_empty_seal_or_a_bad_head_is_refused(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    common = {"agent_id": AGENT, "stream_id": STREAM, "first_sequence": 1, "now_unix_nano": 1}
    with pytest.raises(IntegrityError, match="heartbeat"):
        seal_events(key, prev_head=bytes(32), event_hashes=[], time_range=(0, 0), **common)
    with pytest.raises(IntegrityError, match="32 bytes"):
        seal_events(key, prev_head=b"x", event_hashes=[bytes(32)], time_range=(1, 1), **common)


# -- the format 1 producers kept for tools and tests that build format 1 history --------


def ev1(seq: int) -> pb.AuditEvent:
    return pb.AuditEvent(sequence=seq, action="login", original=f"line {seq}")


def test_chain_persists_and_continues(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    assert chainer.head == it.genesis(AGENT) and chainer.head_sequence is None
    events = [ev1(s) for s in range(5)]
    for e in events[:3]:
        chainer.link(e)
    chainer.save()
    assert (tmp_path / LEGACY_CHAIN_FILE).exists()
    resumed = Chainer.load(tmp_path, AGENT)
    assert (resumed.head_sequence, resumed.head) == (2, events[2].chain_hash)
    for e in events[3:]:
        resumed.link(e)
    head = it.genesis(AGENT)
    for e in events:
        assert e.chain_prev == head
        head = it.chain_link(head, it.canonical_event_bytes(e))
        assert e.chain_hash == head
    with pytest.raises(IntegrityError, match="does not follow"):
        resumed.link(ev1(7))


def test_recover_fast_forwards_to_spooled_event(tmp_path: Path) -> None:
    first = Chainer.load(tmp_path, AGENT)
    events = [ev1(s) for s in range(3)]
    for e in events:
        first.link(e)  # never saved: crash
    again = Chainer.load(tmp_path, AGENT)
    again.recover(events[-1])
    nxt = ev1(3)
    again.link(nxt)
    assert nxt.chain_prev == events[-1].chain_hash


def test_chain_state_of_other_agent_is_refused(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    chainer.link(ev1(0))
    chainer.save()
    with pytest.raises(IntegrityError, match="agent"):
        Chainer.load(tmp_path, "agent-2")


def test_sealed_batch_verifies_with_the_registered_key(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    chainer = Chainer.load(tmp_path, AGENT)
    events = [ev1(s) for s in range(10)]
    for e in events:
        chainer.link(e)
    keys = {key.key_id: key.private.public_key()}
    for chunk in (events[:4], events[4:]):
        batch = pb.Batch(batch_id=1, agent_id=AGENT, events=chunk)
        seal(batch, key, now_unix_nano=123)
        assert batch.seal.event_count == len(chunk)
        assert it.verify_batch(batch, AGENT, keys).authentic
    hb = heartbeat(key, AGENT, chainer.head_sequence, chainer.head, now_unix_nano=124)
    assert not hb.events and hb.seal.chain_head == events[-1].chain_hash
    assert it.verify_batch(hb, AGENT, keys).authentic


def test_seal_refuses_corrupted_events(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    chainer = Chainer.load(tmp_path, AGENT)
    events = [ev1(s) for s in range(3)]
    for e in events:
        chainer.link(e)
    events[1].original = "changed in the spool"
    with pytest.raises(IntegrityError, match="does not match"):
        seal(pb.Batch(agent_id=AGENT, events=events), key, now_unix_nano=1)
    with pytest.raises(IntegrityError, match="not linked"):
        seal(pb.Batch(agent_id=AGENT, events=[events[0], events[2]]), key, now_unix_nano=1)


def test_rewind_after_a_failed_spool_write(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    chainer.link(ev1(1))
    before = chainer.snapshot()
    chainer.link(ev1(2))  # the spool write of 2 fails: sequence 2 is reused
    chainer.rewind(before)
    again = ev1(2)
    again.original = "another record"
    chainer.link(again)
    assert chainer.head_sequence == 2 and again.chain_prev == before[1]
