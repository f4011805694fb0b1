"""proto.integrity stream format 2: streams, event hashes, head chain, v2 seals, receipts.

The pinned vectors fix the format: an implementation in another language (or a later
refactor here) must reproduce them byte for byte, so a change to any of them is a new
format version, never an edit of these constants.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import integrity as it
from proto.v1 import audit_pb2 as pb

AGENT = "agent-1"
STREAM = "0123456789abcdef"
# A fixed key so that the vectors include a signature (Ed25519 is deterministic).
SEED = bytes(range(32))


def event(seq: int, stream: str = STREAM, **fields: object) -> pb.AuditEvent:
    e = pb.AuditEvent(
        sequence=seq,
        stream_id=stream,
        observer=pb.Observer(agent_id=AGENT, hostname="h"),
        time_unix_nano=1_700_000_000_000_000_000 + seq,
        observed_unix_nano=1_700_000_000_500_000_000,
        action="login",
        user=pb.User(name="alice", roles=["a", "b"]),
        original=f'{{"n": {seq}}}',
        attributes={"z": "1", "a": "2"},
    )
    for key, value in fields.items():
        setattr(e, key, value)
    return e


def sealed_v2(
    key: Ed25519PrivateKey, seqs: range, prev: bytes | None = None, stream: str = STREAM
) -> pb.Batch:
    head = it.genesis_v2(AGENT, stream) if prev is None else prev
    events = [event(s, stream) for s in seqs]
    data = [it.event_bytes_v2(e) for e in events]
    hashes = [it.event_hash(d) for d in data]
    lo, hi = it.event_time_range(events)
    seal = pb.Seal(
        format_version=2,
        agent_id=AGENT,
        stream_id=stream,
        first_sequence=seqs[0],
        last_sequence=seqs[-1],
        prev_chain_head=head,
        chain_head=it.heads_over(head, hashes)[-1],
        event_count=len(seqs),
        event_hashes=hashes,
        min_event_time_unix_nano=lo,
        max_event_time_unix_nano=hi,
        time_unix_nano=5,
    )
    it.sign_seal(seal, key)
    return pb.Batch(batch_id=1, agent_id=AGENT, format_version=2, event_bytes=data, seal=seal)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


def keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {it.key_id(key.public_key()): key.public_key()}


def test_pinned_vectors(key: Ed25519PrivateKey) -> None:
    e1 = it.event_bytes_v2(event(1))
    assert hashlib.sha256(e1).hexdigest() == VECTOR_EVENT_BYTES_SHA256
    assert it.event_hash(e1).hex() == VECTOR_EVENT_HASH
    assert it.genesis_v2(AGENT, STREAM).hex() == VECTOR_GENESIS
    batch = sealed_v2(key, range(1, 4))
    assert batch.seal.chain_head.hex() == VECTOR_HEAD_3
    assert batch.seal.signature.hex() == VECTOR_SEAL_SIGNATURE
    receipt = pb.Receipt(
        agent_id=AGENT,
        stream_id=STREAM,
        last_sequence=3,
        head=batch.seal.chain_head,
        received_unix_nano=7,
    )
    it.sign_receipt(receipt, key)
    assert receipt.signature.hex() == VECTOR_RECEIPT_SIGNATURE


def test_formulas_match_the_documented_definitions() -> None:
    data = it.event_bytes_v2(event(1))
    assert it.event_hash(data) == hashlib.sha256(b"crm-audit/event/v2\0" + data).digest()
    g = hashlib.sha256(b"crm-audit/genesis/v2\0agent-1\0" + STREAM.encode()).digest()
    assert it.genesis_v2(AGENT, STREAM) == g
    h = it.event_hash(data)
    assert it.head_link(g, h) == hashlib.sha256(b"crm-audit/head/v2\0" + g + h).digest()
    # a v2 seal is signed under its own domain, never the v1 one
    seal = pb.Seal(format_version=2, agent_id=AGENT, signature=b"x" * 64)
    assert it.seal_signing_bytes(seal).startswith(b"crm-audit/seal/v2\0")
    assert it.seal_signing_bytes(pb.Seal(agent_id=AGENT)).startswith(b"crm-audit/seal/v1\0")


def test_streams_of_one_agent_start_from_different_genesis() -> None:
    assert it.genesis_v2(AGENT, STREAM) != it.genesis_v2(AGENT, "fedcba9876543210")
    assert it.genesis_v2(AGENT, STREAM) != it.genesis(AGENT)
    assert it.valid_stream_id(it.new_stream_id())
    assert it.new_stream_id() != it.new_stream_id()
    assert not it.valid_stream_id("0123456789ABCDEF")
    assert not it.valid_stream_id("")


def test_v2_event_bytes_refuse_chain_fields() -> None:
    with pytest.raises(ValueError, match="chain_hash"):
        it.event_bytes_v2(event(1, chain_hash=b"x" * 32))


def test_effective_time_falls_back_to_observed() -> None:
    e = event(1, time_unix_nano=0)
    assert it.effective_time(e) == e.observed_unix_nano
    assert it.event_time_range([event(2), e, event(5)]) == (
        event(2).time_unix_nano,
        e.observed_unix_nano,
    )
    assert it.event_time_range([]) == (0, 0)


def test_genuine_v2_batch_is_authentic(key: Ed25519PrivateKey) -> None:
    batch = sealed_v2(key, range(1, 6))
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert verdict.authentic, verdict.findings
    assert verdict.format_version == 2
    assert verdict.stream_id == STREAM
    assert [e.sequence for e in verdict.events] == [1, 2, 3, 4, 5]
    assert verdict.canonical == list(batch.event_bytes)
    assert verdict.event_hashes == list(batch.seal.event_hashes)
    assert verdict.hashes[-1] == batch.seal.chain_head
    assert it.seal_heads_consistent(batch.seal)


def test_next_batch_continues_from_the_sealed_head(key: Ed25519PrivateKey) -> None:
    first = sealed_v2(key, range(1, 4))
    second = sealed_v2(key, range(4, 7), prev=first.seal.chain_head)
    assert it.verify_batch(second, AGENT, keys(key)).authentic
    # the head depends only on the hashes, not on how the events were cut into batches
    whole = sealed_v2(key, range(1, 7))
    assert whole.seal.chain_head == second.seal.chain_head


def test_altered_event_is_named_by_its_own_signed_hash(key: Ed25519PrivateKey) -> None:
    batch = sealed_v2(key, range(1, 6))
    altered = event(3)
    altered.user.name = "mallory"
    batch.event_bytes[2] = it.event_bytes_v2(altered)
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert not verdict.authentic
    assert [(f.kind, f.first, f.last) for f in verdict.findings] == [(it.EVENT_HASH_MISMATCH, 3, 3)]


def test_signed_fields_cannot_be_changed(key: Ed25519PrivateKey) -> None:
    for name, value in (
        ("stream_id", "fedcba9876543210"),
        ("min_event_time_unix_nano", 1),
        ("max_event_time_unix_nano", 1 << 62),
        ("chain_head", b"\0" * 32),
    ):
        batch = sealed_v2(key, range(1, 4))
        setattr(batch.seal, name, value)
        verdict = it.verify_batch(batch, AGENT, keys(key))
        assert not verdict.signature_ok, name
    batch = sealed_v2(key, range(1, 4))
    batch.seal.event_hashes[1] = b"\1" * 32
    assert not it.verify_batch(batch, AGENT, keys(key)).signature_ok


def test_events_of_another_stream_are_refused(key: Ed25519PrivateKey) -> None:
    batch = sealed_v2(key, range(1, 4))
    batch.event_bytes[1] = it.event_bytes_v2(event(2, stream="fedcba9876543210"))
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert [f.kind for f in verdict.findings] == [it.STREAM_MISMATCH]


def test_garbage_event_bytes_are_a_finding_not_a_crash(key: Ed25519PrivateKey) -> None:
    batch = sealed_v2(key, range(1, 4))
    batch.event_bytes[0] = b"\xff\xff\xff"
    verdict = it.verify_batch(batch, AGENT, keys(key))
    assert [f.kind for f in verdict.findings] == [it.MALFORMED_EVENT]


def test_v2_heartbeat_and_malformed_seals(key: Ed25519PrivateKey) -> None:
    head = sealed_v2(key, range(1, 3)).seal.chain_head
    beat = pb.Seal(
        format_version=2,
        agent_id=AGENT,
        stream_id=STREAM,
        first_sequence=2,
        last_sequence=2,
        prev_chain_head=head,
        chain_head=head,
    )
    it.sign_seal(beat, key)
    batch = pb.Batch(batch_id=2, agent_id=AGENT, format_version=2, seal=beat)
    assert it.verify_batch(batch, AGENT, keys(key)).authentic
    wrong = pb.Seal()
    wrong.CopyFrom(beat)
    wrong.min_event_time_unix_nano = 3
    wrong.max_event_time_unix_nano = 3
    it.sign_seal(wrong, key)
    assert [f.kind for f in it.check_seal(wrong, AGENT, keys(key))] == [it.MALFORMED_SEAL]
    short = sealed_v2(key, range(1, 4)).seal
    del short.event_hashes[-1]
    it.sign_seal(short, key)
    assert [f.kind for f in it.check_seal(short, AGENT, keys(key))] == [it.MALFORMED_SEAL]


def test_receipt_signature(key: Ed25519PrivateKey) -> None:
    receipt = pb.Receipt(agent_id=AGENT, stream_id=STREAM, last_sequence=9, head=b"h" * 32)
    it.sign_receipt(receipt, key)
    assert it.receipt_valid(receipt, keys(key))
    receipt.last_sequence = 8
    assert not it.receipt_valid(receipt, keys(key))
    other = Ed25519PrivateKey.generate()
    assert not it.receipt_valid(receipt, keys(other))


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=1, max_value=9))
def test_any_batch_cut_reaches_the_same_head(cut: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    whole = sealed_v2(key, range(1, 11))
    left = sealed_v2(key, range(1, cut + 1))
    right = sealed_v2(key, range(cut + 1, 11), prev=left.seal.chain_head)
    assert right.seal.chain_head == whole.seal.chain_head
    assert it.verify_batch(right, AGENT, keys(key)).authentic


VECTOR_EVENT_BYTES_SHA256 = "bacbaa04d33efee392c207d2714ad03cb59d28c1b964547c44a6cfceff59858e"
VECTOR_EVENT_HASH = "2cc654d83fd54cada2cd514f306e2f8c80ac1de0a8b157630bc7766288d7f93a"
VECTOR_GENESIS = "416babe2984c0ef4bddc8613246d3b1a69b4c9ae2dc68e78d1805a5616da687d"
VECTOR_HEAD_3 = "878a99a24063bcb16fd73d937f9e5b60f6a0f00686ace258c6e19636754a69e3"
VECTOR_SEAL_SIGNATURE = (
    "0e8edbfcdb327397ee5f0e6162a58d35594ba0d39cfc6650f3216bf97804f09f"
    "95a14276c1c5158292d05ffa2cba73843c600132c6a103f2f3b36f7f93874804"
)
VECTOR_RECEIPT_SIGNATURE = (
    "1b5b3fa6ec5a3e24ad6ee8c45d4a7ac4d0ed347044c8c15a3f7981a6d68a774c"
    "fe654afe332f766741f4c7deb529ba7de38239cf645033f203610662e4a94008"
)
