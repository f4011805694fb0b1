"""Chain and seal checks of one agent's walk: each seal's range of events against its
signed heads, the links between seals, the unsealed runs and the tail.

**Seal links.** Consecutive seals by sequence must link: a seal of events whose first
sequence directly follows the last sequence covered so far must carry that position's
chain head as ``prev_chain_head`` (the chain over its own events then starts there; a
stored event keeps no ``chain_prev``, the collector and this walk chain each seal's
first event from the seal's ``prev_chain_head``). A heartbeat seal restating the head at
sequence s must restate the chain head at s. No restart point is legitimate: an agent
that lost its chain state and started again from its genesis value (or any other head)
breaks the proof that nothing was dropped or replaced between the two chains, and the
first seal after the break is reported ``CHAIN_BREAK`` over its whole range — the same
range as the collector's ``fork`` alert at ingest — even though its events are signed and
chained among themselves; every later seal that links to it is VALID again. A heartbeat
that does not link is ``CHAIN_BREAK`` at its one sequence. Not compared: heartbeats at
the genesis head before any event (sequence 0), heartbeats beyond the last covered
sequence (those attest a tail, see TAIL_TRUNCATED / MISSING), positions whose chain
hash is not known (an absent or altered event there is reported as such already), and
the link into the first seal of a ``--from`` window. Seals that overlap what is covered
(a batch re-sealed on resend: same range and heads, or a re-cut range) are compared with
what they overlap: agreeing is not a finding, disagreeing is ALTERED. An agent whose
state directory was deleted starts again at sequence 1: its seals overlap older ones and
fall under that overlap comparison, not under CHAIN_BREAK.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

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
    UNVERIFIABLE,
    VALID,
    Range,
)
from collector.verify.vouch import Points, judge_anchor, vouched_run

# FIRST_SEQUENCE re-exported: `collector.verify.verifier` imports it from here.
from collector.verify.walk import FIRST_SEQUENCE as FIRST_SEQUENCE
from collector.verify.walk import Mark, SequenceWalk, keep_worse
from proto import integrity

if TYPE_CHECKING:
    from collector.verify.verifier import Verifier

_HASH_MEMORY = 20_000  # recent (sequence -> hash) kept for overlapping seals


def _genuine_rank(doc: StoredEvent, seq: int, agent: str, info: SealInfo) -> tuple[bool, ...]:
    """Sort key choosing, among documents carrying the signed event `seq`, the one the
    collector wrote: under that sequence and ``_id``, then in an index whose date is the
    signed event time's (the collector names indices by it), then one the seal's
    (unsigned) index list names. A copy elsewhere is the extra one: INSERTED."""
    dated = False
    if doc.decoded is not None and doc.decoded.time_unix_nano > 0:
        when = datetime.fromtimestamp(doc.decoded.time_unix_nano // 1_000_000_000, UTC)
        month = when.strftime("%Y.%m")
        dated = doc.index.endswith(f"-{month}") or f"-{month}." in doc.index
    return (
        doc.position != seq,
        doc.doc_id != f"{agent}:{seq}",
        not dated,
        doc.index not in info.indices,
    )


def _extra(
    doc: StoredEvent, genuine: StoredEvent | None
) -> tuple[str, int, int, str, tuple[str, ...]]:
    """The INSERTED verdict for a second document of a sequence, naming both indices."""
    detail = f"extra document {doc.doc_id} in {doc.index}"
    where: tuple[str, ...] = (doc.index,)
    if genuine is not None:
        detail += f" (the signed one is in {genuine.index})"
        where += (genuine.index,)
    return INSERTED, doc.position, doc.position, detail, where


def absent_runs(first: int, last: int, present: set[int]) -> Iterator[tuple[int, int]]:
    """The runs of `first`..`last` without a sequence of `present`."""
    run: int | None = None
    for seq in sorted(p for p in present if first <= p <= last):
        if run is None:
            run = first
        if seq > run:
            yield run, seq - 1
        run = seq + 1
    start = first if run is None else run
    if start <= last:
        yield start, last


class Walk(SequenceWalk):
    """State of one agent's walk: how far valid seals cover, hashes, the last head.

    `attested` maps sequences that anchors (chain head record, checkpoints) vouch for to
    their (head, what attests it, index): compared with the signed heads as the walk
    passes them (`collector.verify.vouch`), the same rule as format 2."""

    def __init__(
        self,
        verifier: Verifier,
        agent: str,
        out: AgentReport,
        attested: Points | None = None,
    ) -> None:
        self.v = verifier
        self.agent = agent
        self.out = out
        self.covered_end: int | None = None
        self.head = integrity.genesis(agent)
        self.hashes: OrderedDict[int, bytes] = OrderedDict()
        self.heartbeat: tuple[int, bytes] | None = None
        self.pending_invalid: list[SealInfo] = []
        # Heartbeats (sequence, head) not yet covered by a seal, compared once they are.
        self.pending_heartbeats: dict[tuple[int, bytes], None] = {}
        self.breaks: list[Range] = []  # heartbeat CHAIN_BREAKs, laid over the ranges
        self.tail_present: set[int] = set()  # sequences after the last seal with a document
        self.attested = dict(attested or {})

    def _remember(self, seq: int, value: bytes) -> None:
        self.hashes[seq] = value
        while len(self.hashes) > _HASH_MEMORY:
            self.hashes.popitem(last=False)

    def seal(self, info: SealInfo, events: Peekable) -> None:
        seal = info.seal
        if info.problem:
            self.out.add(
                SEAL_INVALID, seal.first_sequence, seal.last_sequence, info.problem, (info.index,)
            )
            return
        if seal.event_count == 0:
            if seal.chain_head == integrity.genesis(self.agent):
                return  # before the agent's first event: nothing to link to
            newer = self.heartbeat is None or seal.last_sequence >= self.heartbeat[0]
            if newer:
                self.heartbeat = (seal.last_sequence, seal.chain_head)
            self.pending_heartbeats[(seal.last_sequence, seal.chain_head)] = None
            self._check_heartbeats()
            return
        first, last = seal.first_sequence, seal.last_sequence
        end = self.covered_end
        broken = ""  # why this seal does not continue the chain, if it does not
        if end is not None and first <= end:
            # Overlaps what earlier seals covered (a re-cut batch): it must agree.
            before = self.hashes.get(first - 1) if first > 0 else None
            if before is not None and before != seal.prev_chain_head:
                self.out.add(
                    ALTERED, first, last, "two signed seals disagree on this range", (info.index,)
                )
                return
            if last <= end:
                at_last = self.hashes.get(last)
                if at_last is not None and at_last != seal.chain_head:
                    self.out.add(
                        ALTERED,
                        first,
                        last,
                        "two signed seals disagree on this range",
                        (info.index,),
                    )
                return
            first = end + 1
            prev: bytes | None = self.head
        else:
            start = FIRST_SEQUENCE if end is None else end + 1
            gap_events = self._take(events, first - 1)
            gap_events = [e for e in gap_events if e.position >= start or end is None]
            prev = self._unsealed_run(start, first - 1, gap_events, seal.prev_chain_head)
            if prev is None:
                prev = seal.prev_chain_head
                if end is not None and first == end + 1 and prev != self.head:
                    restart = prev == integrity.genesis(self.agent)
                    broken = (
                        f"seal {first}-{last} continues chain head {prev.hex()[:16]}"
                        + (" (the genesis value: the chain restarted)" if restart else "")
                        + f", not the head {self.head.hex()[:16]} at sequence {end}"
                    )
        in_range = self._take(events, last)
        self._verify_range(info, first, last, prev, in_range, broken)
        self.covered_end = last
        self.head = seal.chain_head
        self._remember(last, seal.chain_head)
        self._check_heartbeats()

    def _awaiting_seal(self, event: StoredEvent) -> bool:
        seq = event.position
        if event.decoded is None or event.decoded.sequence != seq:
            return False
        if event.doc_id != f"{self.agent}:{seq}" or not self.v.fresh(event):
            return False
        return not field_differences(event, self.agent)

    def _check_heartbeats(self) -> None:
        """Compare heartbeats now within the covered range with the chain there."""
        end = self.covered_end
        if end is None or not self.pending_heartbeats:
            return
        for seq, head in [k for k in self.pending_heartbeats if k[0] <= end]:
            del self.pending_heartbeats[(seq, head)]
            known = self.hashes.get(seq)
            if known is not None and known != head:
                self.breaks.append(
                    Range(
                        CHAIN_BREAK,
                        seq,
                        seq,
                        f"heartbeat seal restates head {head.hex()[:16]} at sequence {seq}, "
                        f"the chain has {known.hex()[:16]}",
                    )
                )

    def _unsealed_run(
        self, start: int, stop: int, events: list[StoredEvent], target: bytes
    ) -> bytes | None:
        """Events between the covered part and the next seal (no seal of their own).

        If they chain from the last sealed head to the next seal's ``prev_chain_head``,
        the next seal vouches for them: SEAL_MISSING. Otherwise they are INSERTED and
        the sequences without an event are MISSING.
        """
        if self.covered_end is None and not events:
            if target != integrity.genesis(self.agent) and self.v.time_from is None:
                if stop >= start:
                    self.out.add(MISSING, start, stop, "chain does not start at genesis")
                else:
                    self.out.add(MISSING, start, start, "chain does not start at genesis")
            return None
        if stop < start and not events:
            return None
        by_position: dict[int, list[StoredEvent]] = {}
        for e in events:
            by_position.setdefault(e.position, []).append(e)
        prev = self.head if self.covered_end is not None else integrity.genesis(self.agent)
        walked: list[int] = []
        ok = True
        for seq in range(start, stop + 1):
            cands = [e for e in by_position.get(seq, []) if e.canonical is not None]
            if not cands:
                ok = False
                break
            prev = integrity.chain_link(prev, cands[0].canonical or b"")
            walked.append(seq)
        if ok and prev == target and events:
            for seq in walked:
                used = by_position[seq][0]
                self.out.add(
                    SEAL_MISSING, seq, seq, "events chain into the next seal", (used.index,)
                )
            for e in events:
                if e is not by_position[e.position][0]:
                    self.out.add(*_extra(e, by_position[e.position][0]))
            return target
        for e in events:
            self.out.add(
                INSERTED, e.position, e.position, "not covered by any valid seal", (e.index,)
            )
        present = set(by_position)
        for seq in range(start, stop + 1):
            if seq not in present:
                self.out.add(MISSING, seq, seq, "no event and no seal")
        return None

    def _verify_range(
        self,
        info: SealInfo,
        first: int,
        last: int,
        prev: bytes | None,
        docs: list[StoredEvent],
        broken: str = "",
    ) -> None:
        seal = info.seal
        marks: dict[int, Mark] = {}

        def mark(seq: int, kind: str, detail: str = "", *where: str) -> None:
            keep_worse(marks, seq, (kind, detail, where))

        # Which stored document carries the signed event of each sequence.
        by_decoded: dict[int, list[StoredEvent]] = {}
        for doc in docs:
            if doc.decoded is not None:
                by_decoded.setdefault(doc.decoded.sequence, []).append(doc)
        chosen: dict[int, StoredEvent] = {}
        for seq, cands in by_decoded.items():
            cands.sort(key=lambda d: _genuine_rank(d, seq, self.agent, info))
            chosen[seq] = cands[0]

        tentative: list[int] = []
        heads: dict[int, bytes] = {}  # the head after each event chained from `prev`
        problem_at = first - 1
        for seq in range(first, last + 1):
            found = chosen.get(seq)
            if found is None:
                kind, detail = self.v.absent_kind(self.agent, seq)
                mark(seq, kind, detail, info.index)
                prev = None
                problem_at = seq
                continue
            data = found.canonical or b""
            hint = found.hint if found.position == seq else None
            if prev is None:
                mark(seq, UNVERIFIABLE, "its predecessor is missing", found.index)
                prev = hint
                problem_at = seq
                continue
            current = integrity.chain_link(prev, data)
            if hint is not None and hint != current:
                mark(seq, ALTERED, "stored bytes do not hash into the chain", found.index)
                prev = hint
                problem_at = seq
                continue
            prev = current
            self._remember(seq, current)
            heads[seq] = current
            tentative.append(seq)
        reached = prev == seal.chain_head
        if not reached:
            for seq in tentative:
                if seq > problem_at:
                    mark(seq, ALTERED, "chain does not reach the sealed head", chosen[seq].index)
        # Proven heads: those after the last problem, on a chain that reaches the seal's.
        proven = {s: h for s, h in heads.items() if s > problem_at} if reached else {}
        self._compare_attested(first, last, seal.chain_head, proven)

        for seq in tentative:
            if seq in marks:
                continue
            doc = chosen[seq]
            if doc.position != seq or doc.doc_id != f"{self.agent}:{seq}":
                mark(seq, REORDERED, "signed event stored under another sequence or _id", doc.index)
                continue
            diff = field_differences(doc, self.agent)
            if diff:
                what = "fields differ from the signed bytes: " + ", ".join(diff)
                mark(seq, ALTERED, what, doc.index)
            elif doc.decoded is not None and integrity.FLAG_GAP_AT_SOURCE in doc.decoded.flags:
                mark(seq, GAP_AT_SOURCE, "the agent recorded a loss here", doc.index)
            else:
                mark(seq, VALID)
        if broken:
            # After the other checks, so a more serious finding in the range still shows.
            for seq in range(first, last + 1):
                mark(seq, CHAIN_BREAK, broken, info.index)
        used = {id(d) for d in chosen.values()}
        for doc in docs:
            if id(doc) in used:
                continue
            if doc.decoded is None:
                mark(doc.position, ALTERED, f"{doc.doc_id}: stored bytes unreadable", doc.index)
            else:
                self.out.add(*_extra(doc, chosen.get(doc.position)))
        for seq in range(first, last + 1):
            kind, detail, where = marks.get(seq, (MISSING, "", ()))
            self.out.add(kind, seq, seq, detail, where)

    def _compare_attested(
        self, first: int, last: int, sealed: bytes, heads: Mapping[int, bytes]
    ) -> None:
        """Anchored heads within `first`..`last` against the signed heads there
        (`collector.verify.vouch.judge_anchor`): the seal's own head at `last`, and
        `heads` — the chain over the stored bytes where it provably reaches the sealed
        head. Other anchors here are not compared: those events are findings already,
        and an anchor compared with an unproven head could blame the wrong side."""
        for seq in [s for s in self.attested if first <= s <= last]:
            signed = sealed if seq == last else heads.get(seq)
            if signed is None:
                continue
            for head, what, index in self.attested.pop(seq):
                judge_anchor(self.out, seq, head, signed, what, index)

    def _vouched_tail(self, start: int, rest: list[StoredEvent]) -> dict[int, str]:
        """Linked by chaining their stored canonical bytes (format 1)."""
        return vouched_run(
            start,
            self.head,
            rest,
            lambda e: e.doc_id == f"{self.agent}:{e.position}" and e.canonical is not None,
            lambda head, doc: integrity.chain_link(head, doc.canonical or b""),
            self.attested,
        )
