"""The verdicts of `crm-audit verify`, each rule stated once, and the ranges they are
reported in. Verdicts are per stream: an agent's format 1 history (one chain per agent,
reported under the agent id) and each of its format 2 streams (``agent:stream``, judged
on its own from its genesis, from signed material only: `collector.verify.signed`).
Every sequence ends up in exactly one kind of range (where the checks
reach several for one sequence, the first in `PRECEDENCE` wins: MISSING, EXPIRED,
ALTERED, REORDERED, SEAL_INVALID, INSERTED, TAIL_TRUNCATED, CHAIN_BREAK, SEAL_MISSING,
UNVERIFIABLE, GAP_AT_SOURCE, PENDING, VALID), and each finding names the indices of
the documents it was reached from:

    VALID           signed, chained, every field as signed (format 2: the stored bytes
                    hash to the event hash the seal signed for that sequence)
    MISSING         a seal (or heartbeat seal, or the chain head record) proves the
                    event existed and it is not there, and it is not EXPIRED
    EXPIRED         as MISSING, but from signed facts only. Format 1: a signed
                    retention record (written by the collector before it deleted the
                    index, or for a deletion ISM made; signature checked with the
                    collector keys passed) lists the sequence among those its deleted
                    index held, and the index was not deleted before its retention ended
                    (--retention-days). Format 2: the seal's signed newest event time is
                    more than --retention-days before now, or a signed retention record
                    covers the sequence, its index held events up to at least that
                    signed time and was deleted after it (+ --retention-days). Unsigned
                    seal fields (``seal.indices``, the searchable time range) count for
                    nothing
    ALTERED         stored bytes or searchable fields differ from what was signed
                    (format 2: a document stored under the sequence whose bytes do not
                    hash to the signed hash, while no document carries the signed one);
                    or two signed seals disagree; or a signed anchor's head — checkpoint,
                    receipt — differs from the signed head at its sequence (either
                    format; the unsigned chain head record differing is
                    CHAIN_HEAD_ALTERED, not this: `collector.verify.vouch`)
    INSERTED        a document that no valid seal covers (and not PENDING), or a second
                    document for a sequence: the one a valid seal covers is the one
                    under that sequence and ``_id`` in the index dated by its signed
                    event time; the other is INSERTED, both indices named
    REORDERED       the signed content is intact but sits under another sequence / _id
    CHAIN_BREAK     the seal (or heartbeat seal) does not continue the chain where the
                    seal before it by sequence ended: its ``prev_chain_head`` (a
                    heartbeat: its restated head) is not the chain head at the sequence
                    before its first one (see "Seal links" in `collector.verify.checks`)
    TAIL_TRUNCATED  a signed checkpoint, a signed receipt exported by the agent
                    (``--receipts``), or the chain head record attests sequences
                    beyond the last one found, and neither a seal nor a document of them
                    is left
    GAP_AT_SOURCE   the agent itself recorded a loss (event flagged gap_at_source)
    SEAL_MISSING    events present and chained into the next seal, but their own seal
                    was deleted; after the last seal (past the grace period, either
                    format): they chain from the last signed head into a head a signed
                    checkpoint or receipt attests (never the unsigned chain head record)
    SEAL_INVALID    a seal whose signature does not verify, with an unregistered key, or
                    whose searchable fields differ from its signed bytes
    UNVERIFIABLE    an event directly after a missing one (its predecessor's hash is
                    gone, so its own bytes cannot be checked)
    PENDING         not a finding: after the last valid seal, the run of documents that
                    continues it sequence by sequence, each stored as the collector
                    stores it and ingested (``event.ingested``, unsigned) within
                    ``--grace`` of now — a live stream whose seal is not searchable yet.
                    Past the grace period the same documents are INSERTED (SEAL_MISSING
                    where a signed anchor vouches for them).

Findings about a stream as a whole (no sequence range; `collector.verify.anchors`),
each makes the run exit 1 like any finding:

    MISSING_STREAM        a registered (or named) agent with no stream at all: no event,
                          no seal, no chain head record
    AGENT_RESTARTED       a stream of an agent after its first one (the format 1 history
                          first, then format 2 streams by the signed time of their first
                          seal): the agent started again without its state, or another
                          machine uses its key. Both streams are judged on their own;
                          the restart itself is what an auditor must see
    CHECKPOINT_MISSING    checkpoints configured, none attests this agent / stream
    CHECKPOINT_TRUNCATED  the checkpoints attest less than a previous run saw (--state)
    RECEIPT_AHEAD         a signed receipt (``--receipts``) attests a higher sequence of
                          the stream than the signed checkpoints (checkpoints truncated
                          or not written); the sequences beyond what OpenSearch holds
                          are TAIL_TRUNCATED
    CHAIN_HEAD_ALTERED    the stream's chain head record (unsigned, in
                          ``{prefix}-chainheads``; either format) states a head the signed seals
                          contradict at its sequence. The record is what was edited,
                          not the event it names: that event keeps its own verdict
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

VALID = "VALID"
MISSING = "MISSING"
EXPIRED = "EXPIRED"
ALTERED = "ALTERED"
INSERTED = "INSERTED"
REORDERED = "REORDERED"
CHAIN_BREAK = "CHAIN_BREAK"
TAIL_TRUNCATED = "TAIL_TRUNCATED"
GAP_AT_SOURCE = "GAP_AT_SOURCE"
SEAL_MISSING = "SEAL_MISSING"
SEAL_INVALID = "SEAL_INVALID"
UNVERIFIABLE = "UNVERIFIABLE"
PENDING = "PENDING"

# Exactly one verdict per sequence: where the checks reach several for one sequence,
# the first of this list wins (`resolve`). Findings come before what is not a finding,
# what a signature proves before what is inferred.
PRECEDENCE = (
    MISSING,
    EXPIRED,
    ALTERED,
    REORDERED,
    SEAL_INVALID,
    INSERTED,
    TAIL_TRUNCATED,
    CHAIN_BREAK,
    SEAL_MISSING,
    UNVERIFIABLE,
    GAP_AT_SOURCE,
    PENDING,
    VALID,
)
# Not findings: a report of only these is VALID (exit 0).
NOT_FINDINGS = frozenset({VALID, PENDING})


@dataclass(frozen=True)
class Range:
    """One contiguous run of sequences of one kind."""

    kind: str
    first: int
    last: int
    detail: str = ""
    # The indices of the documents this verdict was reached from (event documents, the
    # seal); empty for VALID, where naming every index would only repeat the layout.
    indices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "first": self.first,
            "last": self.last,
            "detail": self.detail,
            "indices": list(self.indices),
        }


def joined(tail: Range, last: int, indices: tuple[str, ...]) -> Range:
    """`tail` extended to `last`, naming the indices of both."""
    named = (
        tail.indices
        if set(indices) <= set(tail.indices)
        else tuple(sorted(set(tail.indices) | set(indices)))
    )
    return Range(tail.kind, tail.first, max(tail.last, last), tail.detail, named)


def resolve(ranges: Sequence[Range]) -> list[Range]:
    """One verdict per sequence: where ranges overlap, the kind first in `PRECEDENCE`
    wins there (ties: the range added first). Adjacent pieces of one kind and detail
    are joined. A sweep over the ranges' ends: memory grows with the number of ranges,
    not with the sequences they span."""
    rank = {kind: i for i, kind in enumerate(PRECEDENCE)}
    ordered = sorted(enumerate(ranges), key=lambda item: item[1].first)
    points = sorted({r.first for r in ranges} | {r.last + 1 for r in ranges})
    active: list[tuple[int, int, Range]] = []  # heap of (rank, order, range)
    out: list[Range] = []
    nxt = 0
    for i, point in enumerate(points[:-1]):
        while nxt < len(ordered) and ordered[nxt][1].first <= point:
            order, r = ordered[nxt]
            heapq.heappush(active, (rank.get(r.kind, len(rank)), order, r))
            nxt += 1
        while active and active[0][2].last < point:
            heapq.heappop(active)
        if not active:
            continue
        best = active[0][2]
        stop = points[i + 1] - 1
        if out:
            tail = out[-1]
            if tail.kind == best.kind and tail.detail == best.detail and tail.last + 1 == point:
                out[-1] = joined(tail, stop, best.indices)
                continue
        out.append(Range(best.kind, point, stop, best.detail, best.indices))
    return out
