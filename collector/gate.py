"""Collector-side integrity: checks before ack, seals, alerts and per-agent chain heads.

For every batch (after the certificate identity check in `collector.server`):

1. `proto.integrity.verify_batch` checks the seal (agent id = certificate CN, key
   registered for that agent in ``integrity.keys_dir``, Ed25519 signature) and
   recomputes the chain over the received events.
2. The events are indexed as always, each with its canonical bytes (base64, stored,
   not indexed: ``integrity.canonical``) and recomputed chain hash
   (``integrity.chain_hash``) — nothing is dropped, whatever the findings.
3. The seal goes to ``{prefix}-seals`` (raw signed bytes plus searchable fields and the
   indices its events were written to: that is how `verify` tells EXPIRED from MISSING).
4. Only an authentic seal moves the agent's chain head in ``{prefix}-chainheads`` (one
   document per agent, written with ``if_seq_no``/``if_primary_term`` so two collectors
   cannot fork it). Continuity with the stored head is checked: gap, fork, unknown start.
   A new stream of a known agent raises ``agent_restarted_without_state``, unless it
   is an upgrade: its first event is the continuation event (proto.continuation) and
   the agent's stored format 1 chain head is where that event says the history ended.
5. Every finding becomes a document in ``{prefix}-alerts`` naming agent, range, reason
   (deterministic ``_id``: a resent batch does not duplicate its alerts).

Unsealed batches (agents older than the seal) are accepted and alerted ``unsealed``
unless ``integrity.require_seal`` is set, in which case they are rejected.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from collector import native
from collector.documents import EVENTS_MAPPING, Document, iso_nanos
from collector.errors import RetryableIndexingError
from collector.index import BulkIndexer, IndexRequest, Requester
from collector.keys import KeyRing
from collector.verified import VerifiedHeads
from proto import integrity
from proto.continuation import MalformedClaim, claim
from proto.v1 import audit_pb2

log = logging.getLogger(__name__)

# Kinds the collector adds to those of `proto.integrity`.
GAP = "gap"
FORK = "fork"
UNKNOWN_START = "unknown_start"
RESTARTED = "agent_restarted_without_state"
#: How a chain head names an agent's stream format 1 chain as the previous "stream".
V1_CHAIN = "v1"


def seals_index(prefix: str) -> str:
    return f"{prefix}-seals"


def alerts_index(prefix: str) -> str:
    return f"{prefix}-alerts"


def chainheads_index(prefix: str) -> str:
    return f"{prefix}-chainheads"


def forks_index(prefix: str) -> str:
    """Where a re-delivered event that differs from the stored one is kept (never dropped)."""
    return f"{prefix}-forks"


def head_id(agent_id: str, stream_id: str = "") -> str:
    """``_id`` of a chain head: ``agent`` (stream format 1) or ``agent:stream`` (format 2)."""
    return f"{agent_id}:{stream_id}" if stream_id else agent_id


_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE: dict[str, Any] = {"type": "date_nanos"}
_LONG: dict[str, Any] = {"type": "unsigned_long"}
_BIN: dict[str, Any] = {"type": "binary"}

SEALS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "agent": {"properties": {"id": _KW}},
        "seal": {
            "properties": {
                "first_sequence": _LONG,
                "last_sequence": _LONG,
                "event_count": {"type": "long"},
                "prev_chain_head": _KW,
                "chain_head": _KW,
                "key_id": _KW,
                "heartbeat": {"type": "boolean"},
                "received": _DATE,
                "indices": _KW,
                "verified": {"type": "boolean"},
                # The Seal message exactly as signed (serialized, signature included).
                "raw": _BIN,
                # Stream format 2, copied from the signed seal (searchable; verify trusts
                # only what it decodes from raw): stream id, format, event-time range.
                "stream": _KW,
                "format_version": {"type": "integer"},
                "min_event_time": _DATE,
                "max_event_time": _DATE,
            }
        },
    },
}

ALERTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "agent": {"properties": {"id": _KW, "stream": _KW}},
        "alert": {
            "properties": {
                "kind": _KW,
                "first_sequence": _LONG,
                "last_sequence": _LONG,
                "reason": {"type": "text"},
                "batch_id": _LONG,
                "peer": _KW,
            }
        },
    },
}

CHAINHEADS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "agent": {"properties": {"id": _KW, "stream": _KW}},
        "chain": {
            "properties": {
                "sequence": _LONG,
                "head": _KW,
                "key_id": _KW,
                "heartbeat": _DATE,
                # Stream format 2: when this collector first saw the stream, and the
                # agent's stream before it ("v1": its format 1 chain) with its last sequence.
                "first_seen": _DATE,
                "previous_stream": _KW,
                "previous_sequence": _LONG,
            }
        },
    },
}


def integrity_indices(prefix: str) -> dict[str, dict[str, Any]]:
    """Name -> mapping of the single (not time-cut) integrity indices.

    Seals are kept in one index without an ISM policy: they must outlive the longest
    event retention (they are what proves a range expired rather than vanished).
    """
    return {
        seals_index(prefix): SEALS_MAPPING,
        alerts_index(prefix): ALERTS_MAPPING,
        chainheads_index(prefix): CHAINHEADS_MAPPING,
        # Same layout as the events: a fork is an event like any other, kept aside.
        forks_index(prefix): EVENTS_MAPPING,
    }


def event_integrity_fields(
    canonical: bytes,
    chain_hash: bytes | None,
    event_hash: bytes | None = None,
    *,
    inline_bytes: bool = True,
) -> dict[str, Any]:
    """An event document's ``integrity`` fields. `inline_bytes`: the signed bytes are
    stored in it (``canonical``); false for a format 2 event whose bytes are stored
    once per batch (`collector.batchbytes`)."""
    fields: dict[str, Any] = {}
    if inline_bytes:
        fields["canonical"] = b2a_base64(canonical, newline=False).decode("ascii")
    if chain_hash:
        fields["chain_hash"] = chain_hash.hex()
    if event_hash:
        fields["event_hash"] = event_hash.hex()
    return fields


def seal_stream(seal: audit_pb2.Seal) -> str:
    """The stream a seal belongs to: its stream id in format 2, "" in format 1."""
    return seal.stream_id if integrity.seal_format(seal) == integrity.FORMAT_V2 else ""


def seal_id(agent_id: str, seal: audit_pb2.Seal) -> str:
    stream = seal_stream(seal)
    owner = f"{agent_id}:{stream}" if stream else agent_id
    if seal.event_count == 0:
        return f"{owner}:hb:{seal.time_unix_nano}:{seal.chain_head.hex()[:16]}"
    return f"{owner}:{seal.first_sequence}-{seal.last_sequence}:{seal.chain_head.hex()[:32]}"


def seal_document(
    agent_id: str,
    seal: audit_pb2.Seal,
    *,
    received_unix_nano: int,
    indices: Sequence[str],
    verified: bool,
) -> Document:
    doc: Document = {
        "@timestamp": iso_nanos(max(seal.time_unix_nano, 0)),
        "agent": {"id": agent_id},
        "seal": {
            "first_sequence": seal.first_sequence,
            "last_sequence": seal.last_sequence,
            "event_count": seal.event_count,
            "prev_chain_head": seal.prev_chain_head.hex(),
            "chain_head": seal.chain_head.hex(),
            "key_id": seal.key_id,
            "heartbeat": seal.event_count == 0,
            "received": iso_nanos(received_unix_nano),
            "indices": sorted(set(indices)),
            "verified": verified,
            "raw": base64.b64encode(seal.SerializeToString(deterministic=True)).decode("ascii"),
        },
    }
    if integrity.seal_format(seal) == integrity.FORMAT_V2:
        fields = doc["seal"]
        fields["stream"] = seal.stream_id
        fields["format_version"] = integrity.FORMAT_V2
        # date_nanos holds no time before 1970: such a (flagged) range stays in raw only.
        if seal.min_event_time_unix_nano > 0:
            fields["min_event_time"] = iso_nanos(seal.min_event_time_unix_nano)
        if seal.max_event_time_unix_nano > 0:
            fields["max_event_time"] = iso_nanos(seal.max_event_time_unix_nano)
    return doc


def alert_request(
    prefix: str,
    agent_id: str,
    finding: integrity.Finding,
    *,
    now_unix_nano: int,
    batch_id: int,
    peer: str,
    anchor: bytes = b"",
    stream_id: str = "",
) -> IndexRequest:
    """The alert document; its ``_id`` is stable across re-deliveries of the batch.

    A restart alert's ``_id`` names only the new stream: raised once per stream, whatever
    batch (or collector) first saw it and whatever time its text states.
    """
    if finding.kind == RESTARTED:
        doc_id = f"{agent_id}:{RESTARTED}:{stream_id}"
    else:
        digest = hashlib.sha256(
            f"{finding.kind}\0{finding.first}\0{finding.last}\0{finding.detail}".encode() + anchor
        ).hexdigest()[:16]
        owner = f"{agent_id}:{stream_id}" if stream_id else agent_id
        doc_id = f"{owner}:{finding.kind}:{finding.first}-{finding.last}:{digest}"
    agent: Document = {"id": agent_id}
    if stream_id:
        agent["stream"] = stream_id
    body: Document = {
        "@timestamp": iso_nanos(now_unix_nano),
        "agent": agent,
        "alert": {
            "kind": finding.kind,
            "first_sequence": finding.first,
            "last_sequence": finding.last,
            "reason": finding.detail,
            "batch_id": batch_id,
            "peer": peer,
        },
    }
    return IndexRequest(alerts_index(prefix), doc_id, body, agent_id=agent_id)


@dataclass(frozen=True)
class ChainHead:
    """The stored head of a chain (an agent's format 1 chain or one format 2 stream),
    plus the version for optimistic concurrency and what a stream records about itself."""

    sequence: int | None
    head: bytes
    seq_no: int
    primary_term: int
    first_seen: str = ""
    previous_stream: str | None = None
    previous_sequence: int | None = None


class ChainHeads:
    """Chain heads in ``{prefix}-chainheads``, one document per agent (format 1) or per
    stream (format 2, ``_id`` ``agent:stream``), so any collector can continue."""

    def __init__(self, request: Requester, prefix: str, *, max_attempts: int = 8) -> None:
        self.request = request
        self.index = chainheads_index(prefix)
        self.max_attempts = max_attempts
        # The last head this collector read or wrote per chain (keyed by head_id), with
        # its version. Only a conditional write can confirm it is still current (another
        # collector may have moved the head since), so it is a guess that saves the GET
        # before each write, never an answer on its own (see IntegrityGate._advance).
        self._known: dict[str, ChainHead] = {}

    def cached(self, agent_id: str, stream_id: str = "") -> ChainHead | None:
        """The head last read or written by this collector (possibly stale)."""
        return self._known.get(head_id(agent_id, stream_id))

    def get(self, agent_id: str, stream_id: str = "") -> ChainHead | None:
        key = head_id(agent_id, stream_id)
        response = self.request("GET", f"/{self.index}/_doc/{key}")
        if response.status == 404:
            self._known.pop(key, None)
            return None
        if response.status != 200:
            raise RetryableIndexingError(f"cannot read chain head of {key}: HTTP {response.status}")
        body = response.body
        chain = body.get("_source", {}).get("chain", {})
        sequence = chain.get("sequence")
        previous = chain.get("previous_sequence")
        head = ChainHead(
            int(sequence) if sequence is not None else None,
            bytes.fromhex(chain.get("head", "")),
            int(body["_seq_no"]),
            int(body["_primary_term"]),
            first_seen=str(chain.get("first_seen", "")),
            previous_stream=chain.get("previous_stream"),
            previous_sequence=int(previous) if previous is not None else None,
        )
        self._known[key] = head
        return head

    def put(
        self,
        agent_id: str,
        current: ChainHead | None,
        sequence: int | None,
        head: bytes,
        *,
        key_id: str,
        now_unix_nano: int,
        heartbeat_unix_nano: int | None = None,
        stream_id: str = "",
        previous: tuple[str, int | None] | None = None,
    ) -> bool:
        """Write the head; False when another collector changed it first (409).

        `previous` (a new stream only): the agent's stream before it and its last sequence.
        """
        key = head_id(agent_id, stream_id)
        chain: dict[str, Any] = {"head": head.hex(), "key_id": key_id}
        if sequence is not None:
            chain["sequence"] = sequence
        if heartbeat_unix_nano is not None:
            chain["heartbeat"] = iso_nanos(heartbeat_unix_nano)
        agent: dict[str, Any] = {"id": agent_id}
        stored = ChainHead(sequence, head, -1, -1)
        if stream_id:
            agent["stream"] = stream_id
            if current is not None:  # what a stream records about itself is kept
                previous = (
                    (current.previous_stream, current.previous_sequence)
                    if current.previous_stream is not None
                    else None
                )
            first_seen = current.first_seen if current and current.first_seen else ""
            chain["first_seen"] = first_seen or iso_nanos(now_unix_nano)
            stored = ChainHead(sequence, head, -1, -1, first_seen=chain["first_seen"])
            if previous is not None:
                chain["previous_stream"] = previous[0]
                if previous[1] is not None:
                    chain["previous_sequence"] = previous[1]
                stored = ChainHead(
                    sequence,
                    head,
                    -1,
                    -1,
                    first_seen=chain["first_seen"],
                    previous_stream=previous[0],
                    previous_sequence=previous[1],
                )
        body = {"@timestamp": iso_nanos(now_unix_nano), "agent": agent, "chain": chain}
        params = {"refresh": "false"}
        if current is None:
            params["op_type"] = "create"
        else:
            params["if_seq_no"] = str(current.seq_no)
            params["if_primary_term"] = str(current.primary_term)
        response = self.request("PUT", f"/{self.index}/_doc/{key}", body=body, params=params)
        if response.status == 409:
            self._known.pop(key, None)
            return False
        if response.status not in (200, 201):
            self._known.pop(key, None)
            raise RetryableIndexingError(
                f"cannot write chain head of {key}: HTTP {response.status}"
            )
        answer = response.body if isinstance(response.body, dict) else {}
        if "_seq_no" in answer and "_primary_term" in answer:
            self._known[key] = replace(
                stored, seq_no=int(answer["_seq_no"]), primary_term=int(answer["_primary_term"])
            )
        else:
            self._known.pop(key, None)
        return True

    def latest_other(self, agent_id: str, exclude: str) -> tuple[str, int | None] | None:
        """The agent's most recently moved chain other than `exclude` (a head_id):
        (stream id, `V1_CHAIN` for its format 1 chain; last sequence), or None if none.

        Asked only when a new stream starts, so the index is refreshed first: a chain
        head written a moment ago must not be missed (the restart alert depends on it).
        """
        self.request("POST", f"/{self.index}/_refresh")
        response = self.request(
            "POST",
            f"/{self.index}/_search",
            body={
                "size": 100,
                "query": {"term": {"agent.id": agent_id}},
                "sort": [{"@timestamp": "desc"}],
                "_source": ["agent", "chain.sequence"],
            },
            params={"ignore_unavailable": "true"},
        )
        if response.status != 200:
            raise RetryableIndexingError(
                f"cannot list the chain heads of {agent_id}: HTTP {response.status}"
            )
        for hit in response.body.get("hits", {}).get("hits", []):
            if hit.get("_id") == exclude:
                continue
            source = hit.get("_source", {})
            sequence = source.get("chain", {}).get("sequence")
            return (
                str(source.get("agent", {}).get("stream") or V1_CHAIN),
                int(sequence) if sequence is not None else None,
            )
        return None


def chain_genesis(agent_id: str, seal: audit_pb2.Seal) -> bytes:
    """The head before the first event of the chain `seal` belongs to."""
    stream = seal_stream(seal)
    return integrity.genesis_v2(agent_id, stream) if stream else integrity.genesis(agent_id)


def starts_stream(agent_id: str, seal: audit_pb2.Seal) -> bool:
    """Whether a format 2 seal is the start of its stream: its first events from the
    genesis, or a heartbeat before any event."""
    if not seal_stream(seal):
        return False
    genesis = chain_genesis(agent_id, seal)
    if seal.event_count == 0:
        return seal.chain_head == genesis
    return seal.first_sequence == 1 and seal.prev_chain_head == genesis


def continuity(
    agent_id: str,
    seal: audit_pb2.Seal,
    hashes: Sequence[bytes],
    current: ChainHead | None,
) -> tuple[list[integrity.Finding], tuple[int | None, bytes] | None, bool]:
    """Compare an authentic seal with the stored head of its chain (the agent's format 1
    chain or the seal's format 2 stream; the rules are the same, from its genesis).

    Returns (findings, new head or None to keep the stored one, whether the range is
    older than the stored head: a re-delivery that needs a look at the stored events).
    """
    first, last = seal.first_sequence, seal.last_sequence
    genesis = chain_genesis(agent_id, seal)
    if seal.event_count == 0:  # heartbeat
        if current is None:
            if seal.chain_head == genesis:
                return [], (None, genesis), False
            return (
                [
                    integrity.Finding(
                        UNKNOWN_START,
                        last,
                        last,
                        "heartbeat names a chain head this collector has never seen",
                    )
                ],
                None,
                False,
            )
        if current.sequence == (last if seal.chain_head != genesis else None):
            if current.head != seal.chain_head:
                return (
                    [integrity.Finding(FORK, last, last, "heartbeat head differs from stored")],
                    None,
                    False,
                )
            return [], (current.sequence, current.head), False
        return [], None, False  # events in flight or a delayed heartbeat: seals tell later
    if current is None:
        if seal.prev_chain_head == genesis:
            return [], (last, seal.chain_head), False
        return (
            [
                integrity.Finding(
                    UNKNOWN_START,
                    first,
                    last,
                    "first batch seen from this agent does not start at its genesis; "
                    "earlier events were never received or the chain head was lost",
                )
            ],
            (last, seal.chain_head),
            False,
        )
    stored = current.sequence
    if stored is None:  # only heartbeats so far
        if seal.prev_chain_head == genesis:
            return [], (last, seal.chain_head), False
        return (
            [
                integrity.Finding(
                    GAP, 0, first - 1 if first else 0, "events before this batch missing"
                )
            ],
            (last, seal.chain_head),
            False,
        )
    if stored == first - 1:
        if current.head == seal.prev_chain_head:
            return [], (last, seal.chain_head), False
        return (
            [
                integrity.Finding(
                    FORK,
                    first,
                    last,
                    f"batch does not continue the stored chain head at sequence {stored}",
                )
            ],
            (last, seal.chain_head),
            False,
        )
    if stored < first - 1:
        return (
            [
                integrity.Finding(
                    GAP,
                    stored + 1,
                    first - 1,
                    f"sequences {stored + 1}-{first - 1} were never received",
                )
            ],
            (last, seal.chain_head),
            False,
        )
    if stored <= last:
        if hashes[stored - first] != current.head:
            return (
                [
                    integrity.Finding(
                        FORK,
                        stored,
                        last,
                        f"events up to {stored} differ from those received before",
                    )
                ],
                # Format 2 keeps the stored events (the differing ones go to the forks
                # index), so a re-delivery ending at the stored head keeps that head too.
                None if seal_stream(seal) and stored == last else (last, seal.chain_head),
                False,
            )
        return [], ((last, seal.chain_head) if stored < last else None), False
    return [], None, True


def restart_finding(
    agent_id: str,
    seal: audit_pb2.Seal,
    previous: tuple[str, int | None],
    now_unix_nano: int,
    why_not_upgrade: str = "",
) -> integrity.Finding:
    """The alert of a known agent's new stream starting at its genesis."""
    when = seal.time_unix_nano if seal.time_unix_nano > 0 else now_unix_nano
    stream, sequence = previous
    return integrity.Finding(
        RESTARTED,
        seal.first_sequence,
        seal.last_sequence,
        f"agent {agent_id} restarted without state at {iso_nanos(when)}; previous stream "
        f"{stream} ended at sequence {sequence or 0}"
        + (f"; {why_not_upgrade}" if why_not_upgrade else ""),
    )


def upgrade_mismatch(
    first_event: audit_pb2.AuditEvent | None,
    previous: tuple[str, int | None],
    v1_head: ChainHead | None,
) -> str | None:
    """None when the new stream is not a continuation; "" when it continues the
    agent's format 1 chain exactly where that chain's stored head is; else why not.
    `previous` is the agent's most recently moved other chain: another format 2 stream
    there means the format 1 history did not end where this stream starts."""
    if first_event is None:
        return None
    try:
        stated = claim(first_event)
    except MalformedClaim as exc:
        return f"its first event claims to continue format 1 history, but {exc}"
    if stated is None:
        return None
    if previous[0] != V1_CHAIN:
        return (
            f"its first event claims to continue the {stated.describe()}, but stream "
            f"{previous[0]} came after that history"
        )
    found = stated.mismatch(
        v1_head.sequence if v1_head else None, v1_head.head if v1_head else None
    )
    return f"the continuation claim did not match: {found}" if found else ""


class IntegrityGate:
    """Runs the checks of the module docstring for `collector.server.BatchProcessor`."""

    def __init__(
        self,
        request: Requester,
        indexer: BulkIndexer,
        keyring: KeyRing,
        *,
        prefix: str,
        require_seal: bool = False,
        verified: VerifiedHeads | None = None,
    ) -> None:
        self.request = request
        self.indexer = indexer
        self.keyring = keyring
        self.prefix = prefix
        self.require_seal = require_seal
        self.heads = ChainHeads(request, prefix)
        # What checkpoints sign: only heads of authentic seals (collector.verified).
        self.verified = verified if verified is not None else VerifiedHeads()

    def verify(self, batch: audit_pb2.Batch, identity: str) -> integrity.BatchVerdict:
        return integrity.verify_batch(
            batch, identity, self.keyring.keys_for(identity), scanner=native.SCANNER
        )

    def after_indexing(
        self,
        batch: audit_pb2.Batch,
        verdict: integrity.BatchVerdict,
        *,
        identity: str,
        peer: str,
        indices: Sequence[str],
        last_doc: tuple[str, str] | None,
        now_unix_nano: int,
        extra: Sequence[integrity.Finding] = (),
    ) -> list[integrity.Finding]:
        """Store the seal, move the chain head, write alerts; return every finding.

        `extra`: findings of the caller's own (forks found while indexing).
        """
        findings = [*verdict.findings, *extra]
        writes: list[IndexRequest] = []
        if batch.HasField("seal") and batch.seal.agent_id == identity:
            writes.append(
                IndexRequest(
                    seals_index(self.prefix),
                    seal_id(identity, batch.seal),
                    seal_document(
                        identity,
                        batch.seal,
                        received_unix_nano=now_unix_nano,
                        indices=indices,
                        verified=verdict.authentic,
                    ),
                    agent_id=identity,
                )
            )
        if verdict.authentic:
            first_event = (
                verdict.event_at(0)
                if verdict.facts and verdict.format_version == integrity.FORMAT_V2
                else None
            )
            findings.extend(
                self._advance(
                    batch.seal, verdict.hashes, identity, last_doc, now_unix_nano, first_event
                )
            )
        anchor = batch.seal.chain_head if batch.HasField("seal") else b""
        for finding in findings:
            log.warning("integrity alert for agent %s (peer %s): %s", identity, peer, finding)
            writes.append(
                alert_request(
                    self.prefix,
                    identity,
                    finding,
                    now_unix_nano=now_unix_nano,
                    batch_id=batch.batch_id,
                    peer=peer,
                    anchor=anchor,
                    stream_id=verdict.stream_id,
                )
            )
        if writes:
            self.indexer.index(writes)
        return findings

    def _advance(
        self,
        seal: audit_pb2.Seal,
        hashes: Sequence[bytes],
        agent_id: str,
        last_doc: tuple[str, str] | None,
        now_unix_nano: int,
        first_event: audit_pb2.AuditEvent | None = None,
    ) -> list[integrity.Finding]:
        findings = self._move_head(seal, hashes, agent_id, last_doc, now_unix_nano, first_event)
        if any(f.kind == FORK for f in findings):
            # Two signed histories of the same sequences: the checkpoints keep attesting
            # the one received first until the chain moves on past it.
            return findings
        # The seal is authentic: its head is one this collector verified itself, whatever
        # the stored head said (gap or unknown start are alerts, not doubts about it).
        at_genesis = seal.event_count == 0 and seal.chain_head == chain_genesis(agent_id, seal)
        self.verified.record(
            agent_id,
            seal_stream(seal),
            None if at_genesis else seal.last_sequence,
            seal.chain_head,
        )
        return findings

    def _move_head(
        self,
        seal: audit_pb2.Seal,
        hashes: Sequence[bytes],
        agent_id: str,
        last_doc: tuple[str, str] | None,
        now_unix_nano: int,
        first_event: audit_pb2.AuditEvent | None = None,
    ) -> list[integrity.Finding]:
        """`first_event`: the batch's first verified event (format 2), which on a new
        stream may be the continuation event of an upgrade."""
        heartbeat = seal.time_unix_nano if seal.event_count == 0 else None
        stream = seal_stream(seal)
        cached = self.heads.cached(agent_id, stream)
        if cached is not None:
            # The common case, without a GET: the batch continues the head this collector
            # wrote last. The write is conditional on that head's version, so it succeeds
            # only if the head is still current. Any finding, a re-delivery or a refused
            # write is judged against the stored head below instead.
            findings, new, redelivery = continuity(agent_id, seal, hashes, cached)
            if (
                not findings
                and not redelivery
                and new is not None
                and self.heads.put(
                    agent_id,
                    cached,
                    new[0],
                    new[1],
                    key_id=seal.key_id,
                    now_unix_nano=now_unix_nano,
                    heartbeat_unix_nano=heartbeat,
                    stream_id=stream,
                )
            ):
                return findings
        for _ in range(self.heads.max_attempts):
            current = self.heads.get(agent_id, stream)
            findings, new, redelivery = continuity(agent_id, seal, hashes, current)
            if redelivery:
                if stream:  # format 2: each re-delivered event was compared on its 409
                    return []  # (collector.forks)
                return self._check_redelivery(seal, hashes, last_doc)
            if new is None:
                return findings
            previous = None
            if current is None and starts_stream(agent_id, seal):
                previous = self.heads.latest_other(agent_id, head_id(agent_id, stream))
                if previous is not None:
                    findings.extend(
                        self._restart(agent_id, seal, previous, now_unix_nano, first_event)
                    )
            if self.heads.put(
                agent_id,
                current,
                new[0],
                new[1],
                key_id=seal.key_id,
                now_unix_nano=now_unix_nano,
                heartbeat_unix_nano=heartbeat,
                stream_id=stream,
                previous=previous,
            ):
                return findings
        raise RetryableIndexingError(
            f"chain head of {head_id(agent_id, stream)}: too many concurrent updates"
        )

    def _restart(
        self,
        agent_id: str,
        seal: audit_pb2.Seal,
        previous: tuple[str, int | None],
        now_unix_nano: int,
        first_event: audit_pb2.AuditEvent | None,
    ) -> list[integrity.Finding]:
        """The restart alert of a new stream, or none for an upgrade from format 1."""
        starts_at_one = seal.first_sequence == 1 and first_event is not None
        v1_head = self.heads.get(agent_id) if starts_at_one and previous[0] == V1_CHAIN else None
        why = upgrade_mismatch(first_event if starts_at_one else None, previous, v1_head)
        if why == "":
            log.info(
                "agent %s moved from stream format 1 (ended at %d) to stream %s",
                agent_id,
                previous[1] or 0,
                seal_stream(seal),
            )
            return []
        return [restart_finding(agent_id, seal, previous, now_unix_nano, why or "")]

    def _check_redelivery(
        self, seal: audit_pb2.Seal, hashes: Sequence[bytes], last_doc: tuple[str, str] | None
    ) -> list[integrity.Finding]:
        """A range older than the stored head: the stored last event must be this one."""
        if last_doc is None or not hashes:
            return []
        index, doc_id = last_doc
        response = self.request(
            "GET", f"/{index}/_doc/{doc_id}", params={"_source": "integrity.chain_hash"}
        )
        if response.status == 404:
            return []  # not stored (any more): nothing to compare with
        if response.status != 200:
            # Skipping the comparison would let a forked re-delivery pass unseen: the
            # batch is retried instead, as when the chain head cannot be read.
            raise RetryableIndexingError(
                f"cannot compare the re-delivered range of {seal.agent_id} with "
                f"{index}/{doc_id}: HTTP {response.status}"
            )
        stored = response.body.get("_source", {}).get("integrity", {}).get("chain_hash")
        if stored and stored != hashes[-1].hex():
            return [
                integrity.Finding(
                    FORK,
                    seal.first_sequence,
                    seal.last_sequence,
                    "re-delivered range differs from the events stored under the same "
                    "sequences (the stored ones were kept)",
                )
            ]
        return []
