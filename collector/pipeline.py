"""Several batches of one agent stream in flight at once, answered in order.

An agent keeps up to ``collector.max_in_flight`` batches unacknowledged. Processed one
after the other, each batch waits for the previous one's bulk round trips; here a
reader thread takes batches off the stream as they arrive and starts each on a small
per-stream pool, and the acks go back strictly in arrival order.

Only the part of a batch that is independent of the others overlaps: signature and
chain checks over the batch itself, documents, and the bulk writes of its events
(idempotent: ``op_type=create`` with a fixed ``_id``). What follows the events being
indexed — the seal, the move of the agent's chain head, alerts, inline detection —
reads and writes per-agent state, so `BatchProcessor` calls `wait_turn` first: it
returns once every earlier batch of the stream has been answered, so that part runs in
batch order exactly as without the pipeline. A batch carrying sequences that an
earlier batch of the stream carried (a re-delivery) does not overlap at all: it starts
once the earlier ones are answered, so which copy counts as the duplicate is the same.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from proto.integrity import FORMAT_V2
from proto.v1 import audit_pb2

_current = threading.local()


class _Turn:
    """One batch's place in its stream: done once its Ack and every earlier one are
    decided. ``alone``: the batch starts only after every earlier batch is done."""

    def __init__(self, previous: _Turn | None, *, alone: bool = False) -> None:
        self.previous = previous
        self.alone = alone
        self.done = threading.Event()

    def finish(self) -> None:
        self.previous = None  # no chain of every batch the stream ever carried
        self.done.set()


def wait_turn() -> None:
    """Block until the earlier batches of this thread's stream are answered.

    A no-op outside a pipeline (a batch processed on the stream's own thread).
    """
    turn: _Turn | None = getattr(_current, "turn", None)
    previous = turn.previous if turn is not None else None
    if previous is not None:
        previous.done.wait()


def _in_turn(
    turn: _Turn, process: Callable[[audit_pb2.Batch], audit_pb2.Ack], batch: audit_pb2.Batch
) -> audit_pb2.Ack:
    previous = turn.previous
    if turn.alone and previous is not None:
        previous.done.wait()
    _current.turn = turn
    try:
        return process(batch)
    finally:
        _current.turn = None
        if previous is not None:
            previous.done.wait()  # done in order: a later batch's done covers the earlier
        turn.finish()


def _sequences(batch: audit_pb2.Batch) -> tuple[int | None, int | None]:
    """Lowest and highest sequence of the batch's events (in increasing order within a
    batch), or (None, None) for a batch without events.

    A format 2 batch carries its events as bytes, not parsed yet here: its seal names
    their range (not verified yet either, but it only decides what waits for what: a
    false one costs overlap, never order). Unsealed, it is taken as new sequences."""
    if batch.format_version == FORMAT_V2:
        seal = batch.seal
        if not batch.event_bytes or not batch.HasField("seal") or not seal.event_count:
            return None, None
        first, last = seal.first_sequence, seal.last_sequence
        return min(first, last), max(first, last)
    if not batch.events:
        return None, None
    first, last = batch.events[0].sequence, batch.events[-1].sequence
    return min(first, last), max(first, last)


@dataclass(frozen=True)
class Stop:
    """Why a stream ends before a batch is processed (`StreamPipeline` ``screen``):
    `ack` is sent in that batch's place (None: nothing is), `reason` is kept for the
    caller (e.g. the message that was not a Batch)."""

    how: str
    ack: audit_pb2.Ack | None = None
    reason: object = None


def _answered(ack: audit_pb2.Ack) -> Future[audit_pb2.Ack]:
    future: Future[audit_pb2.Ack] = Future()
    future.set_result(ack)
    return future


class StreamPipeline:
    """Acks for one stream's batches, up to `depth` of them being processed at once.

    ``admit()`` is asked before a batch starts (False: the collector is shutting down;
    ``refuse(batch)`` answers it and nothing more is read). ``settle()`` is asked after
    an ack is sent with nothing left in flight (False: the stream should end). Both are
    called under one lock with the in-flight count, so a stream is never reported idle
    while a batch is admitted. ``screen(message)``, when given, is asked first for every
    message read: a `Stop` ends the stream there (its ack, if any, answered after the
    earlier batches; ``stopped`` keeps it). ``how`` says afterwards why the stream ended.
    """

    def __init__(
        self,
        process: Callable[[audit_pb2.Batch], audit_pb2.Ack],
        *,
        depth: int,
        admit: Callable[[], bool],
        settle: Callable[[], bool],
        refuse: Callable[[audit_pb2.Batch], audit_pb2.Ack],
        screen: Callable[[Any], Stop | None] | None = None,
    ) -> None:
        self.process = process
        self.depth = depth
        self.admit = admit
        self.settle = settle
        self.refuse = refuse
        self.screen = screen
        self.stopped: Stop | None = None
        self.batches = 0
        self.how = "closed by the agent"
        self._lock = threading.Lock()
        self._in_flight = 0
        self._error: BaseException | None = None

    def acks(self, batches: Iterator[Any]) -> Iterator[audit_pb2.Ack]:
        """Yield one Ack per batch read from `batches`, in order. Re-raises the stream's
        error (e.g. grpc.RpcError when it was cancelled) after the acks before it."""
        slots: queue.Queue[Future[audit_pb2.Ack] | None] = queue.Queue()
        # At most `depth` batches taken off the stream and unanswered (the agent's own
        # window bounds it too); released as their acks are sent.
        room = threading.BoundedSemaphore(self.depth)
        closed = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix="collector-batch")
        reader = threading.Thread(
            target=self._read,
            args=(batches, slots, pool, room, closed),
            name="collector-stream",
            daemon=True,
        )
        reader.start()
        try:
            while (slot := slots.get()) is not None:
                yield slot.result()
                room.release()
                with self._lock:  # resumed: grpc has sent the Ack
                    self._in_flight -= 1
                    if self._in_flight == 0 and not self.settle():
                        self.how = "closed: collector shutting down"
                        return
        finally:
            closed.set()
            pool.shutdown(wait=False)
        if self._error is not None:
            raise self._error

    def _read(
        self,
        batches: Iterator[Any],
        slots: queue.Queue[Future[audit_pb2.Ack] | None],
        pool: ThreadPoolExecutor,
        room: threading.BoundedSemaphore,
        closed: threading.Event,
    ) -> None:
        previous: _Turn | None = None
        highest = -1  # the highest sequence any earlier batch of the stream carried
        try:
            while True:
                while not room.acquire(timeout=0.5):
                    if closed.is_set():  # nobody answers any more
                        return
                batch = next(batches, None)
                if batch is None:
                    return
                stop = self.screen(batch) if self.screen is not None else None
                if stop is not None:
                    self.stopped = stop
                    self.how = stop.how
                    if stop.ack is not None:
                        self.batches += 1
                        with self._lock:
                            self._in_flight += 1
                        slots.put(_answered(stop.ack))
                    return
                with self._lock:
                    self._in_flight += 1
                    admitted = self.admit()
                if not admitted:
                    self.how = "closed: collector shutting down"
                    slots.put(_answered(self.refuse(batch)))
                    return
                self.batches += 1
                # A batch that carries sequences an earlier one carried (a re-delivery,
                # a re-cut batch) runs after the earlier ones: which of two writes of one
                # _id is the duplicate then stays as without the pipeline.
                first, last = _sequences(batch)
                turn = _Turn(previous, alone=first is not None and first <= highest)
                highest = max(highest, last if last is not None else -1)
                previous = turn
                slots.put(pool.submit(_in_turn, turn, self.process, batch))
        except BaseException as exc:  # noqa: BLE001 - handed to the answering thread
            self._error = exc
        finally:
            slots.put(None)
