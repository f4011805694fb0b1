"""Polling implementation of the Tailer protocol: re-resolve globs every poll interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.tail.base import MAX_LINE_BYTES, Line, SourceSpec, StartOffsets
from agent.tail.reader import FileReader, file_key
from agent.tail.scan import resolve

log = logging.getLogger(__name__)


class PollingTailer:
    """Tails every file of every source; order: sources as configured, files by path.

    A file is identified by dev:ino, so a renamed file that still matches keeps its
    offset. A file matched by two sources belongs to the first.
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        start_offsets: StartOffsets,
        monotonic: Callable[[], float],
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._sources = list(sources)
        self._start = dict(start_offsets)
        self._monotonic = monotonic
        self._max_line_bytes = max_line_bytes
        self._next_scan = [0.0] * len(self._sources)
        self._by_source: list[list[FileReader]] = [[] for _ in self._sources]
        self._readers: dict[str, FileReader] = {}

    def active_keys(self) -> frozenset[str]:
        return frozenset(self._readers)

    def read(self, max_lines: int) -> list[Line]:
        now = self._monotonic()
        for index, source in enumerate(self._sources):
            if now >= self._next_scan[index]:
                self._scan(index, source)
                self._next_scan[index] = now + source.poll_interval_s
        lines: list[Line] = []
        for readers in self._by_source:
            for reader in readers:
                lines += reader.read(max_lines - len(lines))
                if len(lines) >= max_lines:
                    return lines
        return lines

    def wait(self, timeout: float, stop: threading.Event) -> None:
        until_scan = min(self._next_scan, default=0.0) - self._monotonic()
        stop.wait(max(0.0, min(timeout, until_scan)))

    def _scan(self, index: int, source: SourceSpec) -> None:
        current: list[FileReader] = []
        for path in resolve(source.patterns, source.excludes):
            try:
                key = file_key(Path(path).stat())
            except OSError:
                continue  # vanished between glob and stat
            reader = self._readers.get(key)
            if reader is None:
                offset = self._start.pop(key, 0)
                reader = FileReader(source.name, path, key, offset, self._max_line_bytes)
                self._readers[key] = reader
                log.info("tailing %s (source %s) from offset %d", path, source.name, offset)
            elif reader.source != source.name:
                continue
            reader.path = path
            current.append(reader)
        seen = {r.key for r in current}
        for reader in self._by_source[index]:
            if reader.key not in seen:
                log.info("no longer tailing %s", reader.path)
                # Forgotten, offset included: should the inode be reused by a new file,
                # resuming at the old offset would skip its first lines. Telling reuse
                # from a file that merely matches again needs content fingerprints
                # (rotation issue); until then a rematched file is read again.
                del self._readers[reader.key]
        self._by_source[index] = current
