"""Spool → batches → shipper. Runs in its own thread; knows nothing of files or parsing.

Reads committed records in sequence order from the spool and closes a batch by
count, bytes or age (`batch.*`), then hands it to the shipper, whose `submit` blocks
while `max_in_flight` batches wait: memory holds at most 2 x max_in_flight batches
plus the open one, whatever the backlog on disk. Corrupt records met in the spool
become `agent.spool_loss` events, appended to the spool (and so numbered) like any
other event.

Integrity: every batch is sealed (`seal`) once, right after it is built, so a
batch the shipper sends again goes out byte for byte the same. A batch never spans a
break in the hash chain (a record lost to spool corruption, or events spooled before
the agent chained them): the collector then sees the break as a gap between two
intact seals instead of one unverifiable batch. While idle, a signed heartbeat
restating the head of the chain as submitted so far goes out every
`heartbeat_interval_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent import notices
from agent.batch import Batcher
from agent.checkpoint import FileOffset
from agent.ship import Outgoing
from agent.spool import Entry, Loss, Spool, SpoolReader
from proto.v1 import audit_pb2 as pb

READ_BUDGET = 500
IDLE_WAIT_S = 0.5


class Outbox:
    """Feeds the shipper from the spool (see module docstring)."""

    def __init__(
        self,
        *,
        agent_id: str,
        observer: pb.Observer,
        spool: Spool,
        reader: SpoolReader,
        batcher: Batcher,
        submit: Callable[[Outgoing], bool],
        wall_ns: Callable[[], int],
        monotonic: Callable[[], float],
        seal: Callable[[pb.Batch], None] | None = None,
        heartbeat: Callable[[int | None, bytes], pb.Batch | None] | None = None,
        heartbeat_interval_s: float = 60.0,
        head: tuple[int | None, bytes] | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._seal = seal  # signs the batch right after it is built
        self._observer = observer
        self._spool = spool
        self._reader = reader
        self._batcher = batcher
        self._submit = submit
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self._positions: dict[str, FileOffset] = {}
        # Heartbeats restate `_head`, the chain head of the last event submitted (or the
        # head at start when nothing was unacked): never ahead of what the collector got.
        self._heartbeat = heartbeat
        self._heartbeat_interval_s = heartbeat_interval_s
        self._head = head
        self._open_tail: bytes | None = None  # chain hash of the open batch's last event
        self._last_submit = monotonic()
        self._limits: tuple[int, int, float] | None = None  # new batch limits (reload)

    def set_batch_limits(self, max_events: int, max_bytes: int, max_wait_s: float) -> None:
        """New batch limits, applied by the feed thread before its next read (SIGHUP)."""
        self._limits = (max_events, max_bytes, max_wait_s)

    def _apply_limits(self) -> None:
        limits, self._limits = self._limits, None
        if limits is not None:
            self._batcher.max_events, self._batcher.max_bytes, self._batcher.max_wait_s = limits

    def run(self, drain: threading.Event) -> None:
        """Feed until `drain` is set and everything spooled so far was submitted."""
        try:
            while True:
                self._apply_limits()
                draining = drain.is_set()
                records, losses = self._reader.read(READ_BUDGET)
                if losses:
                    self._spool.append([Entry(self._loss_event(loss)) for loss in losses])
                for record in records:
                    event = pb.AuditEvent.FromString(record.event)
                    breaks_chain = self._open_tail is not None and (
                        event.chain_prev != self._open_tail
                    )
                    if (breaks_chain or not self._batcher.fits(event)) and not self._send():
                        return
                    self._batcher.add(event, self._monotonic())
                    self._open_tail = event.chain_hash
                    if record.file_key is not None and record.position is not None:
                        self._positions[record.file_key] = record.position
                    if self._batcher.full() and not self._send():
                        return
                now = self._monotonic()
                if self._batcher.due(now) and not self._send():
                    return
                if records or losses:
                    continue
                if draining:
                    self._send()
                    return
                if not self._beat(now):
                    return
                deadline = self._batcher.deadline()
                timeout = IDLE_WAIT_S if deadline is None else max(0.0, deadline - now)
                self._spool.wait(self._reader.next_sequence, min(timeout, IDLE_WAIT_S))
        finally:
            self._reader.close()

    def _loss_event(self, loss: Loss) -> pb.AuditEvent:
        event = notices.spool_loss(loss, self._wall_ns())
        event.observed_unix_nano = self._wall_ns()
        event.observer.CopyFrom(self._observer)
        return event

    def _beat(self, now: float) -> bool:
        """Submit a heartbeat if idle for the interval; False when the shipper is aborted."""
        if (
            self._heartbeat is None
            or self._head is None
            or len(self._batcher)
            or now - self._last_submit < self._heartbeat_interval_s
        ):
            return True
        self._last_submit = now
        batch = self._heartbeat(*self._head)
        if batch is None:
            return True
        return self._submit(Outgoing(batch=batch))

    def _send(self) -> bool:
        """Submit the open batch (if any); False when the shipper has been aborted."""
        events = self._batcher.take()
        self._open_tail = None
        if not events:
            return True
        positions, self._positions = self._positions, {}
        # integrity hook: the one place a pb.Batch is built from spooled events.
        batch = pb.Batch(agent_id=self._agent_id, events=events)
        if self._seal is not None:
            self._seal(batch)
        last = events[-1]
        if last.chain_hash:
            self._head = (last.sequence, last.chain_hash)
        self._last_submit = self._monotonic()
        return self._submit(Outgoing(batch=batch, positions=positions))
