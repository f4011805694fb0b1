"""The reading side: tail → frame → parse → spool (numbered, durable).

Runs in one thread. Each read pass (≤ READ_BUDGET tail items) becomes one spool
append, numbered in the order the tailer yielded the lines and fsynced once: a
record's sequence and its file's resume position become durable together.

Framing: one framer per file (the format's, or a StartPatternFramer when the source
sets `multiline`). A record's resume position is its `end_offset`, never past what a
framer holds. A held record is flushed after the source's multiline timeout of
inactivity, when its file is truncated, closed or rotated away, and on shutdown.

Resuming mid-file: a new framer for a file read from an offset > 0 that has a
`prime(first_line)` method (HeaderCsvFramer: the CSV header) gets the file's first line.

Back-pressure: while the spool is full, nothing is read (offsets stay put).

Reconfiguration (SIGHUP): `reconfigure` hands over new sources and parsers from another
thread; the read thread applies them between two passes (agent.tail.poller says what
happens to the files). Parsers of removed sources stay known, since their files are
read on to their end.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent import notices, oversize
from agent.checkpoint import FileOffset
from agent.errors import SpoolWriteError
from agent.metrics import AgentMetrics
from agent.parsers import Encoder, ParseFn
from agent.parsers.framing import Framer, LineFramer
from agent.spool import AnyEntry, EncodedEntry, Entry, Spool
from agent.tail import Line, SourceSpec, Tailer, TailItem, Truncated, Unread
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

READ_BUDGET = 250  # tail items per pass = per spool append (one fsync); bounds what a pass holds
IDLE_WAIT_S = 1.0
PAUSED_WAIT_S = 0.2


@dataclass(frozen=True, slots=True)
class SourceParser:
    """How the records of one source are framed and parsed."""

    format: str
    parse: ParseFn
    make_framer: Callable[[], Framer]
    flush_after_s: float = 2.0  # idle time after which a held record is emitted
    # The compiled kernel's parse + stamp + serialize in one step (agent.parsers.Encoder),
    # where the source has one; a record it declines goes through `parse`.
    encode: Encoder | None = None


@dataclass
class _FileFraming:
    framer: Framer
    source: str
    path: str
    fingerprint: str
    last_fed: float
    # What every event of this file gets (observer, log origin but the offset), serialized
    # once: one merge per event instead of a copy and three field writes.
    stamp: bytes = b""
    stamp_key: tuple[str, str] | None = None  # (path, format) the stamp was made for


class Pipeline:
    """Turns tailed lines into numbered events in the spool."""

    def __init__(
        self,
        *,
        observer: pb.Observer,
        tailer: Tailer,
        parsers: Mapping[str, SourceParser],
        spool: Spool,
        on_forgotten: Callable[[set[str]], None],
        wall_ns: Callable[[], int],
        monotonic: Callable[[], float],
        on_round: Callable[[], None] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._observer = observer
        self._metrics = metrics
        self._reconfig_lock = threading.Lock()
        self._reconfig: tuple[Sequence[SourceSpec], Mapping[str, SourceParser]] | None = None
        self._on_round = on_round or (lambda: None)  # liveness, for the watchdog
        self._tailer = tailer
        self._parsers = dict(parsers)
        self._spool = spool
        self._on_forgotten = on_forgotten
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self._framing: dict[str, _FileFraming] = {}
        self._paused = False
        self._write_failing = False

    def run(self, stop: threading.Event) -> None:
        """Read until `stop` is set, then flush what framers hold into the spool."""
        try:
            while not stop.is_set():
                self._on_round()
                self._apply_reconfigure()
                if self._spool_full():
                    stop.wait(PAUSED_WAIT_S)
                    continue
                items = self._tailer.read(READ_BUDGET)
                entries: list[AnyEntry] = []
                for item in items:
                    self._handle(item, entries)
                self._count_lines(items)
                entries += self._flush_idle(self._monotonic())
                if not self._append(entries, stop):
                    return
                forgotten = self._tailer.forgotten()
                if forgotten:
                    self._on_forgotten(forgotten)
                if len(items) < READ_BUDGET and not self._tailer.busy():
                    self._tailer.wait(self._wait_timeout(), stop)
            entries = []
            for key in list(self._framing):
                entries += self._flush(key)
            self._append(entries, stop, retry=False)
        finally:
            self._tailer.close()

    def reconfigure(
        self, sources: Sequence[SourceSpec], parsers: Mapping[str, SourceParser]
    ) -> None:
        """Switch sources at the read thread's next pass (callable from any thread)."""
        with self._reconfig_lock:
            self._reconfig = (sources, parsers)

    def _apply_reconfigure(self) -> None:
        with self._reconfig_lock:
            pending, self._reconfig = self._reconfig, None
        if pending is None:
            return
        sources, parsers = pending
        self._parsers.update(parsers)
        self._tailer.reconfigure(sources)

    def _count_lines(self, items: Sequence[TailItem]) -> None:
        if self._metrics is None:
            return
        counts = Counter(item.source for item in items if isinstance(item, Line))
        for source, n in counts.items():
            self._metrics.lines_read.labels(source=source).inc(n)

    def _count_spooled(self, entries: Sequence[AnyEntry]) -> None:
        if self._metrics is None:
            return
        spooled: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for entry in entries:
            if isinstance(entry, EncodedEntry):  # the kernel builds no parse_error event
                spooled[entry.source] += 1
                continue
            source = entry.event.log.source_name
            spooled[source] += 1
            if "parse_error" in entry.event.flags:
                errors[source] += 1
        for source, n in spooled.items():
            self._metrics.events_spooled.labels(source=source).inc(n)
        for source, n in errors.items():
            self._metrics.parse_errors.labels(source=source).inc(n)

    def _spool_full(self) -> bool:
        full = self._spool.full()
        if full and not self._paused:
            log.warning(
                "spool full (%d bytes, max %d): reading paused until the collector "
                "acknowledges; nothing is dropped, the logs wait on disk",
                self._spool.size_bytes(),
                self._spool.max_bytes,
            )
        elif not full and self._paused:
            log.info("spool has room again: reading resumed")
        self._paused = full
        return full

    def _append(self, entries: list[AnyEntry], stop: threading.Event, retry: bool = True) -> bool:
        """Spool `entries`, retrying on write errors until `stop`; False if stopped first."""
        while entries:
            try:
                self._spool.append(entries)
            except SpoolWriteError as exc:
                if not self._write_failing:
                    log.error("%s; reading paused, retrying", exc)
                self._write_failing = True
                if not retry or stop.wait(1.0):
                    return False
                self._on_round()  # waiting for the disk is not a hang
                continue
            if self._write_failing:
                log.info("spool writable again")
                self._write_failing = False
            self._count_spooled(entries)
            return True
        return True

    def _wait_timeout(self) -> float:
        now = self._monotonic()
        timeout = IDLE_WAIT_S
        for state in self._framing.values():
            if state.framer.held_offset() is not None:
                flush_after = self._parsers[state.source].flush_after_s
                timeout = min(timeout, max(0.0, state.last_fed + flush_after - now))
        return timeout

    def _handle(self, item: TailItem, entries: list[AnyEntry]) -> None:
        if isinstance(item, Line):
            state = self._framing.get(item.file_key)
            if state is None:
                framer = self._parsers[item.source].make_framer()
                if item.offset > 0:
                    self._prime(framer, item.file_key)
                state = _FileFraming(framer, item.source, item.path, "", 0.0)
                self._framing[item.file_key] = state
            state.path, state.fingerprint = item.path, item.fingerprint
            state.last_fed = self._monotonic()
            framer = state.framer
            if framer.__class__ is LineFramer:
                # One line, one record, nothing held: no Record object in between.
                self._record(
                    item.file_key, state, item.data, item.offset, item.end_offset,
                    item.truncated, entries, None,
                )  # fmt: skip
                return
            for record in framer.feed(item.data, item.offset, item.end_offset, item.truncated):
                self._record(
                    item.file_key, state, record.data, record.offset, record.end_offset,
                    record.truncated, entries, framer.held_offset(),
                )  # fmt: skip
        elif isinstance(item, Unread):
            source = self._parsers[item.source]
            event = notices.log_unread(item, source.format, self._wall_ns())
            self._stamp(event)
            entries.append(Entry(event))
        elif isinstance(item, Truncated):
            entries += self._flush(item.file_key)
            source = self._parsers[item.source]
            event = notices.log_truncated(item, source.format, self._wall_ns())
            self._stamp(event)
            entries.append(Entry(event, item.file_key, FileOffset(item.path, 0, item.fingerprint)))
        else:
            entries += self._flush(item.file_key)
            self._framing.pop(item.file_key, None)

    def _prime(self, framer: Framer, key: str) -> None:
        """A framer starting mid-file (resumed, or reopened) that needs the file's first
        line — a CSV header — gets it through `prime(first_line)`."""
        prime = getattr(framer, "prime", None)
        if not callable(prime):
            return
        first = self._tailer.first_line(key)
        if first is None:
            log.warning("cannot read the first line of file %s to resume its framing", key)
            return
        prime(first)

    def _flush_idle(self, now: float) -> list[AnyEntry]:
        entries: list[AnyEntry] = []
        for key, state in self._framing.items():
            flush_after = self._parsers[state.source].flush_after_s
            if state.framer.held_offset() is not None and now - state.last_fed >= flush_after:
                entries += self._flush(key)
        return entries

    def _flush(self, key: str) -> list[AnyEntry]:
        state = self._framing.get(key)
        entries: list[AnyEntry] = []
        if state is not None:
            framer = state.framer
            for record in framer.flush():
                self._record(
                    key, state, record.data, record.offset, record.end_offset,
                    record.truncated, entries, framer.held_offset(),
                )  # fmt: skip
        return entries

    def _record(
        self,
        key: str,
        state: _FileFraming,
        data: bytes,
        offset: int,
        end_offset: int,
        truncated: bool,
        entries: list[AnyEntry],
        held: int | None,
    ) -> None:
        """One framed record (`data` from `offset` to `end_offset` in its file) parsed,
        stamped and added to `entries`; `held` is the offset of what the framer still
        holds after it (None: nothing)."""
        source = self._parsers[state.source]
        if state.stamp_key != (state.path, source.format):
            state.stamp = self._file_stamp(state.path, state.source, source.format)
            state.stamp_key = (state.path, source.format)
        # The record's size in the file (its lines and their newlines, the last one
        # excluded): kept when the record, or the event parsed from it, is cut.
        record_bytes = max(0, end_offset - offset - 1)
        resume = end_offset if held is None else min(end_offset, held)
        # An event over the size limit is cut by the spool, when it is serialized.
        position = FileOffset(state.path, resume, state.fingerprint)
        encode = source.encode
        if encode is not None and not truncated:
            encoded = encode(data, state.stamp, self._wall_ns(), offset)
            if encoded is not None:
                body, time = encoded
                entries.append(EncodedEntry(body, time, state.source, key, position, record_bytes))
                return
        event = source.parse(data)
        if event is None:  # blank: consumed, nothing to send (re-read after a restart)
            return
        if truncated:
            oversize.mark_truncated(event, record_bytes)
        # The parsers set neither the observer nor the log origin, so merging these
        # fields is the same as setting them.
        event.MergeFromString(state.stamp)
        event.observed_unix_nano = self._wall_ns()
        event.log.offset = offset
        entries.append(Entry(event, key, position, record_bytes))

    def _file_stamp(self, path: str, source: str, format: str) -> bytes:
        origin = pb.LogOrigin(file_path=path, source_name=source, format=format)
        return pb.AuditEvent(observer=self._observer, log=origin).SerializeToString()

    def _stamp(self, event: pb.AuditEvent) -> None:
        event.observed_unix_nano = self._wall_ns()
        event.observer.CopyFrom(self._observer)
