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
from collections.abc import Callable
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


class _LineJoiner:
    """What the multi-line framers share: the record being assembled, its flush and
    its start offset (held back from the checkpoint until it is complete)."""

    def __init__(self) -> None:
        self._pending: _Pending | None = None

    def _add(self, data: bytes, offset: int, end_offset: int, truncated: bool) -> _Pending:
        """Append a line to the pending record (started at `offset` if there is none)."""
        if self._pending is None:
            self._pending = _Pending(offset=offset)
        self._pending.lines.append(data)
        self._pending.end_offset = end_offset
        self._pending.truncated = self._pending.truncated or truncated
        return self._pending

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


class StartPatternFramer(_LineJoiner):
    """A record starts at a line matching `start`; other lines continue the current one.

    Lines before the first start line of a file (e.g. a file opened mid-record) form
    records of their own rather than being dropped. `max_lines` bounds a record so a
    missing start line cannot hold data forever.
    """

    def __init__(self, start: re.Pattern[bytes], max_lines: int = 1000) -> None:
        super().__init__()
        self._start = start
        self._max_lines = max_lines

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        out: list[Record] = []
        starts = self._start.search(data) is not None
        if self._pending is not None and (starts or len(self._pending.lines) >= self._max_lines):
            out.extend(self.flush())
        if self._pending is None and not starts:
            # An orphan continuation line: a record of its own, never dropped.
            out.append(Record(data, offset, end_offset, truncated))
            return out
        self._add(data, offset, end_offset, truncated)
        return out


class QuoteBalancedFramer(_LineJoiner):
    """A record ends at the first line where its `"` quotes balance (CSV with quoted newlines).

    PostgreSQL csvlog and Salesforce CSV quote fields containing newlines and double
    embedded quotes, so a record is complete exactly when it holds an even number of
    `"`. `max_lines` bounds a record whose quote never closes.
    """

    def __init__(self, max_lines: int = 1000) -> None:
        super().__init__()
        self._max_lines = max_lines
        self._quotes = 0

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        if self._pending is None:
            self._quotes = 0
        pending = self._add(data, offset, end_offset, truncated)
        self._quotes += data.count(b'"')
        if self._quotes % 2 == 0 or len(pending.lines) >= self._max_lines:
            return self.flush()
        return []


_JSON_STRUCTURE = re.compile(rb'[{}"\\]')
_ARRAY_PUNCTUATION = b" \t\r[],"


class JsonArrayFramer:
    """One record per top-level object of a JSON array that is written incrementally.

    MySQL Enterprise Audit writes `[`, then objects (pretty-printed over several lines
    or one per line) separated by `,`; the closing `]` appears only when the file is
    closed. Objects are emitted as soon as their closing brace arrives; the array's
    `[`, `,` and `]` are dropped. Anything else between objects is emitted as a record
    of its own (the parser flags it) rather than lost. Records are line-granular: an
    object that ends on the line where the next one starts also ends at that line's
    end, and the next one is held from that line's offset.
    """

    def __init__(self, max_lines: int = 10_000) -> None:
        self._max_lines = max_lines
        self._parts: list[bytes] = []
        self._depth = 0
        self._in_string = False
        self._offset = 0
        self._end = 0
        self._lines = 0
        self._truncated = False

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        out: list[Record] = []
        start = 0  # first byte of `data` not yet consumed
        if self._depth > 0:
            self._lines += 1
            self._truncated = self._truncated or truncated
        skip = -1  # position of a character escaped by a backslash
        for match in _JSON_STRUCTURE.finditer(data):
            pos = match.start()
            if pos == skip:
                continue
            char = data[pos]
            if self._in_string:
                if char == 0x5C:  # backslash
                    skip = pos + 1
                elif char == 0x22:  # quote
                    self._in_string = False
                continue
            if char == 0x22:
                if self._depth > 0:
                    self._in_string = True
            elif char == 0x7B:  # {
                if self._depth == 0:
                    stray = data[start:pos].strip(_ARRAY_PUNCTUATION)
                    if stray:
                        out.append(Record(stray, offset, end_offset, truncated))
                    self._parts = []
                    self._offset, self._lines, self._truncated = offset, 1, truncated
                    start = pos
                self._depth += 1
            elif char == 0x7D and self._depth > 0:  # }
                self._depth -= 1
                if self._depth == 0:
                    self._parts.append(data[start : pos + 1])
                    self._end = end_offset
                    out.extend(self.flush())
                    start = pos + 1
        if self._depth > 0:
            self._parts.append(data[start:])
            self._end = end_offset
            if self._lines >= self._max_lines:
                out.extend(self.flush())
        else:
            stray = data[start:].strip(_ARRAY_PUNCTUATION)
            if stray:
                out.append(Record(stray, offset, end_offset, truncated))
        return out

    def flush(self) -> list[Record]:
        if not self._parts:
            return []
        record = Record(
            b"\n".join(self._parts), self._offset, self._end, self._truncated, self._lines
        )
        self._parts = []
        self._depth = 0
        self._in_string = False
        return [record]

    def held_offset(self) -> int | None:
        return self._offset if self._parts else None


class HeaderCsvFramer:
    """CSV whose first record is a header: each row is handed over as `header\\nrow`.

    The parser stays pure (it learns the columns from the record itself) and takes
    the row after the first newline as `original`. Rows are completed by quote balance
    (quoted newlines). A record `is_header` accepts replaces the header (files joined
    together) and yields nothing. A framer that starts mid-file (resumed after a restart)
    knows no header until `prime(first_line_of_file)` is called; until then rows are
    handed over alone and the parser reports them.
    """

    def __init__(self, is_header: Callable[[bytes], bool], max_lines: int = 1000) -> None:
        self._is_header = is_header
        self._rows = QuoteBalancedFramer(max_lines)
        self._header: bytes | None = None

    def prime(self, header: bytes) -> None:
        """Use `header` (the file's first line) for the rows that follow."""
        if self._is_header(header):
            self._header = header

    def feed(
        self, data: bytes, offset: int, end_offset: int, truncated: bool = False
    ) -> list[Record]:
        return self._wrap(self._rows.feed(data, offset, end_offset, truncated))

    def flush(self) -> list[Record]:
        return self._wrap(self._rows.flush())

    def held_offset(self) -> int | None:
        return self._rows.held_offset()

    def _wrap(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        for record in records:
            if not record.data.strip():
                continue
            if self._is_header(record.data):
                self._header = record.data
                continue
            if self._header is None:
                out.append(record)
            else:
                data = self._header + b"\n" + record.data
                out.append(
                    Record(
                        data,
                        record.offset,
                        record.end_offset,
                        record.truncated,
                        record.line_count,
                    )
                )
        return out
