"""Durable spool: the on-disk queue between reading and shipping (state_dir/spool).

Format (stream format 2, docs/design/stream-format-v2.md "Spool v2"). Append-only
segment files named after the first sequence they hold (`00000000000000000001.seg`).
A segment is a run of records, one record per `append` call (one read pass):

    magic "CRS2" | u32 length | u32 crc32(first ‖ count ‖ payload) | u64 first | u32 count
    | payload

(big endian; the segment therefore starts with the magic `CRS2`). The payload is one
zstd frame of `count x (u32 length ‖ event bytes)` followed by one msgpack table for
the whole append: `[times, files, refs, offsets]` — per event its effective time
(proto.integrity.effective_time, for the seal's time range) and the position its
file resumes from once the event is safe (`refs[i]` indexes `files` =
`[file key, path, fingerprint]`, -1 for events not read from a file). The event bytes
are proto.integrity.event_bytes_v2 of the numbered event: made once, here, and from
then on hashed, batched, shipped and stored as they are — reading yields them without
decoding them.

Sequences. `append` is the one place an event is numbered and given the stream id:
sequences are assigned in append order, serialized, written, then fsynced — one fsync
per `append` call (≤ 1000 records), so a record, its sequences and its file positions
become durable together and nothing unsynced is ever shipped (readers see only the
committed, synced prefix). The spool knows nothing of the hash chain: the stream head
is a function of the stored bytes, recomputed by whoever reads them (agent.outbox).

Recovery (`open`). Given the acked watermark from the checkpoint, the segments are
scanned: `next_sequence` = one past the last record, and the positions of events past
the watermark are replayed over the checkpoint's. A torn tail (a record cut short by a
crash, with nothing valid after it in the last segment) was never synced, hence never
shipped nor acked, and is truncated away: its lines are read again and get the same
sequences. Segments entirely at or below the watermark are deleted.

Corruption. A record whose checksum (or decoding) fails elsewhere is skipped: the
reader resynchronizes on the next valid record and reports a `Loss` naming the lost
sequence range (every event of the append) and the bytes, which the outbox turns into
an `agent.spool_loss` event. Never a crash. (A loss seen again after a restart before
the loss event was acked is reported again.)

Upgrade from stream format 1. Segments of an older agent (magic `CRS1`) are not
drained by this version: `drop_legacy` deletes them when every record in them is acked
(an agent stopped cleanly after delivering everything, the usual upgrade), and
otherwise refuses to start with one line naming the segment and what to do (run the
previous version until `crm-audit-agent status` shows no unacked events, then
upgrade). Nothing is ever dropped unacked.

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
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import msgpack
import zstandard

from agent import oversize
from agent.checkpoint import FileOffset
from agent.durable import fsync_dir
from agent.errors import AgentError, SpoolWriteError
from agent.wire import sequence_field, stream_field
from proto import integrity
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

MAGIC = b"CRS2"
LEGACY_MAGIC = b"CRS1"  # stream format 1 (msgpack record per event)
_HEADER = struct.Struct(">4sIIQI")
_CRC_PREFIX = struct.Struct(">QI")
_LEGACY_HEADER = struct.Struct(">4sIIQ")
_LEN = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
MAX_PAYLOAD = 64 << 20  # a sane bound: larger lengths are corruption
MAX_FRAME = 256 << 20  # decompressed
_SCAN_CHUNK = 1 << 20
SUFFIX = ".seg"
DIR_NAME = "spool"  # under state_dir


class SpoolFormatError(AgentError):
    """The spool holds segments this agent cannot ship (an older format, unacked)."""


class Entry(NamedTuple):
    """An event to spool and, for an event read from a file, that file's resume position.

    Named tuples (this and SpoolRecord), not frozen dataclasses: one is made per event,
    and a frozen dataclass takes ~0.35 µs more to build."""

    event: pb.AuditEvent
    file_key: str | None = None
    position: FileOffset | None = None
    # For an event parsed from a record: the record's size in the file. Such an event is
    # cut to oversize.LIMIT (agent.oversize) when serialized, if it is larger.
    record_bytes: int | None = None


class EncodedEntry(NamedTuple):
    """An event already serialized by the agent's compiled kernel (agent.native): its
    deterministic bytes, stamped but not numbered (no sequence, no stream id: fields 1
    and 27, the first and the last, which the spool writes around them), and its
    effective time. The spool stores exactly what `event_bytes_v2` would give for it."""

    body: bytes
    time: int
    source: str  # the source's name, for the spooled-events metric
    file_key: str | None = None
    position: FileOffset | None = None
    record_bytes: int | None = None


AnyEntry = Entry | EncodedEntry


class SpoolRecord(NamedTuple):
    """One event read back from the spool."""

    sequence: int
    event: bytes  # event_bytes_v2 of the numbered event, exactly as spooled
    file_key: str | None
    position: FileOffset | None
    time: int = 0  # proto.integrity.effective_time of the event


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
    sequence: int  # first sequence of the append
    count: int
    payload: bytes

    @property
    def last(self) -> int:
        return self.sequence + self.count - 1


@dataclass(frozen=True, slots=True)
class _Bad:
    pos: int
    resume: int  # position of the next valid record, or the limit


def _name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _valid_at(fd: int, pos: int, limit: int) -> _Good | None:
    """The record at `pos` if it fits below `limit` and checks out."""
    if pos + HEADER_SIZE > limit:
        return None
    header = os.pread(fd, HEADER_SIZE, pos)
    if len(header) < HEADER_SIZE:
        return None
    magic, length, crc, first, count = _HEADER.unpack(header)
    end = pos + HEADER_SIZE + length
    if magic != MAGIC or length > MAX_PAYLOAD or end > limit or count == 0 or first == 0:
        return None
    payload = os.pread(fd, length, pos + HEADER_SIZE)
    if (
        len(payload) != length
        or zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(first, count))) != crc
    ):
        return None
    return _Good(pos, end, first, count, payload)


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
        yield found
        pos = found.end


class _Undecodable(ValueError):
    pass


def _decode(item: _Good, dctx: zstandard.ZstdDecompressor) -> list[SpoolRecord]:
    """The events of one append. _Undecodable when its frame does not hold them."""
    try:
        frame = dctx.decompress(item.payload, max_output_size=MAX_FRAME)
        view = memoryview(frame)
        events: list[bytes] = []
        at = 0
        for _ in range(item.count):
            (length,) = _LEN.unpack_from(view, at)
            at += 4
            if at + length > len(view):
                raise _Undecodable("event runs past the frame")
            events.append(bytes(view[at : at + length]))
            at += length
        times, files, refs, offsets = msgpack.unpackb(view[at:], raw=False)
        places = [(str(key), FileOffset(str(path), 0, str(fp))) for key, path, fp in files]
        if not (len(times) == len(refs) == len(offsets) == item.count):
            raise _Undecodable("table does not match the count")
        out = []
        for index, data in enumerate(events):
            ref = refs[index]
            if ref < 0:
                out.append(SpoolRecord(item.sequence + index, data, None, None, times[index]))
                continue
            key, place = places[ref]
            position = FileOffset(place.path, int(offsets[index]), place.fingerprint)
            out.append(SpoolRecord(item.sequence + index, data, key, position, times[index]))
        return out
    except _Undecodable:
        raise
    except (ValueError, TypeError, IndexError, struct.error, zstandard.ZstdError) as exc:
        raise _Undecodable(str(exc)) from None
    except msgpack.UnpackException as exc:
        raise _Undecodable(str(exc)) from None


def _is_legacy(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC
    except FileNotFoundError:
        return False


def _legacy_last_sequence(path: Path) -> int:
    """The last sequence of the valid format 1 records of a segment (0: none)."""
    data = path.read_bytes()
    pos = last = 0
    while pos + _LEGACY_HEADER.size <= len(data):
        magic, length, crc, sequence = _LEGACY_HEADER.unpack_from(data, pos)
        end = pos + _LEGACY_HEADER.size + length
        payload = data[pos + _LEGACY_HEADER.size : end]
        seq_bytes = struct.pack(">Q", sequence)
        if (
            magic != LEGACY_MAGIC
            or end > len(data)
            or zlib.crc32(payload, zlib.crc32(seq_bytes)) != crc
        ):
            # Resynchronize on the next magic: a corrupt record must not hide later ones.
            found = data.find(LEGACY_MAGIC, pos + 1)
            if found < 0:
                break
            pos = found
            continue
        last = max(last, sequence)
        pos = end
    return last


def _segment_paths(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit())
    except FileNotFoundError:
        return []


def drop_legacy(directory: Path, acked: int | None) -> list[str]:
    """Delete stream format 1 segments (magic CRS1) whose records are all acked (≤ `acked`,
    the format 1 watermark; None when the checkpoint is already of format 2); their names.

    SpoolFormatError, naming the segment and what to do, when one holds a record not
    acked: this version does not ship format 1 records, and must not drop them.
    """
    legacy = [p for p in _segment_paths(directory) if _is_legacy(p)]
    for path in legacy:
        last = _legacy_last_sequence(path)
        if acked is None or last > acked:
            raise SpoolFormatError(
                f"spool segment {path} was written by an older agent (format CRS1) and holds "
                f"events up to sequence {last} not yet acknowledged"
                + ("" if acked is None else f" (acknowledged up to {acked})")
                + "; run the previous agent version until `crm-audit-agent status` shows 0 "
                "unacked events, then start this version"
            )
    for path in legacy:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if legacy:
        fsync_dir(directory)
        log.info(
            "spool: removed %d segments of the older format, every record in them acknowledged",
            len(legacy),
        )
    return [p.name for p in legacy]


class _Table:
    """The per-append table of event times and file positions, built while encoding."""

    __slots__ = ("files", "index", "offsets", "refs", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.files: list[tuple[str, str, str]] = []
        self.index: dict[tuple[str, str, str], int] = {}
        self.refs: list[int] = []
        self.offsets: list[int] = []

    def add(self, entry: AnyEntry, time: int) -> None:
        self.times.append(time)
        pos = entry.position
        if entry.file_key is None or pos is None:
            self.refs.append(-1)
            self.offsets.append(0)
            return
        place = (entry.file_key, pos.path, pos.fingerprint)
        ref = self.index.get(place)
        if ref is None:
            ref = self.index[place] = len(self.files)
            self.files.append(place)
        self.refs.append(ref)
        self.offsets.append(pos.offset)

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            [self.times, [list(f) for f in self.files], self.refs, self.offsets],
            use_bin_type=True,
        )
        return packed


class Spool:
    """Checksummed, segmented, append-only event queue on disk (see module docstring).

    Thread-safe: the read thread appends, the ship side reads, acks and may append
    loss events.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stream_id = ""  # set by `open`: every appended event carries it
        self._cond = threading.Condition()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._next_sequence = 1
        self._acked = 0
        self._cctx = zstandard.ZstdCompressor(level=3)

    # -- lifecycle -----------------------------------------------------------------------

    def open(self, acked: int, *, stream_id: str = "") -> Recovery:
        """Scan the segments, drop acked ones and a torn tail; ready for appends of
        `stream_id`. SpoolFormatError when a segment of the older format is still there
        (`drop_legacy` decides about those first)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.stream_id = stream_id
        self._acked = acked
        found = []
        for path in _segment_paths(self.directory):
            if _is_legacy(path):
                raise SpoolFormatError(
                    f"spool segment {path} was written by an older agent (format CRS1); "
                    "run the previous agent version until `crm-audit-agent status` shows 0 "
                    "unacked events, then start this version"
                )
            found.append(_Segment(int(path.stem), path, path.stat().st_size, True))
        next_sequence = acked + 1
        positions: dict[str, FileOffset] = {}
        unacked = torn = 0
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
                if not isinstance(item, _Good):
                    continue
                next_sequence = max(next_sequence, item.last + 1)
                if item.last <= acked:
                    continue
                unacked += item.last - max(item.sequence, acked + 1) + 1
                try:
                    decoded = _decode(item, dctx)
                except _Undecodable:
                    continue  # the reader reports it as a loss
                for record in decoded:
                    if record.sequence > acked and record.file_key and record.position:
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
        return Recovery(next_sequence, positions, unacked, torn)

    def close(self) -> None:
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._cond.notify_all()

    # -- writing -------------------------------------------------------------------------

    def append(self, entries: Sequence[AnyEntry]) -> list[int]:
        """Number, serialize, write and fsync `entries`; their sequences. SpoolWriteError on
        I/O failure (nothing of the call is kept: the file is cut back and the numbers are
        reused)."""
        if not entries:
            return []
        with self._cond:
            if self._fd is None:
                raise SpoolWriteError("spool is closed")
            active = self._segments[-1]
            first = self._next_sequence
            record = self._encode(first, entries)
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):  # else the next start removes the torn tail
                    os.ftruncate(self._fd, active.size)
                raise SpoolWriteError(f"cannot write spool {active.path}: {exc}") from None
            active.size += len(record)
            self._next_sequence = first + len(entries)
            if active.size >= self.segment_bytes:
                self._roll()
            self._cond.notify_all()
            return list(range(first, self._next_sequence))

    def _encode(self, first: int, entries: Sequence[AnyEntry]) -> bytes:
        """One record for the append: the events numbered from `first`, serialized once."""
        parts: list[bytes] = []
        table = _Table()
        pack_len = _LEN.pack
        stream_id = self.stream_id
        stream_bytes = stream_field(stream_id)
        for offset, entry in enumerate(entries):
            if isinstance(entry, EncodedEntry):
                # Deterministic serialization writes fields in number order: sequence
                # (1) first, the stamped body, stream id (27) last.
                data = sequence_field(first + offset) + entry.body + stream_bytes
                if len(data) > oversize.LIMIT and entry.record_bytes is not None:
                    event = pb.AuditEvent.FromString(data)
                    data = self._cut(event, entry.record_bytes, data)
                parts.append(pack_len(len(data)))
                parts.append(data)
                table.add(entry, entry.time)
                continue
            event = entry.event
            # The one place an event gets its sequence and stream, in sequence order;
            # then the one serialization that is hashed, shipped and stored.
            event.sequence = first + offset
            event.stream_id = stream_id
            data = integrity.event_bytes_v2(event)
            if len(data) > oversize.LIMIT and entry.record_bytes is not None:
                data = self._cut(event, entry.record_bytes, data)
            parts.append(pack_len(len(data)))
            parts.append(data)
            table.add(entry, integrity.effective_time(event))
        parts.append(table.pack())
        payload = self._cctx.compress(b"".join(parts))
        count = len(entries)
        crc = zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(first, count)))
        return _HEADER.pack(MAGIC, len(payload), crc, first, count) + payload

    @staticmethod
    def _cut(event: pb.AuditEvent, record_bytes: int, data: bytes) -> bytes:
        """`data` again after `event` was cut to fit (its size checked here, once it is
        serialized anyway, rather than by a second serialization per event). The limit
        applies to the event as parsed and stamped, before its sequence and stream."""
        sequence, stream_id = event.sequence, event.stream_id
        event.ClearField("sequence")
        event.ClearField("stream_id")
        cut = oversize.fit(event, record_bytes)
        event.sequence, event.stream_id = sequence, stream_id
        if not cut:
            return data
        log.warning(
            "%s: record at offset %d (%d bytes) parses into an event over the batch "
            "limit; cut and flagged line_truncated",
            event.log.file_path,
            event.log.offset,
            record_bytes,
        )
        return integrity.event_bytes_v2(event)

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
            fsync_dir(self.directory)
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
            fsync_dir(self.directory)

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
        self._pending: deque[SpoolRecord] = deque()  # the rest of a partly returned append
        self.next_sequence = start  # one past the last sequence returned

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take(self, out: list[SpoolRecord], max_records: int) -> None:
        while self._pending and len(out) < max_records:
            record = self._pending.popleft()
            out.append(record)
            self.next_sequence = record.sequence + 1

    def read(self, max_records: int) -> tuple[list[SpoolRecord], list[Loss]]:
        """Up to `max_records` committed records past the cursor, plus any losses met."""
        out: list[SpoolRecord] = []
        losses: list[Loss] = []
        self._take(out, max_records)
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
                if item.last < self._start:
                    self._prev = item.last
                    continue
                try:
                    decoded = _decode(item, self._dctx)
                except _Undecodable:
                    self._lost(path.name, _Bad(item.pos, item.end), item.last + 1, losses)
                    continue
                self._prev = item.last
                self._pending.extend(r for r in decoded if r.sequence >= self._start)
                self._take(out, max_records)
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
                return found.sequence
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
    legacy_segments: int = 0  # of the older format (CRS1), left by an older agent


def inspect(directory: Path, acked: int) -> SpoolStats:
    """Scan the spool without changing it (the agent may be running and appending):
    nothing is truncated or deleted, a record cut short at the very end is taken for
    one being written."""
    names = _segment_paths(directory)
    segments = total = unacked = unacked_bytes = corrupt = legacy = 0
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
            if os.pread(fd, len(LEGACY_MAGIC), 0) == LEGACY_MAGIC:
                legacy += 1
                continue
            next_sequence = max(next_sequence, int(path.stem))
            records = list(_records(fd, 0, size))
        finally:
            os.close(fd)
        for n, item in enumerate(records):
            if isinstance(item, _Bad):
                last = index == len(names) - 1 and n == len(records) - 1
                corrupt += 0 if last else item.resume - item.pos
                continue
            next_sequence = max(next_sequence, item.last + 1)
            if item.last <= acked:
                continue
            unacked += item.last - max(item.sequence, acked + 1) + 1
            unacked_bytes += item.end - item.pos
            try:
                decoded = _decode(item, dctx)
            except _Undecodable:
                continue
            for record in decoded:
                if record.sequence > acked and record.file_key and record.position:
                    positions[record.file_key] = record.position
    return SpoolStats(
        segments, total, next_sequence, unacked, unacked_bytes, positions, corrupt, legacy
    )
