"""What the walk of a format 1 chain (`collector.verify.checks.Walk`) and of a format 2
stream (`collector.verify.signed.StreamWalk`) do alike, stated once: taking the stored
events up to a sequence, the tail after the last valid seal, and which of two verdicts
for one sequence is kept."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from collector.verify.reading import Peekable, StoredEvent
from collector.verify.report import AgentReport
from collector.verify.verdicts import PENDING, PRECEDENCE
from collector.verify.vouch import tail_verdict

if TYPE_CHECKING:
    from collector.verify.verifier import Verifier

FIRST_SEQUENCE = 1  # agents number their events (each stream's) from 1
Mark = tuple[str, str, tuple[str, ...]]  # (verdict, detail, indices named)


def keep_worse(marks: dict[int, Mark], seq: int, mark: Mark) -> None:
    """Record `mark` for `seq` unless a verdict ranked before it in `PRECEDENCE` is
    there already: one verdict per sequence, the most serious one."""
    current = marks.get(seq)
    if current is None or PRECEDENCE.index(mark[0]) < PRECEDENCE.index(current[0]):
        marks[seq] = mark


class SequenceWalk:
    """The state both walks keep, and what they do with it alike."""

    v: Verifier
    agent: str
    out: AgentReport
    covered_end: int | None  # last sequence valid seals cover
    tail_present: set[int]  # sequences after the last seal with a document

    def _take(self, events: Peekable, upto: int) -> list[StoredEvent]:
        """The stored events up to sequence `upto`, counted as checked."""
        taken: list[StoredEvent] = []
        while True:
            nxt = events.peek()
            if nxt is None or nxt.position > upto:
                break
            taken.append(next(events))
        self.out.events += len(taken)
        self.v.tick(self.agent, len(taken))
        return taken

    def _awaiting_seal(self, event: StoredEvent) -> bool:
        """Stored exactly as the collector stores this walk's next event, and fresh."""
        raise NotImplementedError

    def _vouched_tail(self, start: int, rest: list[StoredEvent]) -> dict[int, str]:
        """The documents of `rest` (by ``id()``) a signed anchor vouches for, chained from
        the last signed head at sequence `start` (`collector.verify.vouch.vouched_run`):
        each walk links them as its format does."""
        raise NotImplementedError

    def finish(self, events: Peekable, *, bounded: bool = False) -> None:
        """Events after the last valid seal: no seal signed them.

        PENDING (not a finding) for the run that continues the covered sequences one by
        one, each ingested within the grace period before now and stored as the
        collector stores it (its signed bytes carry that sequence, under its ``_id``,
        every searchable field as in those bytes): a live stream whose seal is not
        searchable yet. ``event.ingested`` is written by the collector and not
        signed: a forged event can only buy itself the grace period. After it, each is
        judged by `collector.verify.vouch.tail_verdict`: SEAL_MISSING when its bytes
        chain from the last signed head into a head a signed anchor (checkpoint, receipt)
        attests — a genuine event whose seal was deleted — else INSERTED. (`bounded`:
        the walk covers a sequence window; the rule does not depend on it.)
        """
        expect = FIRST_SEQUENCE if self.covered_end is None else self.covered_end + 1
        live = self.v.grace is not None
        rest = self._take(events, sys.maxsize)
        vouched = self._vouched_tail(expect, rest)
        for e in rest:
            self.tail_present.add(e.position)
            if live and e.position == expect and self._awaiting_seal(e):
                expect += 1
                detail = f"unsealed, ingested within the grace period ({self.v.grace_text})"
                self.out.add(PENDING, e.position, e.position, detail, (e.index,))
                continue
            live = False  # a gap, a duplicate or an old event ends the live run
            tail_verdict(self.out, e, vouched.get(id(e)), self.agent)
