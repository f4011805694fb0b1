"""Spool → sealed batches → shipper. Runs in its own thread; knows nothing of files or
parsing.

Reads committed records (event bytes, never decoded) in sequence order from the spool
and closes a batch by count, bytes or age (`batch.*`), then hands it to the shipper,
whose `submit` blocks while `max_in_flight` batches wait: memory holds at most
2 x max_in_flight batches plus the open one, whatever the backlog on disk. Corrupt
records met in the spool become `agent.spool_loss` events, appended to the spool (and
so numbered) like any other event.

Integrity (stream format 2). The outbox is where the stream head is computed: each
event's hash over its spooled bytes (proto.integrity.event_hash), folded into the head
from the acked checkpoint's head (genesis_v2 for a new stream). A batch is sealed
once, right after it is built (agent.sealing.seal_events: every event's hash, the
head before and after, the events' time range), so a batch the shipper sends again goes
out byte for byte the same. Since the head depends only on the stored bytes, a restart
recomputes the same heads from the spool records past the checkpoint — the chain needs
no state of its own written per append. A batch never spans a gap in the sequences
(records lost to spool corruption): the next batch's seal chains on from the head
before the gap, so the collector sees the gap between two intact seals instead of an
unverifiable batch. While idle, a signed heartbeat restating the head as submitted so
far goes out every `heartbeat_interval_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from agent import notices
from agent.batch import Batcher
from agent.checkpoint import FileOffset
from agent.sealing import AgentKey, heartbeat_seal, seal_events
from agent.ship import Outgoing
from agent.spool import Entry, Loss, Spool, SpoolReader, SpoolRecord
from proto import integrity
from proto.v1 import audit_pb2 as pb

READ_BUDGET = 500
IDLE_WAIT_S = 0.5


class Outbox:
    """Feeds the shipper from the spool (see module docstring).

    `head` is the acked checkpoint's (sequence, stream head): where the reader starts.
    """

    def __init__(
        self,
        *,
        agent_id: str,
        stream_id: str,
        key: AgentKey,
        observer: pb.Observer,
        spool: Spool,
        reader: SpoolReader,
        batcher: Batcher,
        submit: Callable[[Outgoing], bool],
        wall_ns: Callable[[], int],
        monotonic: Callable[[], float],
        head: tuple[int, bytes],
        heartbeat_interval_s: float = 60.0,
        may_beat: Callable[[], bool] = lambda: True,
    ) -> None:
        self._agent_id = agent_id
        self._stream_id = stream_id
        self._key = key
        self._observer = observer
        self._spool = spool
        self._reader = reader
        self._batcher = batcher
        self._submit = submit
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self._positions: dict[str, FileOffset] = {}
        # The head after the last event submitted (or the acked head at start): the
        # next batch chains on from it and heartbeats restate it — never ahead of what
        # the collector got.
        self._head_sequence, self._head = head
        self._heartbeat_interval_s = heartbeat_interval_s
        self._may_beat = may_beat  # False while batches are in flight: they say more
        self._open_last = 0  # sequence of the open batch's last event
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
                if not self._batch(records):
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

    def _batch(self, records: Sequence[SpoolRecord]) -> bool:
        """Add `records` to batches, submitting each that closes; False once aborted."""
        batcher = self._batcher
        # One clock reading per read pass: it only dates when a batch opened (max_wait_s).
        now = self._monotonic()
        for record in records:
            follows = self._open_last == 0 or record.sequence == self._open_last + 1
            if (not follows or not batcher.fits(record)) and not self._send():
                return False
            batcher.add(record, now)
            self._open_last = record.sequence
            if record.file_key is not None and record.position is not None:
                self._positions[record.file_key] = record.position
            if batcher.full() and not self._send():
                return False
        return True

    def _loss_event(self, loss: Loss) -> pb.AuditEvent:
        event = notices.spool_loss(loss, self._wall_ns())
        event.observed_unix_nano = self._wall_ns()
        event.observer.CopyFrom(self._observer)
        return event

    def _beat(self, now: float) -> bool:
        """Submit a heartbeat if idle for the interval; False when the shipper is aborted."""
        if len(self._batcher) or now - self._last_submit < self._heartbeat_interval_s:
            return True
        self._last_submit = now
        if not self._may_beat():
            return True
        sealed = heartbeat_seal(
            self._key,
            agent_id=self._agent_id,
            stream_id=self._stream_id,
            sequence=self._head_sequence,
            head=self._head,
            now_unix_nano=self._wall_ns(),
        )
        return self._submit(Outgoing(agent_id=self._agent_id, seal=sealed))

    def reseal(
        self, first: int, prev: bytes, hashes: Sequence[bytes], times: Sequence[int]
    ) -> pb.Seal:
        """A seal over consecutive events (also the shipper's, for halves of a batch)."""
        return seal_events(
            self._key,
            agent_id=self._agent_id,
            stream_id=self._stream_id,
            first_sequence=first,
            prev_head=prev,
            event_hashes=hashes,
            time_range=(min(times), max(times)),
            now_unix_nano=self._wall_ns(),
        )

    def _send(self) -> bool:
        """Seal and submit the open batch (if any); False when the shipper was aborted."""
        records = self._batcher.take()
        self._open_last = 0
        if not records:
            return True
        positions, self._positions = self._positions, {}
        data = [r.event for r in records]
        times = [r.time for r in records]
        hashes = [integrity.event_hash(d) for d in data]
        sealed = self.reseal(records[0].sequence, self._head, hashes, times)
        self._head_sequence, self._head = sealed.last_sequence, sealed.chain_head
        self._last_submit = self._monotonic()
        item = Outgoing(
            agent_id=self._agent_id,
            seal=sealed,
            event_bytes=data,
            times=times,
            positions=positions,
        )
        return self._submit(item)
