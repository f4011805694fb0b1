"""The durable spool: append/read/ack, segment deletion, recovery, corruption, full."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from agent.checkpoint import FileOffset
from agent.spool import HEADER_SIZE, Entry, Spool, SpoolFormatError, drop_legacy, inspect
from proto import integrity
from proto.v1 import audit_pb2 as pb

STREAM = "0123456789abcdef"


def event(n: int) -> pb.AuditEvent:
    return pb.AuditEvent(action="login", original=f"line {n} " + "x" * 50)


def entries(start: int, count: int, key: str = "1:2") -> list[Entry]:
    return [
        Entry(event(n), key, FileOffset("/log/a.jsonl", (n + 1) * 10, "10:ab"))
        for n in range(start, start + count)
    ]


def opened(path: Path, acked: int = 0, **kw: int) -> tuple[Spool, int]:
    spool = Spool(
        path, max_bytes=kw.get("max_bytes", 1 << 20), segment_bytes=kw.get("segment_bytes", 4096)
    )
    return spool, spool.open(acked, stream_id=STREAM).next_sequence


def append_each(spool: Spool, items: list[Entry]) -> None:
    """One append (one record) per entry."""
    for item in items:
        spool.append([item])


def test_append_numbers_in_order_and_reads_back(tmp_path: Path) -> None:
    spool, first = opened(tmp_path)
    assert first == 1
    assert spool.append(entries(0, 3)) == [1, 2, 3]
    reader = spool.reader(1)
    records, losses = reader.read(10)
    assert losses == []
    assert [r.sequence for r in records] == [1, 2, 3]
    decoded = pb.AuditEvent.FromString(records[1].event)
    assert decoded.sequence == 2 and decoded.original.startswith("line 1 ")
    assert decoded.stream_id == STREAM
    # The spooled bytes are the event's one serialization, read back without re-encoding.
    assert records[1].event == integrity.event_bytes_v2(decoded)
    assert records[1].time == integrity.effective_time(decoded)
    assert records[2].file_key == "1:2" and records[2].position == FileOffset(
        "/log/a.jsonl", 30, "10:ab"
    )
    assert reader.read(10) == ([], [])
    reader.close()
    spool.close()


def test_segments_roll_and_are_deleted_only_when_fully_acked(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path, segment_bytes=400)
    for start in range(0, 200, 10):
        spool.append(entries(start, 10))
    names = spool.segment_names()
    assert len(names) > 3
    firsts = [int(n.split(".")[0]) for n in names]
    spool.ack(firsts[1] - 2)  # the first segment still holds an unacked record
    assert spool.segment_names() == names
    spool.ack(firsts[1] - 1)
    assert spool.segment_names() == names[1:]
    spool.ack(200)
    assert spool.segment_names() == names[-1:]  # the active segment stays
    assert spool.append(entries(200, 1)) == [201]
    reader = spool.reader(1)  # starts at what is left
    records, _ = reader.read(1000)
    assert records and records[0].sequence == firsts[-1] and records[-1].sequence == 201
    reader.close()
    spool.close()


def test_reopen_recovers_next_sequence_and_unacked_positions(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path)
    spool.append(entries(0, 5))
    spool.append(entries(5, 2, key="3:4"))
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    recovery = again.open(acked=3, stream_id=STREAM)
    assert recovery.next_sequence == 8
    assert recovery.unacked == 4
    assert recovery.positions == {
        "1:2": FileOffset("/log/a.jsonl", 50, "10:ab"),
        "3:4": FileOffset("/log/a.jsonl", 70, "10:ab"),
    }
    assert again.append(entries(7, 1)) == [8]
    records, _ = again.reader(4).read(100)
    assert [r.sequence for r in records] == [4, 5, 6, 7, 8]
    again.close()


def test_torn_tail_is_cut_and_its_numbers_reused(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path)
    append_each(spool, entries(0, 3))
    (segment,) = spool.segment_names()
    spool.close()
    path = tmp_path / segment
    size = path.stat().st_size
    with path.open("r+b") as f:  # a crash in the middle of writing the third record
        f.truncate(size - 7)
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    recovery = again.open(acked=0, stream_id=STREAM)
    assert recovery.next_sequence == 3 and recovery.torn_bytes > 0
    assert again.append(entries(2, 1)) == [3]
    records, losses = again.reader(1).read(10)
    assert [r.sequence for r in records] == [1, 2, 3] and losses == []
    again.close()


def test_corrupt_record_is_skipped_and_reported_as_a_loss(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path)
    append_each(spool, entries(0, 5))
    (segment,) = spool.segment_names()
    path = tmp_path / segment
    data = bytearray(path.read_bytes())
    record_size = len(data) // 5  # records of equal size
    data[2 * record_size + HEADER_SIZE + 3] ^= 0xFF  # flip a payload byte of sequence 3
    path.write_bytes(bytes(data))
    records, losses = spool.reader(1).read(10)
    assert [r.sequence for r in records] == [1, 2, 4, 5]
    (loss,) = losses
    assert (loss.first, loss.last, loss.segment) == (3, 3, segment)
    assert loss.start == 2 * record_size and loss.end == 3 * record_size
    spool.close()


def test_corrupt_header_of_the_last_record_before_a_closed_segment_end(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path, segment_bytes=400)
    for start in range(0, 120, 10):
        spool.append(entries(start, 10))
    first, second = spool.segment_names()[:2]
    next_first = int(second.split(".")[0])
    path = tmp_path / first
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last record of the first (closed) segment
    path.write_bytes(bytes(data))
    reader = spool.reader(1)
    records, losses = reader.read(1000)
    sequences = [r.sequence for r in records]
    # The corrupt record is the last append of the segment: its ten events are lost.
    assert next_first - 11 in sequences and next_first - 10 not in sequences
    assert next_first in sequences
    assert [(x.first, x.last) for x in losses] == [(next_first - 10, next_first - 1)]
    reader.close()
    spool.close()


def test_full_spool_reports_full_until_acks_free_room(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path, max_bytes=4096, segment_bytes=1024)
    sequence = 0
    while not spool.full():
        sequence = spool.append(entries(sequence, 20))[-1]
    assert spool.size_bytes() >= 4096
    spool.ack(sequence)
    assert not spool.full()
    spool.close()


def test_files_are_private(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path / "spool")
    spool.append(entries(0, 1))
    assert os.stat(tmp_path / "spool").st_mode & 0o777 == 0o700
    (segment,) = spool.segment_names()
    assert os.stat(tmp_path / "spool" / segment).st_mode & 0o777 == 0o600
    spool.close()


def test_one_append_is_one_record_and_a_corrupt_one_loses_that_append(tmp_path: Path) -> None:
    spool, _ = opened(tmp_path)
    spool.append(entries(0, 4))
    spool.append(entries(4, 4))
    (segment,) = spool.segment_names()
    path = tmp_path / segment
    data = bytearray(path.read_bytes())
    assert data[:4] == b"CRS2" and data.count(b"CRS2") == 2
    data[HEADER_SIZE + 5] ^= 0xFF  # inside the first append's frame
    path.write_bytes(bytes(data))
    records, losses = spool.reader(1).read(10)
    assert [r.sequence for r in records] == [5, 6, 7, 8]
    assert [(x.first, x.last) for x in losses] == [(1, 4)]
    spool.close()


def test_reader_starts_inside_an_append_and_returns_at_most_what_is_asked(
    tmp_path: Path,
) -> None:
    spool, _ = opened(tmp_path)
    spool.append(entries(0, 10))
    reader = spool.reader(4)
    first, _ = reader.read(3)
    rest, _ = reader.read(100)
    assert [r.sequence for r in first] == [4, 5, 6]
    assert [r.sequence for r in rest] == [7, 8, 9, 10]
    assert reader.next_sequence == 11
    reader.close()
    spool.close()


def legacy_segment(path: Path, sequences: range) -> None:
    """A segment as stream format 1 wrote it (magic CRS1, one record per event)."""
    out = bytearray()
    for sequence in sequences:
        payload = b"payload %d" % sequence
        crc = zlib.crc32(payload, zlib.crc32(struct.pack(">Q", sequence)))
        out += struct.pack(">4sIIQ", b"CRS1", len(payload), crc, sequence) + payload
    path.write_bytes(bytes(out))


def test_an_older_spool_is_dropped_when_acked_and_refused_when_not(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    legacy_segment(spool_dir / "00000000000000000001.seg", range(1, 11))
    with pytest.raises(SpoolFormatError) as refused:
        drop_legacy(spool_dir, acked=9)
    message = str(refused.value)
    assert "00000000000000000001.seg" in message and "up to sequence 10" in message
    assert "crm-audit-agent status" in message and "\n" not in message
    assert (spool_dir / "00000000000000000001.seg").exists()  # nothing dropped
    with pytest.raises(SpoolFormatError, match="older agent"):
        Spool(spool_dir, max_bytes=1 << 20, segment_bytes=4096).open(0, stream_id=STREAM)
    assert inspect(spool_dir, 0).legacy_segments == 1
    assert drop_legacy(spool_dir, acked=10) == ["00000000000000000001.seg"]
    spool, first = opened(spool_dir)
    assert first == 1 and spool.append(entries(0, 1)) == [1]
    spool.close()


def test_bytes_per_event_on_disk_stay_small(tmp_path: Path) -> None:
    # One zstd frame per append compresses across similar events (640 B/event with a
    # frame per event in the older format).
    spool, _ = opened(tmp_path, segment_bytes=1 << 20)
    for start in range(0, 1000, 100):
        spool.append(entries(start, 100))
    assert spool.size_bytes() / 1000 < 40
    spool.close()


def test_large_records_of_mixed_sizes_and_a_corrupt_one_among_them(
    tmp_path: Path,
) -> None:
    # Reads are served from a read-ahead window (agent.spool._READ_AHEAD); records
    # bigger than it, records straddling its edge and a corrupt one among them must
    # read back exactly as written. Random bytes keep zstd from shrinking them.
    spool, _ = opened(tmp_path, max_bytes=64 << 20, segment_bytes=32 << 20)
    sizes = [100, 300_000, 7, 200_000, 90_000, 400_000, 1_000, 260_000]
    payloads = [os.urandom(size).hex() for size in sizes]
    append_each(spool, [Entry(pb.AuditEvent(action="login", original=text)) for text in payloads])
    (segment,) = spool.segment_names()
    path = tmp_path / segment
    data = bytearray(path.read_bytes())
    starts, pos = [], 0
    for _ in sizes:  # walk the record headers to find where sequence 6 starts
        starts.append(pos)
        length = int.from_bytes(data[pos + 4 : pos + 8], "big")
        pos += HEADER_SIZE + length
    assert pos == len(data)
    data[starts[5] + HEADER_SIZE + 150_000] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = spool.reader(1)
    records, losses = reader.read(100)
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5, 7, 8]
    for record in records:
        original = pb.AuditEvent.FromString(record.event).original
        assert original == payloads[record.sequence - 1]
    assert [(x.first, x.last, x.start, x.end) for x in losses] == [(6, 6, starts[5], starts[6])]
    reader.close()
    spool.close()
