"""Checks of one stream format 2 stream, from signed material only.

A v2 seal, signed by the agent, lists the hash of every event it covers, in sequence
order, and its heads are the chain over those hashes (`proto.integrity`). So each
stored document is judged on its own: its hash is recomputed from its stored bytes
(``integrity.canonical``, or the batch document of its index that lists its sequence:
`collector.verify.batches`) and looked up among the signed hashes of the seal covering
its range. No stored per-event field (``integrity.chain_hash``, ``integrity.event_hash``,
the position of the previous document) decides anything: an attacker who re-encodes
one event and recomputes every stored chain field after it still gets exactly that one
event ALTERED.

Per sequence s of a seal's range (the verdict rules themselves are in
`collector.verify.verdicts`):

- the documents whose bytes hash to the signed hash of s carry the signed event s;
  the one stored under s and ``_id`` ``agent:stream:s`` in the index dated by the
  event's time is the genuine one, any other copy is an extra (INSERTED, both indices
  named); the genuine one under another sequence or ``_id`` is REORDERED;
- no document carries it: a document stored under s holds other bytes (ALTERED),
  none is stored under s (MISSING, or EXPIRED from the seal's signed time range);
- a document stored under s whose bytes hash to nothing the seal signed, while the
  signed event s is present, is an extra (INSERTED).

**Seal links.** A seal starting right after the covered part must carry the head
there as ``prev_chain_head``; the first seal of a stream (sequence 1) the stream's
genesis head (`proto.integrity.genesis_v2`). Otherwise CHAIN_BREAK over its range (its
events are still each compared with their signed hashes). Seals overlapping what is
covered (a re-cut batch) must agree with the heads known there, else ALTERED. Events
between two seals with no seal of their own whose hashes chain from the last head to
the next seal's ``prev_chain_head`` are SEAL_MISSING; otherwise INSERTED (documents)
and MISSING (no document). Heartbeats restating a head compare it with the head at
their sequence (CHAIN_BREAK when it differs).

**Continuation.** The event at sequence 1, when its stored bytes are the ones the seal
signed, may be an agent's claim to continue format 1 history (proto.continuation); it
is kept on the report for the verifier to judge against that history.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from collector.verify.checks import absent_runs
from collector.verify.fields import field_differences
from collector.verify.reading import Peekable, SealInfo, StoredEvent
from collector.verify.report import AgentReport
from collector.verify.verdicts import (
    ALTERED,
    CHAIN_BREAK,
    GAP_AT_SOURCE,
    INSERTED,
    MISSING,
    REORDERED,
    SEAL_INVALID,
    SEAL_MISSING,
    VALID,
    Range,
)
from collector.verify.vouch import judge_anchor, vouched_run
from collector.verify.walk import FIRST_SEQUENCE, Mark, SequenceWalk, keep_worse
from proto import integrity
from proto.continuation import MalformedClaim, claim
from proto.v1 import audit_pb2

if TYPE_CHECKING:
    from collector.verify.verifier import Verifier

_HEAD_MEMORY = 4096  # heads at recent seal ends, for overlapping seals and heartbeats


class StreamWalk(SequenceWalk):
    """State of one v2 stream's walk: how far valid seals cover and the head there.

    `attested` maps sequences that anchors (chain head record, checkpoints, receipts)
    vouch for to their (head, what attests it, index): the walk compares them with the
    signed heads as it passes (memory: one seal's hashes, not the stream's)."""

    def __init__(
        self,
        verifier: Verifier,
        agent: str,
        stream: str,
        out: AgentReport,
        attested: Mapping[int, list[tuple[bytes, str, str]]] | None = None,
    ) -> None:
        self.v = verifier
        self.agent = agent
        self.stream = stream
        self.out = out
        self.genesis = integrity.genesis_v2(agent, stream)
        self.covered_end: int | None = None
        self.head = self.genesis
        self.heads: OrderedDict[int, bytes] = OrderedDict()
        self.attested = dict(attested or {})
        self.breaks: list[Range] = []
        self.pending_heartbeats: dict[tuple[int, bytes], str] = {}
        self.heartbeat: tuple[int, bytes] | None = None
        self.tail_present: set[int] = set()
        self.started: int | None = None  # signed time of the seal of sequence 1

    # -- helpers -------------------------------------------------------------------

    def doc_id(self, seq: int) -> str:
        return f"{self.agent}:{self.stream}:{seq}"

    def _remember(self, seq: int, head: bytes) -> None:
        self.heads[seq] = head
        while len(self.heads) > _HEAD_MEMORY:
            self.heads.popitem(last=False)

    def _compare_attested(self, first: int, heads: list[bytes]) -> None:
        """Anchored heads within `first`.. against the signed heads there
        (`collector.verify.vouch.judge_anchor`)."""
        for seq in [s for s in self.attested if first <= s < first + len(heads)]:
            for head, what, index in self.attested.pop(seq):
                judge_anchor(self.out, seq, head, heads[seq - first], what, index)

    # -- seals ---------------------------------------------------------------------

    def seal(self, info: SealInfo, events: Peekable) -> None:
        seal = info.seal
        if not info.signed_ok:
            self.out.add(
                SEAL_INVALID, seal.first_sequence, seal.last_sequence, info.problem, (info.index,)
            )
            return
        if seal.stream_id != self.stream or integrity.seal_format(seal) != integrity.FORMAT_V2:
            self.out.add(
                SEAL_INVALID,
                seal.first_sequence,
                seal.last_sequence,
                f"signed for stream {seal.stream_id!r} (format {seal.format_version})",
                (info.index,),
            )
            return
        if info.problem:
            # Signed content intact, the document beside it edited: the seal document is
            # the finding; its signed hashes still judge the events (a worse verdict wins).
            self.out.add(
                SEAL_INVALID, seal.first_sequence, seal.last_sequence, info.problem, (info.index,)
            )
        if seal.event_count == 0:
            self._heartbeat(info)
            return
        first, last = seal.first_sequence, seal.last_sequence
        heads = integrity.heads_over(seal.prev_chain_head, list(seal.event_hashes))
        end = self.covered_end
        broken = ""
        start = first
        if end is not None and first <= end:
            # Overlaps what earlier seals covered (a re-cut batch): it must agree.
            before = self.heads.get(first - 1)
            known = [(s, self.heads.get(s)) for s in range(first, min(last, end) + 1)]
            if (before is not None and before != seal.prev_chain_head) or any(
                h is not None and h != heads[s - first] for s, h in known
            ):
                self.out.add(
                    ALTERED, first, last, "two signed seals disagree on this range", (info.index,)
                )
                return
            if last <= end:
                return
            start = end + 1
        else:
            expect = FIRST_SEQUENCE if end is None else end + 1
            gap = self._take(events, first - 1)
            if end is not None:
                gap = [e for e in gap if e.position >= expect]
            if not self._unsealed_run(expect, first - 1, gap, seal.prev_chain_head):
                anchor = self.genesis if end is None else self.head
                at = "its genesis" if end is None else f"the head at sequence {end}"
                if first == expect and seal.prev_chain_head != anchor:
                    broken = (
                        f"seal {first}-{last} continues head {seal.prev_chain_head.hex()[:16]}, "
                        f"not {at}"
                    )
        if first == FIRST_SEQUENCE and self.started is None:
            self.started = seal.time_unix_nano
        docs = self._take(events, last)
        self._judge(info, start, docs, broken)
        self._compare_attested(first, heads)
        self.advance(last, seal.chain_head)

    def advance(self, last: int, head: bytes) -> None:
        """A valid seal covered up to `last`, signed head `head` there: heartbeats that
        restate a head within the covered part are compared now."""
        self.covered_end = last
        self.head = head
        self._remember(last, head)
        self._check_heartbeats()

    def resume(self, end: int, head: bytes) -> None:
        """Start after sequence `end`, as if valid seals covered 1..`end` contiguously
        with the signed head `head` there (a range of the stream verified on its own,
        `collector.verify.ranges`). Heartbeats are not this walk's: the caller
        compares them over all the seals."""
        self.covered_end = end
        self.head = head
        self._remember(end, head)

    def heartbeat_seal(self, info: SealInfo) -> None:
        """A valid heartbeat seal (no events): remembered, compared once covered."""
        self._heartbeat(info)

    def _heartbeat(self, info: SealInfo) -> None:
        seal = info.seal
        if seal.chain_head == self.genesis:
            return  # before the stream's first event: nothing to link to
        if self.heartbeat is None or seal.last_sequence >= self.heartbeat[0]:
            self.heartbeat = (seal.last_sequence, seal.chain_head)
        self.pending_heartbeats[(seal.last_sequence, seal.chain_head)] = info.index
        self._check_heartbeats()

    def _check_heartbeats(self) -> None:
        end = self.covered_end
        if end is None:
            return
        for seq, head in [k for k in self.pending_heartbeats if k[0] <= end]:
            index = self.pending_heartbeats.pop((seq, head))
            known = self.heads.get(seq)
            if known is not None and known != head:
                self.breaks.append(
                    Range(
                        CHAIN_BREAK,
                        seq,
                        seq,
                        f"heartbeat seal restates head {head.hex()[:16]} at sequence {seq}, "
                        f"the signed chain has {known.hex()[:16]}",
                        (index,),
                    )
                )

    def _unsealed_run(
        self, start: int, stop: int, events: list[StoredEvent], target: bytes
    ) -> bool:
        """Events between the covered part and the next seal (no seal of their own).

        True when they chain (by their own hashes) from the last head to the next
        seal's ``prev_chain_head``: that seal vouches for them, SEAL_MISSING. Otherwise
        they are INSERTED and the sequences without a document MISSING; False.
        """
        if stop < start and not events:
            return False
        by_position: dict[int, list[StoredEvent]] = {}
        for e in events:
            by_position.setdefault(e.position, []).append(e)
        prev = self.head
        for seq in range(start, stop + 1):
            hashes = [e.event_hash for e in by_position.get(seq, []) if e.event_hash]
            if not hashes:
                break
            prev = integrity.head_link(prev, hashes[0] or b"")
        else:
            if events and prev == target:
                for seq in range(start, stop + 1):
                    used = by_position[seq][0]
                    self.out.add(
                        SEAL_MISSING, seq, seq, "events chain into the next seal", (used.index,)
                    )
                    for extra in by_position[seq][1:]:
                        self.out.add(INSERTED, seq, seq, _extra(extra, used), _both(extra, used))
                return True
        for e in events:
            self.out.add(
                INSERTED, e.position, e.position, "not covered by any valid seal", (e.index,)
            )
        window = self.v.time_from is not None and self.covered_end is None
        if not window:
            for first, last in absent_runs(start, stop, set(by_position)):
                self.out.add(MISSING, first, last, "no event and no seal")
        return False

    # -- one seal's events -----------------------------------------------------------

    def _rank(self, doc: StoredEvent, seq: int) -> tuple[bool, ...]:
        """Among documents carrying the signed event `seq`, the one the collector wrote
        sorts first: under that sequence and ``_id``, then in the index dated by the
        signed event's time (the collector names indices by it)."""
        dated = False
        if doc.decoded is not None:
            moment = integrity.effective_time(doc.decoded)
            if moment > 0:
                month = datetime.fromtimestamp(moment // 1_000_000_000, UTC).strftime("%Y.%m")
                dated = doc.index.endswith(f"-{month}") or f"-{month}." in doc.index
        return (doc.position != seq, doc.doc_id != self.doc_id(seq), not dated)

    def _take_claim(self, event: audit_pb2.AuditEvent) -> None:
        try:
            self.out.continues = claim(event)
        except MalformedClaim as exc:
            self.out.claim_problem = str(exc)

    def _judge(
        self,
        info: SealInfo,
        start: int,
        docs: list[StoredEvent],
        broken: str,
    ) -> None:
        """One verdict per sequence `start`..last of the seal (see the module docstring)."""
        seal = info.seal
        first, last = seal.first_sequence, seal.last_sequence
        signed_at: dict[bytes, list[int]] = {}
        for offset, signed in enumerate(seal.event_hashes):
            if first + offset >= start:
                signed_at.setdefault(signed, []).append(first + offset)
        carriers: dict[int, list[StoredEvent]] = {}  # signed sequence -> its documents
        unsigned: list[StoredEvent] = []  # bytes the seal did not sign
        for doc in docs:
            mine = doc.event_hash
            seqs = signed_at.get(mine) if mine is not None else None
            if not seqs:
                unsigned.append(doc)
                continue
            seq = doc.position if doc.position in seqs else seqs[0]
            carriers.setdefault(seq, []).append(doc)
        marks: dict[int, Mark] = {}

        def mark(seq: int, kind: str, detail: str, where: tuple[str, ...]) -> None:
            keep_worse(marks, seq, (kind, detail, where))

        genuine: dict[int, StoredEvent] = {}
        for seq, found in carriers.items():
            if len(found) > 1:
                found.sort(key=functools.partial(self._rank, seq=seq))
            doc = genuine[seq] = found[0]
            for extra in found[1:]:
                self.out.add(
                    INSERTED, extra.position, extra.position, _extra(extra, doc), _both(extra, doc)
                )
            if seq == FIRST_SEQUENCE and doc.decoded is not None:
                # Decoded from bytes whose hash the seal signed: the claim is the agent's.
                self._take_claim(doc.decoded)
            if doc.position != seq or doc.doc_id != self.doc_id(seq):
                # One wording for all, so a shifted run reads as one range.
                what = "signed event stored under another sequence or _id"
                mark(seq, REORDERED, what, (doc.index,))
                continue
            diff = field_differences(doc, self.agent)
            if diff:
                mark(
                    seq,
                    ALTERED,
                    "fields differ from the signed bytes: " + ", ".join(diff),
                    (doc.index,),
                )
            elif doc.decoded is not None and integrity.FLAG_GAP_AT_SOURCE in doc.decoded.flags:
                mark(seq, GAP_AT_SOURCE, "the agent recorded a loss here", (doc.index,))
            else:
                mark(seq, VALID, "", ())
        for doc in unsigned:
            seq = doc.position
            if not start <= seq <= last:
                continue
            held = genuine.get(seq)
            if held is not None and held.position == seq:
                self.out.add(INSERTED, seq, seq, _extra(doc, held), _both(doc, held))
            elif doc.decoded is None:
                mark(seq, ALTERED, _unreadable(doc), (doc.index,))
            else:
                mark(seq, ALTERED, "stored bytes differ from the signed event hash", (doc.index,))
        for seq in range(start, last + 1):
            if seq not in marks:
                kind, detail = self.v.absent_kind_signed(self.agent, self.stream, seq, seal)
                mark(seq, kind, detail, (info.index,))
        if broken:
            for seq in range(start, last + 1):
                mark(seq, CHAIN_BREAK, broken, (info.index,))
        for seq in range(start, last + 1):
            kind, detail, where = marks[seq]
            self.out.add(kind, seq, seq, detail, where)

    # -- after the last seal ------------------------------------------------------------

    def _vouched_tail(self, start: int, rest: list[StoredEvent]) -> dict[int, str]:
        """Linked by their event hashes (format 2)."""
        return vouched_run(
            start,
            self.head,
            rest,
            lambda e: e.doc_id == self.doc_id(e.position) and e.event_hash is not None,
            lambda head, doc: integrity.head_link(head, doc.event_hash or b""),
            self.attested,
        )

    def _awaiting_seal(self, event: StoredEvent) -> bool:
        seq = event.position
        decoded = event.decoded
        if decoded is None or decoded.sequence != seq or decoded.stream_id != self.stream:
            return False
        if event.doc_id != self.doc_id(seq) or not self.v.fresh(event):
            return False
        return not field_differences(event, self.agent)


def _unreadable(doc: StoredEvent) -> str:
    """Why a document has no readable bytes: its own are not, or no batch document
    gave it any (`collector.verify.batches` says which, and why)."""
    why = f": {doc.bytes_problem}" if doc.bytes_problem else ""
    return f"{doc.doc_id}: stored bytes unreadable{why}"


def _extra(doc: StoredEvent, genuine: StoredEvent) -> str:
    return (
        f"extra document {doc.doc_id} in {doc.index} "
        f"(the signed one is {genuine.doc_id} in {genuine.index})"
    )


def _both(doc: StoredEvent, genuine: StoredEvent) -> tuple[str, ...]:
    return (doc.index, genuine.index)
