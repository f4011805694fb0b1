"""proto.integrity: canonical bytes, chain, seal signing and batch verification."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import integrity as it
from proto.v1 import audit_pb2 as pb

AGENT = "agent-1"


def event(seq: int, **fields: object) -> pb.AuditEvent:
    e = pb.AuditEvent(
        sequence=seq,
        observer=pb.Observer(agent_id=AGENT, hostname="h"),
        time_unix_nano=1_700_000_000_000_000_000 + seq,
        action="login",
        user=pb.User(name="alice", roles=["a", "b"]),
        original=f'{{"n": {seq}}}',
        attributes={"z": "1", "a": "2", "m": "3"},
    )
    for key, value in fields.items():
        setattr(e, key, value)
    return e


def sealed_batch(
    key: Ed25519PrivateKey, seqs: range, prev: bytes | None = None
) -> tuple[pb.Batch, bytes]:
    head = it.genesis(AGENT) if prev is None else prev
    batch = pb.Batch(batch_id=1, agent_id=AGENT)
    start = head
    for seq in seqs:
        e = event(seq)
        e.chain_prev = head
        head = it.chain_link(head, it.canonical_event_bytes(e))
        e.chain_hash = head
        batch.events.append(e)
    batch.seal.CopyFrom(
        pb.Seal(
            agent_id=AGENT,
            first_sequence=seqs[0],
            last_sequence=seqs[-1],
            prev_chain_head=start,
            chain_head=head,
            event_count=len(seqs),
            time_unix_nano=5,
        )
    )
    it.sign_seal(batch.seal, key)
    return batch, head


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {it.key_id(key.public_key()): key.public_key()}


def test_canonical_bytes_ignore_chain_fields_and_map_order() -> None:
    a = event(1)
    b = pb.AuditEvent()
    b.CopyFrom(a)
    b.chain_hash = b"x" * 32
    b.chain_prev = b"y" * 32
    assert it.canonical_event_bytes(a) == it.canonical_event_bytes(b)
    # map insertion order does not matter (deterministic serialization sorts keys)
    c = event(1)
    c.attributes.clear()
    for k in ("m", "a", "z"):
        c.attributes[k] = {"z": "1", "a": "2", "m": "3"}[k]
    assert it.canonical_event_bytes(a) == it.canonical_event_bytes(c)
    # and the bytes round-trip to the same event
    assert pb.AuditEvent.FromString(it.canonical_event_bytes(b)) == a


def test_chain_link_definition() -> None:
    prev = it.genesis(AGENT)
    assert prev == hashlib.sha256(b"crm-audit/genesis/v1\0agent-1").digest()
    data = it.canonical_event_bytes(event(0))
    assert (
        it.chain_link(prev, data) == hashlib.sha256(b"crm-audit/chain/v1\0" + prev + data).digest()
    )
    with pytest.raises(ValueError, match="32 bytes"):
        it.chain_link(b"short", data)
    assert it.genesis("agent-2") != prev


def test_valid_batch_verifies(key: Ed25519PrivateKey) -> None:
    batch, head = sealed_batch(key, range(0, 5))
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert verdict.authentic, verdict.findings
    assert verdict.hashes[-1] == head
    assert len(verdict.canonical) == 5


def test_unsealed_batch_is_a_finding(key: Ed25519PrivateKey) -> None:
    batch, _ = sealed_batch(key, range(3, 6))
    batch.ClearField("seal")
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert [(f.kind, f.first, f.last) for f in verdict.findings] == [(it.UNSEALED, 3, 5)]
    assert len(verdict.canonical) == 3 and not verdict.authentic


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [
        (lambda b: setattr(b.events[2], "action", "logout"), it.EVENT_HASH_MISMATCH),
        (lambda b: b.events.pop(), it.COUNT_MISMATCH),
        (lambda b: setattr(b.seal, "last_sequence", 9), it.BAD_SIGNATURE),
        (lambda b: setattr(b.seal, "agent_id", "agent-2"), it.AGENT_MISMATCH),
        (lambda b: setattr(b.seal, "key_id", "00" * 32), it.UNKNOWN_KEY),
        (lambda b: setattr(b.seal, "signature", b"\0" * 64), it.BAD_SIGNATURE),
        (lambda b: setattr(b.seal, "signature", b"\0" * 3), it.MALFORMED_SEAL),
    ],
)
def test_tampered_batch_is_caught(key: Ed25519PrivateKey, tamper: object, kind: str) -> None:
    batch, _ = sealed_batch(key, range(0, 5))
    tamper(batch)  # type: ignore[operator]
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert not verdict.authentic
    assert verdict.findings[0].kind == kind, verdict.findings


def test_swapped_events_are_caught(key: Ed25519PrivateKey) -> None:
    batch, _ = sealed_batch(key, range(0, 4))
    a, b = pb.AuditEvent(), pb.AuditEvent()
    a.CopyFrom(batch.events[1])
    b.CopyFrom(batch.events[2])
    batch.events[1].CopyFrom(b)
    batch.events[2].CopyFrom(a)
    kinds = {f.kind for f in it.verify_batch(batch, AGENT, keys(key)).findings}
    assert it.NOT_CONTIGUOUS in kinds


def test_heartbeat_seal(key: Ed25519PrivateKey) -> None:
    head = it.genesis(AGENT)
    batch = pb.Batch(
        agent_id=AGENT,
        seal=pb.Seal(
            agent_id=AGENT, prev_chain_head=head, chain_head=head, event_count=0, time_unix_nano=1
        ),
    )
    it.sign_seal(batch.seal, key)
    assert it.verify_batch(batch, AGENT, keys(key)).authentic
    batch.seal.chain_head = b"\1" * 32
    it.sign_seal(batch.seal, key)
    assert it.verify_batch(batch, AGENT, keys(key)).findings[0].kind == it.MALFORMED_SEAL


def test_load_public_keys_reads_several() -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pem = it.public_key_pem(k1.public_key()) + it.public_key_pem(k2.public_key())
    loaded = it.load_public_keys(pem)
    assert [it.key_id(k) for k in loaded] == [
        it.key_id(k1.public_key()),
        it.key_id(k2.public_key()),
    ]
    with pytest.raises(ValueError):
        it.load_public_keys(b"nothing")


_KEY = Ed25519PrivateKey.generate()
_BATCH, _ = sealed_batch(_KEY, range(10, 14))
_CANON = [it.canonical_event_bytes(e) for e in _BATCH.events]


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, 3),
    position=st.integers(0, 10_000),
    delta=st.integers(1, 255),
)
def test_any_single_byte_change_breaks_the_chain(which: int, position: int, delta: int) -> None:
    """Flip one byte of one event's canonical bytes: the sealed head no longer matches."""
    data = bytearray(_CANON[which])
    data[position % len(data)] = (data[position % len(data)] + delta) % 256
    head = _BATCH.seal.prev_chain_head
    for index, original in enumerate(_CANON):
        head = it.chain_link(head, bytes(data) if index == which else original)
    assert head != _BATCH.seal.chain_head


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10_000), delta=st.integers(1, 255))
def test_any_single_byte_change_of_the_seal_breaks_the_signature(position: int, delta: int) -> None:
    data = bytearray(it.seal_signing_bytes(_BATCH.seal))
    data[position % len(data)] = (data[position % len(data)] + delta) % 256
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        _KEY.public_key().verify(_BATCH.seal.signature, bytes(data))
