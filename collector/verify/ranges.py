"""One format 2 stream verified as contiguous sequence ranges, in parallel.

A stream walk (`collector.verify.signed.StreamWalk`) carries little from one seal to
the next when the seals are *clean and contiguous*: every seal's signature verifies,
its searchable fields match its signed bytes, it is a format 2 seal of this stream;
the first data seal starts at sequence 1 from the stream's genesis head and each next
one starts right after the previous one with that one's signed head as its
``prev_chain_head``. Then, at the first sequence F of any data seal, the one walk's
state is known from signed material alone: covered up to F - 1, head = that seal's
``prev_chain_head``; no event below F is still unread (the seal before took every
document up to F - 1), and every anchor point below F has been compared. So each
range [F_k, F_(k+1) - 1] can be walked on its own, from that state, over its own
seals and the documents stored under its sequences, and gives exactly the additions
to the report the one walk makes there, in the same order.

What crosses ranges is done once, by the lead process, here:

- heartbeat seals (no events) are compared with the heads at seal ends over all the
  seals (`plan`), exactly as the walk does; their CHAIN_BREAKs join the ranges;
- the last range also walks the tail after the last seal and checks it against the
  anchors (it is given the latest heartbeat);
- the per-range findings are added to one report in range order, so ranges of one
  kind meeting at a cut join as in one walk (`merge`).

Documents are assigned to ranges by their searchable ``event.sequence``, which is also
what the one walk orders and groups them by. A document without one sorts after all
others in the one walk and is judged wherever that falls, so a stream holding any is
walked whole, as are streams whose seals are not clean and contiguous (a missing,
invalid, overlapping or re-linked seal): those rules look across seals. Anything
outside the planned seals (a seal written after planning) is left to a later run.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from collector.verify.anchors import Attested
from collector.verify.reading import SealInfo
from collector.verify.report import AgentReport
from collector.verify.signed import StreamWalk
from collector.verify.verdicts import Range
from proto import integrity


@dataclass(frozen=True)
class Piece:
    """One range of a stream for a worker process: its data seals (first, last, signed
    head) in order; documents from `first` (piece 0: from the start) to `stop` (None:
    to the end, including the tail after the last seal)."""

    agent: str
    stream: str
    number: int
    first: int
    stop: int | None
    head: bytes  # the signed head at `first` - 1 (piece 0: the genesis head)
    spans: tuple[tuple[int, int, bytes], ...]
    attested: Attested
    heartbeat: tuple[int, bytes] | None = None  # last piece: the latest heartbeat seal

    def expects(self, info: SealInfo, position: int) -> bool:
        """`info` is the planned data seal at `position` of this piece, still clean."""
        seal = info.seal
        return (
            position < len(self.spans)
            and clean(info, self.stream)
            and (seal.first_sequence, seal.last_sequence, seal.chain_head) == self.spans[position]
        )


@dataclass
class Plan:
    """A stream cut into pieces, and what was judged over all its seals."""

    pieces: list[Piece]
    seals: int  # every seal read, heartbeats included (the report's count)
    breaks: list[Range] = field(default_factory=list)


def clean(info: SealInfo, stream: str) -> bool:
    """Signature and heads verified, searchable fields as signed, format 2 of `stream`."""
    seal = info.seal
    return (
        info.signed_ok
        and not info.problem
        and seal.stream_id == stream
        and integrity.seal_format(seal) == integrity.FORMAT_V2
    )


def plan(
    skeleton: StreamWalk,
    seals: Iterable[SealInfo],
    attested: Attested,
    *,
    pieces: int,
    min_events: int,
) -> Plan | None:
    """Cut points at data seals' first sequences, ~equal events per piece (at most
    `pieces`, at least `min_events` each); None: walk the stream whole (seals not
    clean and contiguous, or too few events to share). `skeleton` is a walk given no
    events: it compares the heartbeat seals as the one walk does."""
    spans: list[tuple[int, int, bytes]] = []
    count = 0
    head = skeleton.genesis
    for info in seals:
        count += 1
        if not clean(info, skeleton.stream):
            return None
        seal = info.seal
        if seal.event_count == 0:
            skeleton.heartbeat_seal(info)
            continue
        first = spans[-1][1] + 1 if spans else 1
        if seal.first_sequence != first or seal.prev_chain_head != head:
            return None
        spans.append((seal.first_sequence, seal.last_sequence, seal.chain_head))
        head = seal.chain_head
        skeleton.advance(seal.last_sequence, head)
    if not spans:
        return None
    total = spans[-1][1]
    wanted = min(pieces, total // max(1, min_events))
    cuts = _cuts([s[0] for s in spans], total, wanted)
    if len(cuts) < 2:
        return None
    out: list[Piece] = []
    for number, (lo, hi) in enumerate(zip(cuts, [*cuts[1:], len(spans)], strict=True)):
        mine = tuple(spans[lo:hi])
        last_piece = hi == len(spans)
        out.append(
            Piece(
                skeleton.agent,
                skeleton.stream,
                number,
                mine[0][0],
                None if last_piece else mine[-1][1],
                skeleton.genesis if lo == 0 else spans[lo - 1][2],
                mine,
                attested,
                skeleton.heartbeat if last_piece else None,
            )
        )
    return Plan(out, count, list(skeleton.breaks))


def _cuts(firsts: Sequence[int], total: int, wanted: int) -> list[int]:
    """Indices into `firsts` (first sequences of the data seals) where pieces start:
    0, then the seal starting nearest each k * total / wanted."""
    cuts = [0]
    for k in range(1, wanted):
        target = k * total / wanted
        at = bisect.bisect_left(firsts, target)
        if at > 0 and (at == len(firsts) or target - firsts[at - 1] < firsts[at] - target):
            at -= 1
        if at > cuts[-1]:
            cuts.append(at)
    return cuts


def merge(agent: str, stream: str, parts: Sequence[AgentReport], whole: Plan) -> AgentReport:
    """The pieces' reports as one walk's: ranges added in order (so runs of one kind
    meeting at a cut join, naming the indices of both), stream findings in order."""
    out = AgentReport(agent, stream_id=stream)
    out.seals = whole.seals
    for part in parts:
        for r in part.ranges:
            out.add(r.kind, r.first, r.last, r.detail, r.indices)
        out.events += part.events
        out.stream.extend(part.stream)
    head = parts[0]
    out.started = head.started
    out.continues = head.continues
    out.claim_problem = head.claim_problem
    return out
