"""agent.integrity: key creation, chain state, sealing and heartbeats."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.integrity import (
    CHAIN_FILE,
    KEY_FILE,
    PUBLIC_KEY_FILE,
    AgentKey,
    Chainer,
    IntegrityError,
    heartbeat,
    seal,
)
from proto import integrity as it
from proto.v1 import audit_pb2 as pb

AGENT = "agent-1"


def ev(seq: int) -> pb.AuditEvent:
    return pb.AuditEvent(sequence=seq, action="login", original=f"line {seq}")


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


def test_chain_persists_and_continues(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    assert chainer.head == it.genesis(AGENT) and chainer.head_sequence is None
    events = [ev(s) for s in range(5)]
    for e in events[:3]:
        chainer.link(e)
    chainer.save()
    assert (tmp_path / CHAIN_FILE).exists()
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
        resumed.link(ev(7))


def test_recover_fast_forwards_to_spooled_event(tmp_path: Path) -> None:
    first = Chainer.load(tmp_path, AGENT)
    events = [ev(s) for s in range(3)]
    for e in events:
        first.link(e)  # never saved: crash
    again = Chainer.load(tmp_path, AGENT)
    again.recover(events[-1])
    nxt = ev(3)
    again.link(nxt)
    assert nxt.chain_prev == events[-1].chain_hash


def test_chain_state_of_other_agent_is_refused(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    chainer.link(ev(0))
    chainer.save()
    with pytest.raises(IntegrityError, match="agent"):
        Chainer.load(tmp_path, "agent-2")


def test_sealed_batch_verifies_with_the_registered_key(tmp_path: Path) -> None:
    key = AgentKey.load_or_create(tmp_path)
    chainer = Chainer.load(tmp_path, AGENT)
    events = [ev(s) for s in range(10)]
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
    events = [ev(s) for s in range(3)]
    for e in events:
        chainer.link(e)
    events[1].original = "changed in the spool"
    with pytest.raises(IntegrityError, match="does not match"):
        seal(pb.Batch(agent_id=AGENT, events=events), key, now_unix_nano=1)
    with pytest.raises(IntegrityError, match="not linked"):
        seal(pb.Batch(agent_id=AGENT, events=[events[0], events[2]]), key, now_unix_nano=1)


def test_rewind_after_a_failed_spool_write(tmp_path: Path) -> None:
    chainer = Chainer.load(tmp_path, AGENT)
    chainer.link(ev(1))
    before = chainer.snapshot()
    chainer.link(ev(2))  # the spool write of 2 fails: sequence 2 is reused
    chainer.rewind(before)
    again = ev(2)
    again.original = "another record"
    chainer.link(again)
    assert chainer.head_sequence == 2 and again.chain_prev == before[1]
