"""collector.pipeline: several batches of a stream in flight, acks in order, and the
per-agent part of each batch (after `wait_turn`) in batch order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from collector.pipeline import StreamPipeline, wait_turn
from proto.v1 import audit_pb2 as pb


def batches(n: int) -> Iterator[pb.Batch]:
    for k in range(1, n + 1):
        yield pb.Batch(batch_id=k, agent_id="a")


class Recorder:
    """`process` that records the order of the part after `wait_turn`. With ``overlap``,
    batch 1 finishes its first part only once batches 2..overlap have reached
    `wait_turn`: possible only when they run beside it, and then they would record
    themselves first unless `wait_turn` holds them back."""

    def __init__(self, overlap: int = 1) -> None:
        self.overlap = overlap
        self.lock = threading.Lock()
        self.ordered: list[int] = []
        self.arrived = {k: threading.Event() for k in range(1, 100)}
        self.overlapped = True

    def __call__(self, batch: pb.Batch) -> pb.Ack:
        k = batch.batch_id
        if k == 1:
            for other in range(2, self.overlap + 1):
                self.overlapped &= self.arrived[other].wait(30)
        self.arrived[k].set()
        wait_turn()
        with self.lock:
            self.ordered.append(k)
        return pb.Ack(batch_id=k, status=pb.Ack.STATUS_OK)


def pipeline(process: Recorder, depth: int, admit: list[bool] | None = None) -> StreamPipeline:
    answers = iter(admit or [])
    return StreamPipeline(
        process,
        depth=depth,
        admit=lambda: next(answers, True),
        settle=lambda: True,
        refuse=lambda b: pb.Ack(batch_id=b.batch_id, status=pb.Ack.STATUS_RETRY),
    )


def test_batches_overlap_but_acks_and_the_ordered_part_keep_the_stream_order() -> None:
    process = Recorder(overlap=4)
    stream = pipeline(process, depth=4)
    acks = list(stream.acks(batches(8)))
    assert process.overlapped  # batches 2-4 ran while batch 1 was in flight
    assert [a.batch_id for a in acks] == list(range(1, 9))
    assert process.ordered == list(range(1, 9))
    assert (stream.batches, stream.how) == (8, "closed by the agent")


def test_depth_bounds_the_batches_in_flight() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def process(batch: pb.Batch) -> pb.Ack:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return pb.Ack(batch_id=batch.batch_id)

    stream = StreamPipeline(
        process, depth=2, admit=lambda: True, settle=lambda: True, refuse=lambda b: pb.Ack()
    )
    assert [a.batch_id for a in stream.acks(batches(6))] == [1, 2, 3, 4, 5, 6]
    assert peak[0] <= 2


def test_a_batch_arriving_during_shutdown_is_answered_retry_and_reading_stops() -> None:
    process = Recorder()
    stream = pipeline(process, depth=4, admit=[True, True, False])
    acks = list(stream.acks(batches(5)))
    assert [(a.batch_id, a.status) for a in acks] == [
        (1, pb.Ack.STATUS_OK),
        (2, pb.Ack.STATUS_OK),
        (3, pb.Ack.STATUS_RETRY),
    ]
    assert stream.how == "closed: collector shutting down"


def test_the_streams_error_comes_after_the_acks_before_it() -> None:
    def broken() -> Iterator[pb.Batch]:
        yield pb.Batch(batch_id=1)
        raise ConnectionError("stream cancelled")

    stream = pipeline(Recorder(), depth=4)
    acks = stream.acks(broken())
    assert next(acks).batch_id == 1
    with pytest.raises(ConnectionError, match="stream cancelled"):
        next(acks)


def test_wait_turn_outside_a_pipeline_returns_at_once() -> None:
    wait_turn()


def test_a_batch_repeating_earlier_sequences_waits_for_them() -> None:
    def with_events(batch_id: int, sequences: range) -> pb.Batch:
        events = [pb.AuditEvent(sequence=s) for s in sequences]
        return pb.Batch(batch_id=batch_id, agent_id="a", events=events)

    started = {k: threading.Event() for k in (1, 2, 3)}
    overlapped: list[int] = []

    def process(batch: pb.Batch) -> pb.Ack:
        k = batch.batch_id
        started[k].set()
        # Batch 3 (new sequences) may run beside batch 1; batch 2 (the same ones) not.
        if k == 1 and started[2].wait(0.5):
            overlapped.append(2)
        return pb.Ack(batch_id=k)

    stream = StreamPipeline(
        process, depth=4, admit=lambda: True, settle=lambda: True, refuse=lambda b: pb.Ack()
    )
    sent = [with_events(1, range(1, 6)), with_events(2, range(3, 8)), with_events(3, range(8, 9))]
    assert [a.batch_id for a in stream.acks(iter(sent))] == [1, 2, 3]
    assert overlapped == []


def test_a_format_2_batch_repeating_sealed_sequences_waits_for_them() -> None:
    """Format 2 events travel as bytes: the seal's range says what a batch repeats."""

    def sealed(batch_id: int, first: int, last: int) -> pb.Batch:
        seal = pb.Seal(first_sequence=first, last_sequence=last, event_count=last - first + 1)
        data = [b"event"] * (last - first + 1)
        return pb.Batch(
            batch_id=batch_id, agent_id="a", format_version=2, event_bytes=data, seal=seal
        )

    started = {k: threading.Event() for k in (1, 2, 3)}
    overlapped: list[int] = []

    def process(batch: pb.Batch) -> pb.Ack:
        k = batch.batch_id
        started[k].set()
        if k == 1 and started[2].wait(0.5):
            overlapped.append(2)
        return pb.Ack(batch_id=k)

    stream = StreamPipeline(
        process, depth=4, admit=lambda: True, settle=lambda: True, refuse=lambda b: pb.Ack()
    )
    sent = [sealed(1, 1, 5), sealed(2, 3, 7), sealed(3, 8, 8)]
    assert [a.batch_id for a in stream.acks(iter(sent))] == [1, 2, 3]
    assert overlapped == []
