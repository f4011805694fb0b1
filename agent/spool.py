"""Durable spool: the on-disk queue between reading and shipping (state_dir/spool).

Format. Append-only segment files named after the first sequence they hold
(`00000000000000000001.seg`). A segment is a run of records; a record is

    magic "CRS1" | u32 length | u32 crc32(sequence ‖ payload) | u64 sequence | payload

(big endian), the payload one zstd frame of msgpack
`[event bytes, file key, path, resume offset, fingerprint]` — the serialized
`AuditEvent` (sequence already set) and the position its file resumes from once the
event is safe; the last four are nil for events not read from a file.

Sequences. `append` is the one place an event is numbered: sequences are assigned in
append order, written, then fsynced — one fsync per `append` call (the pipeline
appends what one read pass produced, ≤ 1000 records), so a record, its sequence and
its file position become durable together and nothing unsynced is ever shipped
(readers see only the committed, synced prefix).

Recovery (`open`). Given the acked watermark from the checkpoint, the segments are
scanned: `next_sequence` = one past the last record, and the positions of records
past the watermark are replayed over the checkpoint's. A torn tail (a record cut short
by a crash, with nothing valid after it in the last segment) was never synced, hence
never shipped nor acked, and is truncated away: its lines are read again and get the
same sequences. Segments entirely at or below the watermark are deleted.

Corruption. A record whose checksum (or decoding) fails elsewhere is skipped: the
reader resynchronizes on the next valid record and reports a `Loss` naming the lost
sequence range and the bytes, which the outbox turns into an `agent.spool_loss`
event. Never a crash. (A loss seen again after a restart before the loss event was
acked is reported again.)

Bounds. `full()` is true once the segments hold `max_bytes`; the pipeline then stops
reading (offsets stay put) until acks delete segments. One append may overshoot by
one read pass. A segment is deleted only when every record in it is acked, i.e. once
a later segment exists and the watermark reached the record before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zstandard

from agent.checkpoint import FileOffset
from agent.errors import SpoolWriteError
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

MAGIC = b"CRS1"
_HEADER = struct.Struct(">4sIIQ")
_SEQ = struct.Struct(">Q")
HEADER_SIZE = _HEADER.size
MAX_PAYLOAD = 64 << 20  # a sane bound: larger lengths are corruption
_SCAN_CHUNK = 1 << 20
SUFFIX = ".seg"
DIR_NAME = "spool"  # under state_dir


@dataclass(frozen=True, slots=True)
class Entry:
    """An event to spool and, for an event read from a file, that file's resume position."""

    event: pb.AuditEvent
    file_key: str | None = None
    position: FileOffset | None = None


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from the spool."""

    sequence: int
    event: bytes  # serialized AuditEvent
    file_key: str | None
    position: FileOffset | None


@dataclass(frozen=True, slots=True)
class Loss:
    """Records lost to corruption: sequences `first..last` and bytes `start..end` of `segment`."""

    first: int
    last: int
    segment: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `open` found: where numbering resumes and where each file resumes."""

    next_sequence: int
    positions: dict[str, FileOffset]
    unacked: int
    torn_bytes: int
    last_event: bytes | None = None  # the last spooled event, serialized (chain recovery)


@dataclass
class _Segment:
    first: int
    path: Path
    size: int
    closed: bool


@dataclass(frozen=True, slots=True)
class _Good:
    pos: int
    end: int
    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Bad:
    pos: int
    resume: int  # position of the next valid record, or the limit


def _name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_at(fd: int, pos: int, limit: int) -> tuple[int, int, bytes] | None:
    """(end, sequence, payload) of a record at `pos` that fits below `limit` and checks out."""
    if pos + HEADER_SIZE > limit:
        return None
    header = os.pread(fd, HEADER_SIZE, pos)
    if len(header) < HEADER_SIZE:
        return None
    magic, length, crc, sequence = _HEADER.unpack(header)
    end = pos + HEADER_SIZE + length
    if magic != MAGIC or length > MAX_PAYLOAD or end > limit:
        return None
    payload = os.pread(fd, length, pos + HEADER_SIZE)
    if len(payload) != length or zlib.crc32(payload, zlib.crc32(_SEQ.pack(sequence))) != crc:
        return None
    return end, sequence, payload


def _resync(fd: int, pos: int, limit: int) -> int:
    """Position of the next valid record after `pos`, or `limit` when there is none."""
    at = pos + 1
    while at < limit:
        chunk = os.pread(fd, min(_SCAN_CHUNK, limit - at), at)
        if not chunk:
            break
        found = chunk.find(MAGIC)
        while found >= 0:
            if _valid_at(fd, at + found, limit) is not None:
                return at + found
            found = chunk.find(MAGIC, found + 1)
        at += max(1, len(chunk) - len(MAGIC) + 1)
    return limit


def _records(fd: int, pos: int, limit: int) -> Iterator[_Good | _Bad]:
    """The records of a segment between `pos` and `limit`, corrupt stretches as `_Bad`."""
    while pos < limit:
        found = _valid_at(fd, pos, limit)
        if found is None:
            resume = _resync(fd, pos, limit)
            yield _Bad(pos, resume)
            pos = resume
            continue
        end, sequence, payload = found
        yield _Good(pos, end, sequence, payload)
        pos = end


def _decode(sequence: int, payload: bytes, dctx: zstandard.ZstdDecompressor) -> SpoolRecord:
    raw = dctx.decompress(payload, max_output_size=MAX_PAYLOAD)
    event, key, path, offset, fingerprint = msgpack.unpackb(raw, raw=False)
    if not isinstance(event, bytes):
        raise ValueError("event is not bytes")
    position = None
    if key is not None:
        position = FileOffset(str(path), int(offset), str(fingerprint))
    return SpoolRecord(sequence, event, None if key is None else str(key), position)


class Spool:
    """Checksummed, segmented, append-only event queue on disk (see module docstring).

    Thread-safe: the read thread appends, the ship side reads, acks and may append
    loss events.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        link: Callable[[pb.AuditEvent], None] | None = None,
        committed: Callable[[], None] | None = None,
        aborted: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        # Hooks for the hash chain, so every event is linked exactly when it is
        # numbered: `link` sees each event right after it got its sequence (in order,
        # under the spool lock); `committed` runs after the fsync;
        # `aborted` when an append that may have linked events keeps nothing (its
        # sequences will be reused, so the links must be undone). All under the lock.
        self._link = link
        self._committed = committed
        self._aborted = aborted
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._cond = threading.Condition()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._next_sequence = 1
        self._acked = 0
        self._cctx = zstandard.ZstdCompressor(level=3)

    # -- lifecycle -----------------------------------------------------------------------

    def open(self, acked: int) -> Recovery:
        """Scan the segments, drop acked ones and a torn tail; ready for appends."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._acked = acked
        found = []
        for path in self.directory.iterdir():
            if path.suffix == SUFFIX and path.stem.isdigit():
                found.append(_Segment(int(path.stem), path, path.stat().st_size, True))
        found.sort(key=lambda s: s.first)
        next_sequence = acked + 1
        positions: dict[str, FileOffset] = {}
        unacked = torn = 0
        last: _Good | None = None
        dctx = zstandard.ZstdDecompressor()
        for index, segment in enumerate(found):
            last_segment = index == len(found) - 1
            next_sequence = max(next_sequence, segment.first)
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                records = list(_records(fd, 0, segment.size))
            finally:
                os.close(fd)
            tail_bad = records and isinstance(records[-1], _Bad) and last_segment
            for item in records:
                if isinstance(item, _Good):
                    last = item
                    next_sequence = max(next_sequence, item.sequence + 1)
                    if item.sequence > acked:
                        unacked += 1
                        record = self._decode_or_none(item, dctx)
                        if record is not None and record.file_key and record.position:
                            positions[record.file_key] = record.position
            if tail_bad:
                bad = records[-1]
                assert isinstance(bad, _Bad)
                torn = segment.size - bad.pos
                log.warning(
                    "spool: %s ends with %d bytes of an incomplete write; removed",
                    segment.path.name,
                    torn,
                )
                os.truncate(segment.path, bad.pos)
                segment.size = bad.pos
        self._segments = found
        self._next_sequence = next_sequence
        self._delete_acked()
        if not self._segments:
            self._new_segment()
        else:
            active = self._segments[-1]
            active.closed = False
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        last_record = self._decode_or_none(last, dctx) if last is not None else None
        last_event = last_record.event if last_record is not None else None
        return Recovery(next_sequence, positions, unacked, torn, last_event)

    @staticmethod
    def _decode_or_none(item: _Good, dctx: zstandard.ZstdDecompressor) -> SpoolRecord | None:
        try:
            return _decode(item.sequence, item.payload, dctx)
        except (ValueError, TypeError, zstandard.ZstdError, msgpack.UnpackException):
            return None

    def close(self) -> None:
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._cond.notify_all()

    # -- writing -------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> list[int]:
        """Number, write and fsync `entries`; their sequences. SpoolWriteError on I/O failure
        (nothing of the call is kept: the file is cut back and the numbers are reused)."""
        if not entries:
            return []
        with self._cond:
            if self._fd is None:
                raise SpoolWriteError("spool is closed")
            active = self._segments[-1]
            first = self._next_sequence
            buffer = bytearray()
            try:
                for offset, entry in enumerate(entries):
                    sequence = first + offset
                    # The one place an event gets its sequence, in sequence order, right
                    # before it is made durable: the chain must link events in that order.
                    entry.event.sequence = sequence
                    if self._link is not None:
                        self._link(entry.event)
                    buffer += self._encode(sequence, entry)
                view = memoryview(buffer)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):  # else the next start removes the torn tail
                    os.ftruncate(self._fd, active.size)
                if self._aborted is not None:
                    self._aborted()
                raise SpoolWriteError(f"cannot write spool {active.path}: {exc}") from None
            except BaseException:
                if self._aborted is not None:
                    self._aborted()
                raise
            active.size += len(buffer)
            self._next_sequence = first + len(entries)
            if self._committed is not None:
                self._committed()
            if active.size >= self.segment_bytes:
                self._roll()
            self._cond.notify_all()
            return list(range(first, self._next_sequence))

    def _encode(self, sequence: int, entry: Entry) -> bytes:
        pos = entry.position
        body = msgpack.packb(
            [
                entry.event.SerializeToString(),
                entry.file_key,
                pos.path if pos else None,
                pos.offset if pos else None,
                pos.fingerprint if pos else None,
            ],
            use_bin_type=True,
        )
        payload = self._cctx.compress(body)
        crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(sequence)))
        return _HEADER.pack(MAGIC, len(payload), crc, sequence) + payload

    def _roll(self) -> None:
        assert self._fd is not None
        previous = self._fd
        try:
            self._new_segment()
        except OSError as exc:
            # E.g. ENOSPC: keep appending to the current segment; rolled at the next append.
            log.warning("spool: cannot start a new segment (%s); the current one grows", exc)
            return
        os.close(previous)
        self._segments[-2].closed = True

    def _new_segment(self) -> None:
        path = self.directory / _name(self._next_sequence)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd = fd
        self._segments.append(_Segment(self._next_sequence, path, 0, False))

    # -- state ---------------------------------------------------------------------------

    @property
    def next_sequence(self) -> int:
        with self._cond:
            return self._next_sequence

    def size_bytes(self) -> int:
        with self._cond:
            return sum(s.size for s in self._segments)

    def full(self) -> bool:
        """True while the spool holds `max_bytes` or more: reading must pause."""
        return self.size_bytes() >= self.max_bytes

    def segment_names(self) -> list[str]:
        with self._cond:
            return [s.path.name for s in self._segments]

    # -- acks ----------------------------------------------------------------------------

    def ack(self, sequence: int) -> None:
        """Everything up to `sequence` is delivered: delete segments holding nothing newer."""
        with self._cond:
            self._acked = max(self._acked, sequence)
            self._delete_acked()
            self._cond.notify_all()

    def _delete_acked(self) -> None:
        deleted = False
        while len(self._segments) > 1 and self._segments[1].first - 1 <= self._acked:
            segment = self._segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()
            deleted = True
        if deleted:
            _fsync_dir(self.directory)

    # -- reading -------------------------------------------------------------------------

    def _snapshot(self) -> tuple[list[tuple[int, Path, int, bool]], int]:
        with self._cond:
            segments = [(s.first, s.path, s.size, s.closed) for s in self._segments]
            return segments, self._next_sequence

    def wait(self, known_next: int, timeout: float) -> None:
        """Block until a sequence ≥ `known_next` is committed, or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._next_sequence > known_next, timeout)

    def reader(self, start: int) -> SpoolReader:
        """A cursor yielding committed records with sequence ≥ `start`, in order."""
        return SpoolReader(self, start)


class SpoolReader:
    """Reads the spool in sequence order from a start sequence; only one thread uses it."""

    def __init__(self, spool: Spool, start: int) -> None:
        self._spool = spool
        self._start = start
        self._segment: int | None = None  # first sequence of the segment being read
        self._fd: int | None = None
        self._pos = 0
        self._prev = start - 1  # last valid sequence seen (read or skipped)
        self._dctx = zstandard.ZstdDecompressor()
        self.next_sequence = start  # one past the last sequence returned

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, max_records: int) -> tuple[list[SpoolRecord], list[Loss]]:
        """Up to `max_records` committed records past the cursor, plus any losses met."""
        out: list[SpoolRecord] = []
        losses: list[Loss] = []
        while len(out) < max_records:
            segments, committed_next = self._spool._snapshot()
            current = self._locate(segments)
            if current is None:
                break
            index, (first, path, size, closed) = current
            if self._fd is None:
                try:
                    self._fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    self._advance(segments, index)
                    continue
                self._prev = max(self._prev, first - 1)
            progressed = False
            for item in _records(self._fd, self._pos, size):
                progressed = True
                if isinstance(item, _Bad):
                    upto = self._next_first(segments, index, item.resume, committed_next)
                    self._lost(path.name, item, upto, losses)
                    self._pos = item.resume
                    continue
                self._pos = item.end
                self._prev = item.sequence
                if item.sequence < self._start:
                    continue
                try:
                    record = _decode(item.sequence, item.payload, self._dctx)
                except (ValueError, TypeError, zstandard.ZstdError, msgpack.UnpackException):
                    self._lost(path.name, _Bad(item.pos, item.end), item.sequence + 1, losses)
                    self._prev = item.sequence
                    continue
                out.append(record)
                self.next_sequence = item.sequence + 1
                if len(out) >= max_records:
                    break
            if len(out) >= max_records:
                break
            if closed and self._pos >= size:
                self._advance(segments, index)
                continue
            if not progressed:
                break
        return out, losses

    def _locate(
        self, segments: list[tuple[int, Path, int, bool]]
    ) -> tuple[int, tuple[int, Path, int, bool]] | None:
        if not segments:
            return None
        if self._segment is None:
            # Start in the last segment whose first sequence is ≤ start (else the first).
            index = 0
            for i, seg in enumerate(segments):
                if seg[0] <= self._start:
                    index = i
            self._segment = segments[index][0]
            self._pos = 0
        for i, seg in enumerate(segments):
            if seg[0] == self._segment:
                return i, seg
        # Our segment is gone (acked and deleted, only possible if we lag): next one up.
        later = [i for i, seg in enumerate(segments) if seg[0] > self._segment]
        if not later:
            return None
        self.close()
        self._segment, self._pos = segments[later[0]][0], 0
        return later[0], segments[later[0]]

    def _advance(self, segments: list[tuple[int, Path, int, bool]], index: int) -> None:
        self.close()
        if index + 1 < len(segments):
            self._segment, self._pos = segments[index + 1][0], 0

    def _next_first(
        self,
        segments: list[tuple[int, Path, int, bool]],
        index: int,
        resume: int,
        committed_next: int,
    ) -> int:
        """The first sequence after a corrupt stretch ending at `resume`."""
        _first, _path, size, _closed = segments[index]
        if resume < size and self._fd is not None:
            found = _valid_at(self._fd, resume, size)
            if found is not None:
                return found[1]
        if index + 1 < len(segments):
            return segments[index + 1][0]
        return committed_next

    def _lost(self, segment: str, bad: _Bad, upto: int, losses: list[Loss]) -> None:
        first = max(self._prev + 1, self._start)
        last = upto - 1
        log.error(
            "spool: corrupt bytes %d-%d in %s: sequences %s skipped",
            bad.pos,
            bad.resume,
            segment,
            f"{first}-{last}" if last >= first else "(none)",
        )
        if last >= first:
            losses.append(Loss(first, last, segment, bad.pos, bad.resume))
            self.next_sequence = max(self.next_sequence, last + 1)
        self._prev = max(self._prev, last)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What `inspect` found in a spool directory, read-only."""

    segments: int
    bytes: int
    next_sequence: int  # one past the last record (acked + 1 when empty)
    unacked_records: int
    unacked_bytes: int
    positions: dict[str, FileOffset]  # file key → resume position after its last record
    corrupt_bytes: int


def inspect(directory: Path, acked: int) -> SpoolStats:
    """Scan the spool without changing it (the agent may be running and appending):
    nothing is truncated or deleted, a record cut short at the very end is taken for
    one being written."""
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit())
    except FileNotFoundError:
        names = []
    segments = total = unacked = unacked_bytes = corrupt = 0
    next_sequence = acked + 1
    positions: dict[str, FileOffset] = {}
    dctx = zstandard.ZstdDecompressor()
    for index, path in enumerate(names):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # acked and deleted meanwhile
        try:
            size = os.fstat(fd).st_size
            segments += 1
            total += size
            next_sequence = max(next_sequence, int(path.stem))
            records = list(_records(fd, 0, size))
        finally:
            os.close(fd)
        for n, item in enumerate(records):
            if isinstance(item, _Bad):
                last = index == len(names) - 1 and n == len(records) - 1
                corrupt += 0 if last else item.resume - item.pos
                continue
            next_sequence = max(next_sequence, item.sequence + 1)
            if item.sequence <= acked:
                continue
            unacked += 1
            unacked_bytes += item.end - item.pos
            record = Spool._decode_or_none(item, dctx)
            if record is not None and record.file_key and record.position:
                positions[record.file_key] = record.position
    return SpoolStats(segments, total, next_sequence, unacked, unacked_bytes, positions, corrupt)
