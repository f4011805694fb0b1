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

**Stream format 2** (``Batch.format_version == 2``, ``Seal.format_version == 2``). One
version for three changes that touch the same bytes (docs/design/stream-format-v2.md):

- *Streams.* An agent's stream id (16 hex characters, ``AuditEvent.stream_id``) names
  one incarnation of its state; sequences, chains, seals and ids are per stream, so an
  agent that lost its state starts a new stream instead of colliding with the old one.
- *Bytes through.* The agent serializes an event once (deterministically, chain fields
  unset) and those bytes are what is hashed, spooled, shipped (``Batch.event_bytes``)
  and stored; nobody re-serializes them::

      event_hash_n = SHA-256("crm-audit/event/v2\\0" || event_bytes_n)
      head_0       = SHA-256("crm-audit/genesis/v2\\0" || agent_id || "\\0" || stream_id)
      head_n       = SHA-256("crm-audit/head/v2\\0" || head_{n-1} || event_hash_n)

  The head runs over event hashes, so it is recomputed from signed material alone.
- *What seals sign.* A v2 seal adds the stream id, every event's hash in sequence
  order and the events' event-time range, signed over ``"crm-audit/seal/v2\\0" ||
  Seal(signature cleared)``. A verifier names each altered, missing, inserted or
  reordered event by comparing it with its own signed hash, trusting no stored
  per-event field, and decides EXPIRED from the signed time range.

**Receipt.** The collector's Ed25519 signature over ``"crm-audit/receipt/v1\\0" ||
Receipt(signature cleared)``: the stream head it verified itself.

This module imports only `proto.v1`, `cryptography` and `hashlib`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from google.protobuf.message import DecodeError

from proto.v1 import audit_pb2

DOMAIN_GENESIS = b"crm-audit/genesis/v1\0"
DOMAIN_CHAIN = b"crm-audit/chain/v1\0"
DOMAIN_SEAL = b"crm-audit/seal/v1\0"
DOMAIN_EVENT_V2 = b"crm-audit/event/v2\0"
DOMAIN_GENESIS_V2 = b"crm-audit/genesis/v2\0"
DOMAIN_HEAD_V2 = b"crm-audit/head/v2\0"
DOMAIN_SEAL_V2 = b"crm-audit/seal/v2\0"
DOMAIN_RECEIPT = b"crm-audit/receipt/v1\0"
FORMAT_V1 = 1
FORMAT_V2 = 2
STREAM_ID_LEN = 16  # hex characters (8 random bytes)
_STREAM_ID = re.compile(r"[0-9a-f]{16}")
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
STREAM_MISMATCH = "stream_mismatch"
TIME_RANGE_MISMATCH = "time_range_mismatch"
MALFORMED_EVENT = "malformed_event"


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


def new_stream_id() -> str:
    """A fresh stream id: 8 random bytes as 16 lowercase hex characters."""
    return os.urandom(STREAM_ID_LEN // 2).hex()


def valid_stream_id(stream_id: str) -> bool:
    return _STREAM_ID.fullmatch(stream_id) is not None


def seal_format(seal: audit_pb2.Seal) -> int:
    """The stream format a seal was made under (absent or 0 means 1)."""
    return FORMAT_V2 if seal.format_version == FORMAT_V2 else FORMAT_V1


def event_bytes_v2(event: audit_pb2.AuditEvent) -> bytes:
    """The one serialization of a v2 event: deterministic, chain fields unset.

    Raises ValueError when the event carries v1 chain fields (they are not part of v2).
    """
    if event.chain_hash or event.chain_prev:
        raise ValueError("a stream format 2 event carries no chain_hash/chain_prev")
    return event.SerializeToString(deterministic=True)


def event_hash(event_bytes: bytes) -> bytes:
    """event_hash_n of a v2 event from its serialized bytes."""
    return hashlib.sha256(DOMAIN_EVENT_V2 + event_bytes).digest()


def genesis_v2(agent_id: str, stream_id: str) -> bytes:
    """head_0 of one stream of an agent."""
    return hashlib.sha256(
        DOMAIN_GENESIS_V2 + agent_id.encode("utf-8") + b"\0" + stream_id.encode("ascii")
    ).digest()


def head_link(prev: bytes, hash_of_event: bytes) -> bytes:
    """head_n from head_{n-1} and event_hash_n."""
    if len(prev) != HASH_LEN or len(hash_of_event) != HASH_LEN:
        raise ValueError(f"head and event hash must be {HASH_LEN} bytes each")
    return hashlib.sha256(DOMAIN_HEAD_V2 + prev + hash_of_event).digest()


def heads_over(prev: bytes, hashes: Sequence[bytes]) -> list[bytes]:
    """head_n after each of `hashes`, starting from `prev`."""
    heads: list[bytes] = []
    for h in hashes:
        prev = head_link(prev, h)
        heads.append(prev)
    return heads


def effective_time(event: EventFacts) -> int:
    """The time an event is filed under: when it happened, else when it was read.

    The collector's ``@timestamp`` and index month, and a seal's signed time range, use
    this same value, so a verifier can judge from a seal which index held its events.
    """
    return event.time_unix_nano or event.observed_unix_nano


def event_time_range(events: Sequence[EventFacts]) -> tuple[int, int]:
    """(min, max) effective time over `events`; (0, 0) for none."""
    if not events:
        return (0, 0)
    times = [effective_time(e) for e in events]
    return (min(times), max(times))


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
    """Domain-separated canonical bytes of `seal` (signature excluded), per its format."""
    bare = audit_pb2.Seal()
    bare.CopyFrom(seal)
    bare.ClearField("signature")
    domain = DOMAIN_SEAL_V2 if seal_format(seal) == FORMAT_V2 else DOMAIN_SEAL
    return domain + bare.SerializeToString(deterministic=True)


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


def receipt_signing_bytes(receipt: audit_pb2.Receipt) -> bytes:
    bare = audit_pb2.Receipt()
    bare.CopyFrom(receipt)
    bare.ClearField("signature")
    return DOMAIN_RECEIPT + bare.SerializeToString(deterministic=True)


def sign_receipt(receipt: audit_pb2.Receipt, key: Ed25519PrivateKey) -> None:
    """Set ``key_id`` and ``signature`` of `receipt` (the collector's checkpoint key)."""
    receipt.key_id = key_id(key.public_key())
    receipt.signature = key.sign(receipt_signing_bytes(receipt))


def receipt_valid(receipt: audit_pb2.Receipt, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """True when `receipt` is signed by one of `keys` (key id → collector public key)."""
    key = keys.get(receipt.key_id)
    if key is None or len(receipt.signature) != SIGNATURE_LEN:
        return False
    try:
        key.verify(receipt.signature, receipt_signing_bytes(receipt))
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


class EventFacts(Protocol):
    """What the seal and chain checks read of an event: an `AuditEvent` has it, and so
    does what a `Scanner` returns."""

    @property
    def sequence(self) -> int: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def time_unix_nano(self) -> int: ...
    @property
    def observed_unix_nano(self) -> int: ...


class Scanner(Protocol):
    """Reads a format 2 batch's event bytes faster than `AuditEvent.ParseFromString`
    (the collector's compiled kernel, ``collector.native``): each event's facts and
    `event_hash`, or None when any bytes do not decode (they are then parsed here, which
    names the error). It must refuse whatever the protobuf decoder refuses."""

    def __call__(
        self, datas: list[bytes], domain: bytes, /
    ) -> tuple[Sequence[EventFacts], list[bytes]] | None: ...


@dataclass
class BatchVerdict:
    """The outcome of `verify_batch`.

    ``canonical`` and ``hashes`` hold, per event in batch order, its canonical bytes
    and the chain hash (v2: the stream head after it) recomputed from the seal's
    ``prev_chain_head`` (empty when the batch is unsealed or the seal could not be
    used). ``facts`` are what the checks read of every event that parsed, ``events``
    the events as objects whatever the format, except for a format 2 batch read by a
    `Scanner` (empty then: `event_at` parses one on demand); ``event_hashes`` (v2
    only) each event's own hash. ``authentic`` is True only when the seal's signature
    verified with a key registered for the agent and every chain check passed: only
    then may the collector advance the stream's head.
    """

    canonical: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    signature_ok: bool = False
    events: list[audit_pb2.AuditEvent] = field(default_factory=list)
    event_hashes: list[bytes] = field(default_factory=list)
    format_version: int = FORMAT_V1
    stream_id: str = ""
    facts: Sequence[EventFacts] = field(default_factory=list)

    def event_at(self, position: int) -> audit_pb2.AuditEvent:
        """The event at `position` (of those that parsed) as an object."""
        if self.events:
            return self.events[position]
        return audit_pb2.AuditEvent.FromString(self.canonical[position])

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
    if seal_format(seal) == FORMAT_V2:
        return _check_seal_v2_shape(seal)
    return []


def _check_seal_v2_shape(seal: audit_pb2.Seal) -> list[Finding]:
    """What a signed v2 seal must also satisfy to be usable."""
    first, last = seal.first_sequence, seal.last_sequence
    if not valid_stream_id(seal.stream_id):
        return [Finding(MALFORMED_SEAL, first, last, f"stream id {seal.stream_id!r} is invalid")]
    if len(seal.event_hashes) != seal.event_count or any(
        len(h) != HASH_LEN for h in seal.event_hashes
    ):
        return [Finding(MALFORMED_SEAL, first, last, "event hash list does not match the count")]
    if seal.event_count and (
        last - first + 1 != seal.event_count
        or seal.min_event_time_unix_nano > seal.max_event_time_unix_nano
    ):
        return [Finding(MALFORMED_SEAL, first, last, "sequence or time range is inconsistent")]
    if seal.event_count == 0 and (seal.min_event_time_unix_nano or seal.max_event_time_unix_nano):
        return [Finding(MALFORMED_SEAL, first, last, "a heartbeat seal has no time range")]
    return []


def seal_heads_consistent(seal: audit_pb2.Seal) -> bool:
    """True when a v2 seal's head is the head chain over its own signed event hashes."""
    prev = seal.prev_chain_head
    for h in seal.event_hashes:
        prev = head_link(prev, h)
    return prev == seal.chain_head


def _sequences_match_seal(
    seal: audit_pb2.Seal, events: Sequence[EventFacts], findings: list[Finding]
) -> bool:
    """True when the batch's events must be checked further against the seal: they are
    exactly its consecutive range (both formats). False for a heartbeat (no events,
    nothing more to check) or after appending the one finding that says what is wrong."""
    if seal.event_count != len(events):
        findings.append(
            Finding(
                COUNT_MISMATCH,
                seal.first_sequence,
                seal.last_sequence,
                f"seal counts {seal.event_count} events, batch has {len(events)}",
            )
        )
        return False
    if not events:
        return False
    lo, hi = events[0].sequence, events[-1].sequence
    if (lo, hi) != (seal.first_sequence, seal.last_sequence):
        findings.append(
            Finding(
                RANGE_MISMATCH,
                lo,
                hi,
                f"seal covers {seal.first_sequence}-{seal.last_sequence}, batch holds {lo}-{hi}",
            )
        )
        return False
    for before, after in itertools.pairwise(events):
        if after.sequence != before.sequence + 1:
            findings.append(
                Finding(
                    NOT_CONTIGUOUS,
                    before.sequence,
                    after.sequence,
                    f"sequence {after.sequence} follows {before.sequence}",
                )
            )
            return False
    return True


def verify_batch(
    batch: audit_pb2.Batch,
    agent_id: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    scanner: Scanner | None = None,
) -> BatchVerdict:
    """Check the seal of `batch` and recompute its chain (no continuity with the past).

    Every event's canonical bytes are computed even for unsealed batches (the collector
    stores them). Findings name the sequences they concern. `scanner` reads a format 2
    batch's events (see `Scanner`); without one they are parsed here.
    """
    if batch.format_version == FORMAT_V2:
        return _verify_batch_v2(batch, agent_id, keys, scanner)
    events: Sequence[audit_pb2.AuditEvent] = batch.events
    verdict = BatchVerdict(
        canonical=[canonical_event_bytes(e) for e in events], events=list(events)
    )
    verdict.facts = verdict.events
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
    if not _sequences_match_seal(seal, events, verdict.findings):
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


def _parse_events_v2(
    batch: audit_pb2.Batch, verdict: BatchVerdict, scanner: Scanner | None
) -> bool:
    """Fill ``verdict.facts/events/canonical/event_hashes`` from the batch's event
    bytes (with `scanner`: ``facts`` but no ``events``)."""
    if scanner is not None:
        datas = list(batch.event_bytes)
        scanned = scanner(datas, DOMAIN_EVENT_V2)
        if scanned is not None:
            verdict.facts, verdict.event_hashes = scanned
            verdict.canonical = datas
            return True
    verdict.facts = verdict.events
    for index, data in enumerate(batch.event_bytes):
        event = audit_pb2.AuditEvent()
        try:
            event.ParseFromString(data)
        except DecodeError as exc:
            verdict.findings.append(
                Finding(MALFORMED_EVENT, 0, 0, f"event #{index} of the batch does not parse: {exc}")
            )
            return False
        verdict.events.append(event)
        verdict.canonical.append(data)
        verdict.event_hashes.append(event_hash(data))
    return True


def _verify_batch_v2(
    batch: audit_pb2.Batch,
    agent_id: str,
    keys: Mapping[str, Ed25519PublicKey],
    scanner: Scanner | None,
) -> BatchVerdict:
    verdict = BatchVerdict(format_version=FORMAT_V2)
    if batch.events:
        verdict.findings.append(
            Finding(MALFORMED_EVENT, 0, 0, "a format 2 batch carries events as objects")
        )
        return verdict
    if not _parse_events_v2(batch, verdict, scanner):
        return verdict
    events = verdict.facts
    lo = events[0].sequence if events else 0
    hi = events[-1].sequence if events else 0
    streams = {e.stream_id for e in events}
    if batch.HasField("seal"):
        streams.add(batch.seal.stream_id)
    if len(streams) > 1 or any(not valid_stream_id(s) for s in streams):
        verdict.findings.append(
            Finding(STREAM_MISMATCH, lo, hi, f"events and seal name streams {sorted(streams)}")
        )
        return verdict
    verdict.stream_id = next(iter(streams), "")
    if not batch.HasField("seal"):
        if events:
            verdict.findings.append(Finding(UNSEALED, lo, hi, "batch carries no seal"))
        return verdict
    seal = batch.seal
    if seal_format(seal) != FORMAT_V2:
        verdict.findings.append(
            Finding(MALFORMED_SEAL, lo, hi, "a format 2 batch carries a format 1 seal")
        )
        return verdict
    problems = check_seal(seal, agent_id, keys)
    if problems:
        verdict.findings.extend(problems)
        return verdict
    verdict.signature_ok = True
    if not _sequences_match_seal(seal, events, verdict.findings):
        return verdict
    for event, mine, signed in zip(events, verdict.event_hashes, seal.event_hashes, strict=True):
        if mine != signed:
            verdict.findings.append(
                Finding(
                    EVENT_HASH_MISMATCH,
                    event.sequence,
                    event.sequence,
                    "the event's bytes differ from the ones its seal signed",
                )
            )
    if verdict.findings:
        return verdict
    if event_time_range(events) != (seal.min_event_time_unix_nano, seal.max_event_time_unix_nano):
        verdict.findings.append(
            Finding(TIME_RANGE_MISMATCH, lo, hi, "the seal's time range differs from the events'")
        )
    verdict.hashes = heads_over(seal.prev_chain_head, verdict.event_hashes)
    if verdict.hashes[-1] != seal.chain_head:
        verdict.findings.append(
            Finding(
                CHAIN_MISMATCH,
                lo,
                hi,
                "head recomputed over the events does not end at the sealed head",
            )
        )
    return verdict


__all__ = [
    "DOMAIN_CHAIN",
    "DOMAIN_GENESIS",
    "DOMAIN_SEAL",
    "DOMAIN_SEAL_V2",
    "FLAG_GAP_AT_SOURCE",
    "FORMAT_V1",
    "FORMAT_V2",
    "BatchVerdict",
    "EventFacts",
    "Finding",
    "Scanner",
    "canonical_event_bytes",
    "chain_link",
    "check_seal",
    "effective_time",
    "event_bytes_v2",
    "event_hash",
    "event_time_range",
    "genesis",
    "genesis_v2",
    "head_link",
    "heads_over",
    "key_id",
    "load_public_keys",
    "new_stream_id",
    "public_key_pem",
    "raw_public_key",
    "receipt_signing_bytes",
    "receipt_valid",
    "seal_format",
    "seal_heads_consistent",
    "seal_signing_bytes",
    "sign_receipt",
    "sign_seal",
    "signature_valid",
    "valid_stream_id",
    "verify_batch",
]
