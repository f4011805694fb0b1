"""Integrity rules shared by agent and collector: canonical bytes, hash chain, seals.

Defined once here; the agent produces with them, the collector checks at ingest and
`crm-audit verify` checks again later from what OpenSearch holds.

**Canonical event bytes.** A copy of the `AuditEvent` with ``chain_hash`` and
``chain_prev`` cleared (the chain fields are derived from the bytes, so they cannot be
part of them), serialized with ``SerializeToString(deterministic=True)``: known fields
in field-number order, map entries sorted by key, proto3 defaults omitted, unknown
fields (from a newer peer) kept and appended. Every other field counts, including
``observer.agent_id`` as the agent wrote it and ``original``. Nothing in an
`AuditEvent` is set by the collector, so the bytes the collector stores are exactly
the bytes the agent hashed.

**Chain.** Per agent, in sequence order::

    genesis(agent)  = SHA-256("crm-audit/genesis/v1\\0" || agent_id UTF-8)
    chain_n         = SHA-256("crm-audit/chain/v1\\0" || chain_{n-1} || canonical_n)

where chain_{n-1} is the previous event's chain hash, or the genesis value for the
agent's very first event. Sequences are consecutive integers (no holes).

**Seal.** `audit.proto` `Seal`: agent id, key id, first/last sequence, previous and new
chain head, event count, time; signed with the agent's Ed25519 key over
``"crm-audit/seal/v1\\0" || Seal(signature cleared).SerializeToString(deterministic)``.
A seal with ``event_count == 0`` is a heartbeat: it restates the current head
(``prev_chain_head == chain_head``, ``first_sequence == last_sequence``).

**Key id.** Lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.

This module imports only `proto.v1`, `cryptography` and `hashlib`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from proto.v1 import audit_pb2

DOMAIN_GENESIS = b"crm-audit/genesis/v1\0"
DOMAIN_CHAIN = b"crm-audit/chain/v1\0"
DOMAIN_SEAL = b"crm-audit/seal/v1\0"
HASH_LEN = 32
SIGNATURE_LEN = 64

#: Flag of an event the agent emits to record a loss it could not avoid.
FLAG_GAP_AT_SOURCE = "gap_at_source"

# Finding kinds of `verify_batch` (one word each, stable: they end up in alerts).
UNSEALED = "unsealed"
AGENT_MISMATCH = "agent_mismatch"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
MALFORMED_SEAL = "malformed_seal"
COUNT_MISMATCH = "count_mismatch"
RANGE_MISMATCH = "range_mismatch"
NOT_CONTIGUOUS = "not_contiguous"
CHAIN_MISMATCH = "chain_mismatch"
EVENT_HASH_MISMATCH = "event_hash_mismatch"


def canonical_event_bytes(event: audit_pb2.AuditEvent) -> bytes:
    """The bytes the chain hashes for `event` (see the module docstring)."""
    if not event.chain_hash and not event.chain_prev:
        return event.SerializeToString(deterministic=True)
    bare = audit_pb2.AuditEvent()
    bare.CopyFrom(event)
    bare.ClearField("chain_hash")
    bare.ClearField("chain_prev")
    return bare.SerializeToString(deterministic=True)


def genesis(agent_id: str) -> bytes:
    """The chain value before an agent's first event."""
    return hashlib.sha256(DOMAIN_GENESIS + agent_id.encode("utf-8")).digest()


def chain_link(prev: bytes, event_bytes: bytes) -> bytes:
    """chain_n from chain_{n-1} and the canonical bytes of event n."""
    if len(prev) != HASH_LEN:
        raise ValueError(f"previous chain hash must be {HASH_LEN} bytes, got {len(prev)}")
    digest = hashlib.sha256(DOMAIN_CHAIN)
    digest.update(prev)
    digest.update(event_bytes)
    return digest.digest()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Lowercase hex SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_keys(pem: bytes) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM text (one file may hold old and new keys).

    Raises ValueError when a block is not an Ed25519 public key or there is none.
    """
    keys: list[Ed25519PublicKey] = []
    marker = b"-----END PUBLIC KEY-----"
    for chunk in pem.split(marker):
        if b"-----BEGIN" not in chunk:
            continue
        key = serialization.load_pem_public_key(chunk.strip() + b"\n" + marker + b"\n")
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        keys.append(key)
    if not keys:
        raise ValueError("no PEM public key found")
    return keys


def seal_signing_bytes(seal: audit_pb2.Seal) -> bytes:
    """Domain-separated canonical bytes of `seal` (signature excluded)."""
    bare = audit_pb2.Seal()
    bare.CopyFrom(seal)
    bare.ClearField("signature")
    return DOMAIN_SEAL + bare.SerializeToString(deterministic=True)


def sign_seal(seal: audit_pb2.Seal, key: Ed25519PrivateKey) -> None:
    """Set ``key_id`` and ``signature`` of `seal`."""
    seal.key_id = key_id(key.public_key())
    seal.signature = key.sign(seal_signing_bytes(seal))


def signature_valid(seal: audit_pb2.Seal, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(seal.signature, seal_signing_bytes(seal))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Finding:
    """One problem with a batch or seal: what, over which sequences, why."""

    kind: str
    first: int
    last: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} [{self.first}-{self.last}]: {self.detail}"


@dataclass
class BatchVerdict:
    """The outcome of `verify_batch`.

    ``canonical`` and ``hashes`` hold, per event in batch order, its canonical bytes
    and the chain hash recomputed from the seal's ``prev_chain_head`` (empty when the
    batch is unsealed or the seal could not be used). ``authentic`` is True only when
    the seal's signature verified with a key registered for the agent and every chain
    check passed: only then may the collector advance the agent's chain head.
    """

    canonical: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    signature_ok: bool = False

    @property
    def authentic(self) -> bool:
        return self.signature_ok and not self.findings


def check_seal(
    seal: audit_pb2.Seal, agent_id: str, keys: Mapping[str, Ed25519PublicKey]
) -> list[Finding]:
    """Identity, key and signature checks of one seal (no events involved).

    `keys` maps key id to public key, holding only keys registered for `agent_id`.
    """
    first, last = seal.first_sequence, seal.last_sequence
    if seal.agent_id != agent_id:
        return [
            Finding(
                AGENT_MISMATCH,
                first,
                last,
                f"seal names agent {seal.agent_id!r}, the sender is {agent_id!r}",
            )
        ]
    if (
        len(seal.signature) != SIGNATURE_LEN
        or len(seal.chain_head) != HASH_LEN
        or len(seal.prev_chain_head) != HASH_LEN
    ):
        return [Finding(MALFORMED_SEAL, first, last, "signature or chain head of wrong length")]
    key = keys.get(seal.key_id)
    if key is None:
        return [
            Finding(
                UNKNOWN_KEY,
                first,
                last,
                f"key {seal.key_id[:16]}... is not registered for agent {agent_id!r}",
            )
        ]
    if not signature_valid(seal, key):
        return [Finding(BAD_SIGNATURE, first, last, "Ed25519 signature does not verify")]
    if seal.event_count == 0 and (
        seal.prev_chain_head != seal.chain_head or seal.first_sequence != seal.last_sequence
    ):
        return [Finding(MALFORMED_SEAL, first, last, "heartbeat seal must not move the head")]
    return []


def verify_batch(
    batch: audit_pb2.Batch, agent_id: str, keys: Mapping[str, Ed25519PublicKey]
) -> BatchVerdict:
    """Check the seal of `batch` and recompute its chain (no continuity with the past).

    Every event's canonical bytes are computed even for unsealed batches (the collector
    stores them). Findings name the sequences they concern.
    """
    events: Sequence[audit_pb2.AuditEvent] = batch.events
    verdict = BatchVerdict(canonical=[canonical_event_bytes(e) for e in events])
    lo = events[0].sequence if events else 0
    hi = events[-1].sequence if events else 0
    if not batch.HasField("seal"):
        if events:
            verdict.findings.append(Finding(UNSEALED, lo, hi, "batch carries no seal"))
        return verdict
    seal = batch.seal
    problems = check_seal(seal, agent_id, keys)
    if problems:
        verdict.findings.extend(problems)
        return verdict
    verdict.signature_ok = True
    if seal.event_count != len(events):
        verdict.findings.append(
            Finding(
                COUNT_MISMATCH,
                seal.first_sequence,
                seal.last_sequence,
                f"seal counts {seal.event_count} events, batch has {len(events)}",
            )
        )
        return verdict
    if not events:
        return verdict
    if (lo, hi) != (seal.first_sequence, seal.last_sequence):
        verdict.findings.append(
            Finding(
                RANGE_MISMATCH,
                lo,
                hi,
                f"seal covers {seal.first_sequence}-{seal.last_sequence}, batch holds {lo}-{hi}",
            )
        )
        return verdict
    for before, after in itertools.pairwise(events):
        if after.sequence != before.sequence + 1:
            verdict.findings.append(
                Finding(
                    NOT_CONTIGUOUS,
                    before.sequence,
                    after.sequence,
                    f"sequence {after.sequence} follows {before.sequence}",
                )
            )
            return verdict
    prev = seal.prev_chain_head
    for event, data in zip(events, verdict.canonical, strict=True):
        current = chain_link(prev, data)
        if event.chain_hash and event.chain_hash != current:
            verdict.findings.append(
                Finding(
                    EVENT_HASH_MISMATCH,
                    event.sequence,
                    event.sequence,
                    "the event's chain_hash differs from the recomputed one",
                )
            )
        verdict.hashes.append(current)
        prev = current
    if prev != seal.chain_head:
        verdict.findings.append(
            Finding(
                CHAIN_MISMATCH,
                lo,
                hi,
                "chain recomputed over the events does not end at the sealed head",
            )
        )
    return verdict


__all__ = [
    "DOMAIN_CHAIN",
    "DOMAIN_GENESIS",
    "DOMAIN_SEAL",
    "FLAG_GAP_AT_SOURCE",
    "BatchVerdict",
    "Finding",
    "canonical_event_bytes",
    "chain_link",
    "check_seal",
    "genesis",
    "key_id",
    "load_public_keys",
    "public_key_pem",
    "raw_public_key",
    "seal_signing_bytes",
    "sign_seal",
    "signature_valid",
    "verify_batch",
]
