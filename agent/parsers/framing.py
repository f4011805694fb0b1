"""Record framing: turning a file's lines into records, one record per audit entry.

Most formats write one record per line. Some do not: PostgreSQL stderr continues a
statement on lines that start with a tab, csvlog fields may contain quoted newlines,
MySQL Enterprise Audit writes a pretty-printed JSON array. A `Framer` sits between the
tail layer (lines with offsets) and the parser (one record's bytes in, one event out).

Contract (the tail/pipeline side relies on it):
- One framer instance per file; it sees that file's lines in order.
- `feed(line)` returns the records that are complete now (zero or more).
- `flush()` returns whatever is held as final records: called when the file has been
  idle for the source's multi-line timeout, when the file is closed or rotated away,
  and on shutdown; nothing may be lost in a framer.
- `held_offset()` is the offset of the first byte not yet returned in a record, or
  None when nothing is held. A checkpoint for this file must never pass it, so that a
  restart re-reads a record that was held when the agent stopped.
Framers are pure: no clock, no files; timeouts are the caller's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """The bytes of one audit record and the byte range it came from."""

    data: bytes
    offset: int  # first byte of the record's first line
    end_offset: int  # just past the newline of its last line (where reading resumes)
    truncated: bool = False  # some line of it was cut at the line-size limit
    line_count: int = 1


class Framer(Protocol):
    """Groups consecutive lines of one file into records (see module docstring)."""

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        """Take one line (newline stripped); return the records completed by it."""

    def flush(self) -> list[Record]:
        """Return everything held as final records."""

    def held_offset(self) -> int | None:
        """Offset of the first byte held back, None when nothing is held."""


class LineFramer:
    """One line, one record: the framing of JSON lines and most audit logs."""

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        return [Record(data, offset, end_offset, truncated)]

    def flush(self) -> list[Record]:
        return []

    def held_offset(self) -> int | None:
        return None


@dataclass
class _Pending:
    lines: list[bytes] = field(default_factory=list)
    offset: int = 0
    end_offset: int = 0
    truncated: bool = False


class StartPatternFramer:
    """A record starts at a line matching `start`; other lines continue the current one.

    Lines before the first start line of a file (e.g. a file opened mid-record) form
    records of their own rather than being dropped. `max_lines` bounds a record so a
    missing start line cannot hold data forever.
    """

    def __init__(self, start: re.Pattern[bytes], max_lines: int = 1000) -> None:
        self._start = start
        self._max_lines = max_lines
        self._pending: _Pending | None = None

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        out: list[Record] = []
        starts = self._start.search(data) is not None
        if self._pending is not None and (starts or len(self._pending.lines) >= self._max_lines):
            out.extend(self.flush())
        if self._pending is None:
            if not starts:
                # An orphan continuation line: a record of its own, never dropped.
                out.append(Record(data, offset, end_offset, truncated))
                return out
            self._pending = _Pending(offset=offset)
        self._pending.lines.append(data)
        self._pending.end_offset = end_offset
        self._pending.truncated = self._pending.truncated or truncated
        return out

    def flush(self) -> list[Record]:
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        return [
            Record(
                b"\n".join(pending.lines),
                pending.offset,
                pending.end_offset,
                pending.truncated,
                len(pending.lines),
            )
        ]

    def held_offset(self) -> int | None:
        return None if self._pending is None else self._pending.offset
