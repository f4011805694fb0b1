"""What an anchor's head decides about the chain it names — one rule for both stream
formats (format 1: `collector.verify.checks.Walk`; format 2:
`collector.verify.signed.StreamWalk`). The verdicts themselves are defined in
`collector.verify.verdicts`.

Anchors are the chain head record (unsigned: any OpenSearch writer can edit it), signed
checkpoints and signed receipts, each stating a head at a sequence
(`collector.verify.anchors.Attested`):

- within what valid seals cover, a *signed* anchor that disagrees with the signed head
  makes that sequence ALTERED; the chain head record disagreeing is itself the finding
  (CHAIN_HEAD_ALTERED, naming its index): blaming the intact event it names would let
  whoever edits the record choose who is blamed;
- after the last valid seal, documents whose bytes chain from the last signed head into
  the head a *signed* anchor attests are genuine events whose seal was deleted
  (SEAL_MISSING); the chain head record vouches for nothing there (an OpenSearch writer
  could chain forged events to a record they wrote).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from collector.verify.anchors import CHAIN_HEAD_ALTERED, CHAIN_HEAD_RECORD
from collector.verify.fields import field_differences
from collector.verify.reading import StoredEvent
from collector.verify.report import AgentReport
from collector.verify.verdicts import ALTERED, INSERTED, SEAL_MISSING

# sequence -> [(head, what attests it, index of the attesting document or "")]
Points = Mapping[int, list[tuple[bytes, str, str]]]


def judge_anchor(
    out: AgentReport, seq: int, stated: bytes, signed: bytes, what: str, index: str
) -> None:
    """The anchor `what` (in `index`) states head `stated` at `seq`, where the signed
    seals give `signed`: nothing when they agree; else CHAIN_HEAD_ALTERED on the stream
    for the chain head record, ALTERED at `seq` for a signed anchor."""
    if stated == signed:
        return
    if what == CHAIN_HEAD_RECORD:
        out.stream.append(
            (
                CHAIN_HEAD_ALTERED,
                f"the {what} in {index} says head {stated.hex()[:16]} at sequence "
                f"{seq}; the signed seal has {signed.hex()[:16]}",
            )
        )
    else:
        out.add(
            ALTERED,
            seq,
            seq,
            f"the signed head here differs from the {what}",
            (index,) if index else (),
        )


def vouched_run(
    start: int,
    head: bytes,
    rest: Iterable[StoredEvent],
    usable: Callable[[StoredEvent], bool],
    link: Callable[[bytes, StoredEvent], bytes],
    attested: Points,
) -> dict[int, str]:
    """The documents of `rest` (after the last valid seal; per sequence the first one
    `usable`: stored under its own ``_id``, its bytes readable) that, linked one per
    sequence from `start` onwards starting at the signed `head`, reach a head a signed
    anchor of `attested` states at a later sequence: that signature vouches for their
    bytes. Keyed by ``id()``; value: the detail naming the anchor."""
    signed: dict[int, list[tuple[bytes, str]]] = {}
    for seq, points in attested.items():
        for stated, what, _index in points:
            if what != CHAIN_HEAD_RECORD:
                signed.setdefault(seq, []).append((stated, what))
    out: dict[int, str] = {}
    if not signed:
        return out
    first_at: dict[int, StoredEvent] = {}
    for e in rest:
        if e.position not in first_at and usable(e):
            first_at[e.position] = e
    seq = start
    chained: list[StoredEvent] = []
    while seq in first_at:
        doc = first_at[seq]
        head = link(head, doc)
        chained.append(doc)
        for stated, what in signed.get(seq, []):
            if stated == head:
                detail = f"seal gone; the events chain into the head the {what} attests"
                for vouched in chained:
                    out[id(vouched)] = detail
                chained = []
        seq += 1
    return out


def tail_verdict(out: AgentReport, event: StoredEvent, anchor: str | None, agent: str) -> None:
    """An event after the last valid seal that is not PENDING: SEAL_MISSING when a
    signed anchor vouches for it (`anchor`, from `vouched_run`) and its searchable
    fields are as signed, ALTERED when they are not; INSERTED without an anchor."""
    where = (event.index,)
    if anchor is None:
        out.add(INSERTED, event.position, event.position, "not covered by any valid seal", where)
        return
    diff = field_differences(event, agent)
    if diff:
        detail = "fields differ from the signed bytes: " + ", ".join(diff)
        out.add(ALTERED, event.position, event.position, detail, where)
    else:
        out.add(SEAL_MISSING, event.position, event.position, anchor, where)
