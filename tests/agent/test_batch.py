from __future__ import annotations

from agent.batch import Batcher, encoded_size
from agent.spool import SpoolRecord
from proto import integrity
from proto.v1 import audit_pb2 as pb


def ev(text: str = "x") -> SpoolRecord:
    return SpoolRecord(1, pb.AuditEvent(original=text).SerializeToString(), None, None)


def test_full_by_count() -> None:
    b = Batcher(max_events=3, max_bytes=10_000, max_wait_s=1.0)
    for i in range(3):
        assert b.fits(ev()) and not b.full()
        b.add(ev(), now=float(i))
    assert b.full()
    assert len(b.take()) == 3
    assert len(b) == 0 and b.deadline() is None


def test_encoded_size_is_what_the_event_adds_to_a_sealed_batch() -> None:
    data = ev("a" * 200).event
    one = pb.Batch(event_bytes=[data], seal=pb.Seal(event_hashes=[integrity.event_hash(data)]))
    two = pb.Batch(
        event_bytes=[data, data], seal=pb.Seal(event_hashes=[integrity.event_hash(data)] * 2)
    )
    assert two.ByteSize() - one.ByteSize() == encoded_size(data)


def test_bytes_limit_is_checked_before_adding() -> None:
    record = ev("a" * 100)
    size = encoded_size(record.event)
    b = Batcher(max_events=100, max_bytes=size * 2 + 1, max_wait_s=1.0)
    b.add(record, 0.0)
    b.add(record, 0.0)
    assert not b.full()
    assert not b.fits(record)  # a third would pass max_bytes


def test_oversized_event_travels_alone() -> None:
    b = Batcher(max_events=100, max_bytes=10, max_wait_s=1.0)
    big = ev("b" * 100)
    assert b.fits(big)
    b.add(big, 0.0)
    assert b.full()
    assert not b.fits(ev())


def test_due_by_age_of_first_event() -> None:
    b = Batcher(max_events=100, max_bytes=10_000, max_wait_s=0.5)
    assert not b.due(100.0)
    b.add(ev(), 10.0)
    b.add(ev(), 10.4)
    assert b.deadline() == 10.5
    assert not b.due(10.49)
    assert b.due(10.5)
    b.take()
    assert not b.due(11.0)
