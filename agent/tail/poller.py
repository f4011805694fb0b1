"""The Tailer: discovery by glob (poll + inotify wake-ups), rotation, inactivity.

Per source, every `poll_interval_s` (sooner when inotify reports a change) the globs
are resolved and each match is stat-ed:
- a new dev:ino is opened and read from its start position: the checkpointed one if
  its fingerprint still matches (else the inode was reused: from 0), else from 0 — or
  from its end for `start_at: end` on the very first start;
- a known dev:ino under a new name (renamed, still matching) just keeps going;
- a known file no longer matched (renamed away or deleted) is "rotated": it is read on
  through its open handle to its end, and closed once it has stayed at its end for
  `close_rotated_after_s` (so late writes by the application still count);
- an open file idle at its end for `close_inactive_s` is closed and reopened when a
  later scan sees it changed (size or mtime).
Order of reading: sources as configured; within a source rotated files first, then
files by path. A file matched by two sources belongs to the first.

Reconfiguration (`reconfigure`, SIGHUP in the agent), applied between two reads:
- an added source is scanned at once; `start_at` applies to the files of its first
  scan, as at a first start;
- a changed source (same name) keeps its open files: new globs are picked up at its
  next scan, files it no longer matches are treated as rotated (read to their end);
- a removed source's files are drained: each is read on to the end it had when the
  source was removed (complete lines only), then closed (`Closed`, reason "removed").
  A drained file that another source matches is handed over at its exact offset
  (nothing read twice).

Positions are kept while a file exists: a file no source matches any more (its source
was removed, or its glob narrowed) but that is still at its path is "parked" — its
position stays in the checkpoint, and a source that matches it again (the source
added back, the glob widened) resumes it there instead of reading it again from the
start. Parked positions whose file is gone from its path (deleted, rotated away) are
forgotten at the next reconfiguration or start.

Rotation while the agent was stopped (first read only; agent.tail.siblings): every
checkpointed file a source's glob matched by its last path is looked for by identity
among the files beside that path, whatever their names now:
- renamed (`audit.jsonl.1`, a dated name): read on from its checkpointed offset — by
  the scan if a glob still matches it, else as a rotated file (to its end, then closed);
- truncated in place (copytruncate) or its inode reused: its new content is read from 0;
  the rest of the old content is read from the copy beside it (same first bytes, at
  least as long as the offset) when there is one, else reported as `Truncated`;
- gone: reported as `Unread` with the byte range not read — exact when a compressed
  copy (gzip, bzip2, xz) of it is found, open-ended otherwise.

A file closed as idle and then renamed is found the same way (by identity beside its
path) and read to its end; one compressed meanwhile with bytes past the position is
reported as `Unread`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Sequence

from agent.checkpoint import FileOffset
from agent.tail import siblings
from agent.tail.base import Closed, SourceSpec, StartPositions, TailItem, Truncated, Unread
from agent.tail.fingerprint import fingerprint, matches
from agent.tail.reader import FileReader, file_key
from agent.tail.scan import resolve
from agent.tail.watch import Watcher

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.05
READ_BYTES = 8 << 20  # bytes read per `read` call at most (plus one chunk): bounds memory


class FileTailer:
    """Tails every file of every source (see module docstring)."""

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        start: StartPositions,
        monotonic: Callable[[], float],
        *,
        initial: bool = False,
        watch: bool = True,
    ) -> None:
        self._sources: dict[str, SourceSpec] = {s.name: s for s in sources}
        self._start = dict(start)
        self._monotonic = monotonic
        self._initial = initial  # no state at all: `start_at: end` applies
        self._next_scan = dict.fromkeys(self._sources, 0.0)
        self._by_source: dict[str, list[FileReader]] = {name: [] for name in self._sources}
        self._readers: dict[str, FileReader] = {}
        self._draining: list[tuple[FileReader, int]] = []  # (reader, size to read up to)
        self._fresh: set[str] = set()  # sources added by `reconfigure`, not scanned yet
        self._pending: list[TailItem] = []
        self._forgotten: set[str] = set()
        self._parked: dict[str, FileOffset] = {}  # see the module docstring
        self._moved: dict[str, str] = {}  # key → source: found beside its last path at start
        self._scanned_once = False
        self._busy = False
        self._watch = watch
        self._wake = threading.Event()
        self._watcher: Watcher | None = None
        self._start_watcher()

    def _start_watcher(self) -> None:
        if not self._watch:
            return
        self._watcher = Watcher([p for s in self._sources.values() for p in s.patterns])
        self._wake = self._watcher.wake
        self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        for reader in self._readers.values():
            reader.close()

    def reconfigure(self, sources: Sequence[SourceSpec]) -> None:
        """Switch to `sources` (see module docstring); call from the reading thread."""
        new = {s.name: s for s in sources}
        for name in [n for n in self._sources if n not in new]:
            for reader in self._by_source.pop(name):
                self._drain(reader)
            del self._next_scan[name]
            log.info(
                "source %s removed: its files are read to their current end, then closed", name
            )
        for name, spec in new.items():
            if name not in self._sources:
                self._by_source[name] = []
                self._fresh.add(name)
                log.info("source %s added", name)
            elif spec != self._sources[name]:
                log.info("source %s changed", name)
            self._next_scan[name] = 0.0  # scan at the next read
        self._sources = new
        self._prune_parked()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._start_watcher()

    def _park_or_forget(self, key: str, position: FileOffset) -> None:
        """Keep `position` while its file is still at its path, else forget it."""
        if _still_at(position.path, key):
            self._parked[key] = position
        else:
            self._forgotten.add(key)

    def _prune_parked(self) -> None:
        for key, position in list(self._parked.items()):
            if not _still_at(position.path, key):
                del self._parked[key]
                self._forgotten.add(key)

    def _drain(self, reader: FileReader) -> None:
        if not reader.is_open and not reader.open():
            self._finish_drained(reader)
            return
        reader.draining = True
        try:
            size = os.fstat(reader.fd_number()).st_size
        except OSError:
            size = reader.offset
        self._draining.append((reader, size))

    def _finish_drained(self, reader: FileReader) -> None:
        """A drained file: hand it over to a source that matches it, or forget it."""
        self._readers.pop(reader.key, None)
        claimed = any(
            reader.path in resolve(s.patterns, s.excludes) for s in self._sources.values()
        )
        position = FileOffset(reader.path, reader.offset, reader.fingerprint)
        if claimed:
            self._start[reader.key] = position
        else:
            self._park_or_forget(reader.key, position)

    def watched_files(self) -> dict[str, int]:
        """Source name → files known (open or closed while inactive), for metrics."""
        return {name: len(readers) for name, readers in self._by_source.items()}

    def forgotten(self) -> set[str]:
        out, self._forgotten = self._forgotten, set()
        return out

    def first_line(self, key: str) -> bytes | None:
        """The first line of the open file `key` (for framers resuming mid-file)."""
        reader = self._readers.get(key)
        return reader.first_line() if reader is not None else None

    def open_files(self) -> int:
        return sum(1 for r in self._readers.values() if r.is_open)

    def read(self, max_items: int) -> list[TailItem]:
        """Up to `max_items` items and about READ_BYTES of data; fewer = caught up
        (or the byte budget is spent: the caller reads again without waiting)."""
        now = self._monotonic()
        if not self._scanned_once:
            self._relocate()
        for name, source in self._sources.items():
            if now >= self._next_scan[name]:
                self._scan(name, source, now)
                self._next_scan[name] = now + source.poll_interval_s
        if not self._scanned_once:
            self._scanned_once = True
            self._initial = False  # `start_at: end` is for the files present at the first start
            for key, position in list(self._start.items()):
                self._unclaimed(key, position, now)
            self._start.clear()
            self._moved.clear()
        items, self._pending = self._pending, []
        budget = self._read_draining(max_items, now, items)
        for name, source in self._sources.items():
            if len(items) >= max_items or budget <= 0:
                break
            readers = sorted(self._by_source[name], key=lambda r: (not r.rotated, r.path))
            for reader in readers:
                if len(items) < max_items and budget > 0:
                    before = reader.offset
                    items += self._with_copies(
                        reader.read(max_items - len(items), now, budget), now
                    )
                    budget -= max(0, reader.offset - before)
                self._maybe_close(name, source, reader, now, items)
        self._busy = budget <= 0
        return items

    def _read_draining(self, max_items: int, now: float, items: list[TailItem]) -> int:
        """Read the files of removed sources on to their end; the byte budget left."""
        budget = READ_BYTES
        remaining: list[tuple[FileReader, int]] = []
        for reader, until in self._draining:
            if len(items) < max_items and budget > 0:
                before = reader.offset
                items += reader.read(max_items - len(items), now, budget)
                budget -= max(0, reader.offset - before)
                if reader.offset >= until or reader.at_eof() or not reader.is_open:
                    log.info(
                        "finished %s of a removed source at offset %d; closed",
                        reader.path,
                        reader.offset,
                    )
                    reader.close()
                    items.append(Closed(reader.source, reader.path, reader.key, "removed"))
                    self._finish_drained(reader)
                    continue
            remaining.append((reader, until))
        self._draining = remaining
        return budget

    def busy(self) -> bool:
        return self._busy

    def wait(self, timeout: float, stop: threading.Event) -> None:
        until_scan = min(self._next_scan.values(), default=0.0) - self._monotonic()
        remaining = max(0.0, min(timeout, until_scan))
        # Slices, not the injected clock: wake on inotify, on stop, or after `remaining`.
        slices = max(1, int(remaining / _WAIT_SLICE_S + 0.5)) if remaining > 0 else 0
        for _ in range(slices):
            if stop.is_set() or self._wake.wait(_WAIT_SLICE_S):
                break
        self._wake.clear()

    def _maybe_close(
        self, name: str, source: SourceSpec, reader: FileReader, now: float, items: list[TailItem]
    ) -> None:
        if not reader.is_open or not reader.at_eof():
            return
        idle = now - reader.last_change
        if reader.rotated:
            if idle < source.close_rotated_after_s:
                return
            log.info("finished rotated file %s at offset %d; closed", reader.path, reader.offset)
            reader.close()
            self._drop(name, reader)
            items.append(Closed(source.name, reader.path, reader.key, "rotated"))
        elif idle >= source.close_inactive_s:
            log.info("closing %s: inactive for %.0f s", reader.path, idle)
            reader.close()
            items.append(Closed(source.name, reader.path, reader.key, "inactive"))

    def _with_copies(self, items: list[TailItem], now: float) -> list[TailItem]:
        """A file truncated under the reader (copytruncate): when the copy is beside it,
        read the rest of the previous content from the copy, as a rotated file."""
        for index, item in enumerate(items):
            if not isinstance(item, Truncated) or item.while_stopped:
                continue
            copy = siblings.copy_of(
                item.path, item.previous_fingerprint, item.offset, set(self._readers)
            )
            if copy is None:
                continue
            copy_path, copy_key = copy
            self._start[copy_key] = FileOffset(copy_path, item.offset, item.previous_fingerprint)
            reader = self._open_new(self._sources[item.source], copy_path, copy_key, now)
            self._start.pop(copy_key, None)
            if reader is None:
                continue
            reader.rotated = True
            self._readers[copy_key] = reader
            self._by_source[item.source].append(reader)
            size = os.fstat(reader.fd_number()).st_size  # open: _open_new just opened it
            log.warning(
                "%s: reading the rest of its previous content from the copy %s (bytes %d-%d)",
                item.path,
                copy_path,
                item.offset,
                size,
            )
            items[index] = dataclasses.replace(item, copy_path=copy_path, copy_size=size)
        return items

    def _source_of(self, path: str) -> str | None:
        """The first source whose globs match `path` (the file's last known name)."""
        name = os.path.basename(path)  # noqa: PTH119 - plain string paths
        for source in self._sources.values():
            excludes = source.excludes
            if any(fnmatch.fnmatch(path, ex) or fnmatch.fnmatch(name, ex) for ex in excludes):
                continue
            if any(fnmatch.fnmatch(path, pattern) for pattern in source.patterns):
                return source.name
        return None

    def _relocate(self) -> None:
        """Before the first scan: find checkpointed files rotated while we were stopped
        (module docstring). Positions in `_start` are re-pointed at where the data is."""
        known = set(self._start)
        for key, position in list(self._start.items()):
            source = self._source_of(position.path)
            if source is None:
                continue  # not ours any more: parked or forgotten after the scan
            try:
                fd = os.open(position.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = None
            if fd is not None:
                try:
                    st = os.fstat(fd)
                    if file_key(st) == key:
                        if st.st_size >= position.offset and matches(fd, position.fingerprint):
                            continue  # still there, as we left it
                        self._truncated_while_stopped(
                            source, key, position, known, st.st_size, fingerprint(fd, st.st_size)
                        )
                        continue
                finally:
                    os.close(fd)
            found = siblings.by_key(position.path, key, position.fingerprint)
            if found is not None and found != position.path:
                log.info(
                    "%s was rotated to %s while the agent was stopped; reading it on from "
                    "offset %d",
                    position.path,
                    found,
                    position.offset,
                )
                self._start[key] = FileOffset(found, position.offset, position.fingerprint)
                self._moved[key] = source

    def _truncated_while_stopped(
        self,
        source: str,
        key: str,
        position: FileOffset,
        known: set[str],
        size: int,
        new_fingerprint: str,
    ) -> None:
        # The file at the path is read from 0 (its content is new); the old content's
        # unread end is read from copytruncate's copy, or reported.
        del self._start[key]
        copy = siblings.copy_of(position.path, position.fingerprint, position.offset, known)
        if copy is not None:
            copy_path, copy_key = copy
            log.warning(
                "%s was truncated while the agent was stopped; reading the rest of its "
                "previous content from the copy %s from offset %d",
                position.path,
                copy_path,
                position.offset,
            )
            self._start[copy_key] = FileOffset(copy_path, position.offset, position.fingerprint)
            self._moved[copy_key] = source
            return
        if siblings.compressed(position.path, position.fingerprint) is not None:
            # Rotated, compressed and replaced by a new file that got the same inode.
            self._report_gone(source, key, position)
            return
        log.warning(
            "%s was truncated or replaced while the agent was stopped (read up to offset "
            "%d, size now %d) and no copy of its previous content was found",
            position.path,
            position.offset,
            size,
        )
        self._pending.append(
            Truncated(
                source=source,
                path=position.path,
                file_key=key,
                offset=position.offset,
                last_seen_size=position.offset,
                size=size,
                fingerprint=new_fingerprint,
                while_stopped=True,
            )
        )

    def _unclaimed(self, key: str, position: FileOffset, now: float) -> None:
        """A checkpointed file the first scan did not find under any glob."""
        source = self._moved.get(key)
        if source is not None:
            self._open_rotated(source, key, position, now)
            return
        if _still_at(position.path, key) or self._source_of(position.path) is None:
            self._park_or_forget(key, position)  # kept while it exists (parked)
            return
        self._forgotten.add(key)
        self._report_gone(self._source_of(position.path) or "", key, position)

    def _open_rotated(self, source: str, key: str, position: FileOffset, now: float) -> None:
        spec = self._sources[source]
        reader = self._open_new(spec, position.path, key, now)
        if reader is None:
            self._forgotten.add(key)
            self._report_gone(source, key, position)
            return
        reader.rotated = True
        self._readers[key] = reader
        self._by_source[source].append(reader)

    def _reopen_moved(self, reader: FileReader, now: float) -> bool:
        """A file closed as idle and since renamed beside its path: reopen it there."""
        found = siblings.by_key(reader.path, reader.key, reader.fingerprint)
        if found is None or found == reader.path:
            return False
        old, reader.path = reader.path, found
        if not reader.open():
            reader.path = old
            return False
        log.info("%s was rotated to %s while closed as idle; reading it to its end", old, found)
        reader.rotated = True
        reader.last_change = now
        return True

    def _report_compressed(self, source: str, key: str, position: FileOffset) -> None:
        """A file closed as idle and gone: if a compressed copy holds bytes past where we
        stopped, they were written after the close and cannot be read: report them."""
        packed = siblings.compressed(position.path, position.fingerprint)
        if packed is not None and packed[1] > position.offset:
            self._report_gone(source, key, position)

    def _report_gone(self, source: str, key: str, position: FileOffset) -> None:
        packed = siblings.compressed(position.path, position.fingerprint)
        if packed is not None:
            packed_path, size = packed
            if size <= position.offset:
                log.info("%s was compressed into %s after it was read", position.path, packed_path)
                return
            reason = (
                f"rotated and compressed into {packed_path} before it was read to its end; "
                f"bytes {position.offset}-{size} were not read"
            )
            end: int | None = size
        else:
            reason = (
                "rotated away or deleted while the agent was stopped; bytes from offset "
                f"{position.offset} to its end were not read (none if it had been read to "
                "its end)"
            )
            end = None
        log.warning("%s: %s", position.path, reason)
        self._pending.append(Unread(source, position.path, key, position.offset, end, reason))

    def _drop(self, name: str, reader: FileReader) -> None:
        self._by_source[name] = [r for r in self._by_source[name] if r is not reader]
        self._readers.pop(reader.key, None)
        # rotated away: forgotten; no longer matched but still there: parked
        self._park_or_forget(reader.key, FileOffset(reader.path, reader.offset, reader.fingerprint))

    def _scan(self, name: str, source: SourceSpec, now: float) -> None:
        fresh = name in self._fresh
        self._fresh.discard(name)
        current: list[FileReader] = []
        for path in resolve(source.patterns, source.excludes):
            try:
                st = os.stat(path)  # noqa: PTH116 - plain string paths from glob
            except OSError:
                continue  # vanished between glob and stat
            key = file_key(st)
            reader = self._readers.get(key)
            if reader is None:
                reader = self._open_new(source, path, key, now, fresh)
                if reader is None:
                    continue
                self._readers[key] = reader
            elif reader.source != source.name or reader.draining:
                continue
            reader.path = path
            reader.rotated = False
            changed = st.st_size != reader.last_seen_size or st.st_size < reader.offset
            if not reader.is_open and changed and reader.open():
                log.info("reopening %s at offset %d", path, reader.offset)
                reader.last_change = now
            current.append(reader)
        seen = {r.key for r in current}
        for reader in self._by_source[name]:
            if reader.key in seen:
                continue
            if reader.is_open:
                if not reader.rotated:
                    log.info("%s was rotated or deleted; reading it to its end", reader.path)
                    reader.rotated = True
                    reader.last_change = now
                current.append(reader)
            elif self._reopen_moved(reader, now):
                current.append(reader)  # closed as idle, then rotated: read to its end
            else:
                log.info("no longer tailing %s", reader.path)
                self._readers.pop(reader.key, None)
                position = FileOffset(reader.path, reader.offset, reader.fingerprint)
                if not _still_at(reader.path, reader.key):
                    self._report_compressed(name, reader.key, position)
                self._park_or_forget(reader.key, position)
        self._by_source[name] = current

    def _open_new(
        self, source: SourceSpec, path: str, key: str, now: float, fresh: bool = False
    ) -> FileReader | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("%s: cannot open: %s", path, exc.strerror or exc)
            return None
        st = os.fstat(fd)
        if file_key(st) != key:
            os.close(fd)  # replaced between stat and open; the next scan sees the new one
            return None
        offset = 0
        resume = self._start.pop(key, None) or self._parked.pop(key, None)
        if resume is not None and not matches(fd, resume.fingerprint):
            log.info("%s: inode reused by another file; reading it from the start", path)
            owner = self._source_of(resume.path)
            if not self._scanned_once and owner is not None and resume.path != path:
                # The file we were reading is gone (deleted while we were stopped) and
                # its inode now names this one.
                self._report_gone(owner, key, resume)
            resume = None
        if resume is not None:
            offset = resume.offset
        elif (self._initial or fresh) and source.start_at == "end":
            offset = st.st_size
        reader = FileReader(
            source.name,
            path,
            key,
            offset,
            source.max_line_bytes,
            fd=fd,
            fingerprint_value=fingerprint(fd, st.st_size),
            now=now,
        )
        if st.st_size < offset:
            # Truncated while we were not running: reading nothing reports it and rewinds.
            self._pending += reader.read(0, now)
        log.info("tailing %s (source %s) from offset %d", path, source.name, reader.offset)
        return reader


def _still_at(path: str, key: str) -> bool:
    """Whether the file identified by `key` (dev:ino) is still found at `path`."""
    try:
        return file_key(os.stat(path)) == key  # noqa: PTH116 - plain string paths
    except OSError:
        return False
