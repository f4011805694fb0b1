"""Incremental reading of one file, through a handle held open, into complete lines.

Only complete lines are returned: a last line without its newline waits for it. A
line longer than the limit keeps its first `max_line_bytes` and is marked truncated;
the rest is skipped as it is read, so memory stays bounded and the file never stalls.
Offsets are always line starts, so a checkpointed offset resumes on a line boundary.

The handle is what makes rotation safe: after a rename or an unlink the reader keeps
reading the same file to its end. Before each read the handle's size and first bytes
are checked: a size below the read position, or a different fingerprint, means the
file was truncated in place (copytruncate) and it is read again from 0, reported as
`Truncated`.
"""

from __future__ import annotations

import logging
import os

from agent.tail.base import MAX_LINE_BYTES, Line, TailItem, Truncated
from agent.tail.fingerprint import FINGERPRINT_BYTES, covered, fingerprint, matches

log = logging.getLogger(__name__)

CHUNK = 65_536


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


class FileReader:
    """Reads new lines of one file (identified by dev:ino) starting at `offset`.

    `open()` (or the constructor's `fd`) gives it a handle; `close()` releases it
    while keeping the position, so it can be reopened when the file changes.
    """

    def __init__(
        self,
        source: str,
        path: str,
        key: str,
        offset: int = 0,
        max_line_bytes: int = MAX_LINE_BYTES,
        *,
        fd: int | None = None,
        fingerprint_value: str = "",
        now: float = 0.0,
    ) -> None:
        self.source = source
        self.path = path
        self.key = key
        self.max_line_bytes = max_line_bytes
        self.fingerprint = fingerprint_value
        self.rotated = False  # the path no longer names this file (renamed away or deleted)
        self.draining = False  # its source was removed: read to its end, then closed
        self.last_change = now  # when data last arrived (monotonic)
        self.last_seen_size = offset
        self._last_mtime_ns = -1
        self._fd = fd
        self._line_start = offset  # first byte of the pending (incomplete) line
        self._scan_pos = offset  # next byte to read
        self._buf = bytearray()
        self._overflow = False
        self._last_error = ""

    @property
    def offset(self) -> int:
        """Where a restart would resume: the start of the first line not yet returned."""
        return self._line_start

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def at_eof(self) -> bool:
        """True when everything the file held at the last read was consumed."""
        return self._scan_pos >= self.last_seen_size

    def fd_number(self) -> int:
        """The open handle (OSError when closed)."""
        if self._fd is None:
            raise OSError(f"{self.path} is not open")
        return self._fd

    def open(self) -> bool:
        """Reopen by path; False if the path is missing or now names another file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        if file_key(os.fstat(fd)) != self.key:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def first_line(self) -> bytes | None:
        """The file's first line (newline stripped) read through the handle, or None when
        the file is closed, unreadable or has no complete first line within the limit."""
        if self._fd is None:
            return None
        try:
            head = os.pread(self._fd, self.max_line_bytes + 1, 0)
        except OSError:
            return None
        end = head.find(b"\n")
        return head[:end] if end >= 0 else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, max_lines: int, now: float, max_bytes: int = 8 << 20) -> list[TailItem]:
        """New items, up to `max_lines` lines and about `max_bytes` read (memory bound)."""
        items: list[TailItem] = []
        if self._fd is None:
            return items
        try:
            st = os.fstat(self._fd)
            changed = st.st_size != self.last_seen_size or st.st_mtime_ns != self._last_mtime_ns
            self._last_mtime_ns = st.st_mtime_ns
            if st.st_size < self._line_start or (changed and not self._same_content(st.st_size)):
                items.append(self._truncated(st.st_size))
            if st.st_size > self.last_seen_size or items:
                self.last_change = now
            self.last_seen_size = max(self.last_seen_size, st.st_size)
            if covered(self.fingerprint) < min(st.st_size, FINGERPRINT_BYTES):
                self.fingerprint = fingerprint(self._fd, st.st_size)
            lines = 0
            budget_end = self._scan_pos + max_bytes
            while lines < max_lines and self._scan_pos < min(st.st_size, budget_end):
                chunk = os.pread(self._fd, CHUNK, self._scan_pos)
                if not chunk:
                    break
                lines += self._consume(chunk, items, max_lines - lines)
        except OSError as exc:
            message = f"{self.path}: cannot read: {exc.strerror or exc}"
            if message != self._last_error:  # once per distinct error, not every poll
                log.warning("%s", message)
                self._last_error = message
            return items
        self._last_error = ""
        return items

    def _same_content(self, size: int) -> bool:
        n = covered(self.fingerprint)
        if n == 0 or size < n or self._fd is None:
            return True  # shrinking is caught by the size check
        return matches(self._fd, self.fingerprint)

    def _truncated(self, size: int) -> Truncated:
        assert self._fd is not None
        item = Truncated(
            source=self.source,
            path=self.path,
            file_key=self.key,
            offset=self._line_start,
            last_seen_size=self.last_seen_size,
            size=size,
            fingerprint=fingerprint(self._fd, size),
            previous_fingerprint=self.fingerprint,
        )
        log.warning(
            "%s: truncated (copytruncate?) at offset %d (size now %d); reading it again from 0",
            self.path,
            self._line_start,
            size,
        )
        self.fingerprint = item.fingerprint
        self.last_seen_size = 0
        self._reset(0)
        return item

    def _consume(self, chunk: bytes, items: list[TailItem], max_lines: int) -> int:
        pos = 0
        count = 0
        while pos < len(chunk):
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                self._append(chunk[pos:])
                self._scan_pos += len(chunk) - pos
                return count
            if not self._buf and not self._overflow and newline - pos <= self.max_line_bytes:
                # the common case: the whole line lies in this chunk, sliced out once
                data, truncated = chunk[pos:newline], False
            else:
                self._append(chunk[pos:newline])
                data, truncated = bytes(self._buf), self._overflow
            end = self._scan_pos + (newline - pos) + 1
            items.append(
                Line(
                    source=self.source,
                    path=self.path,
                    file_key=self.key,
                    offset=self._line_start,
                    end_offset=end,
                    data=data,
                    truncated=truncated,
                    fingerprint=self.fingerprint,
                )
            )
            count += 1
            self._reset(end)
            pos = newline + 1
            if count >= max_lines:
                return count  # the rest of the chunk is read again next time
        return count

    def _append(self, data: bytes) -> None:
        room = self.max_line_bytes - len(self._buf)
        if len(data) > room:
            self._buf += data[:room]
            self._overflow = True
        else:
            self._buf += data

    def _reset(self, offset: int) -> None:
        self._line_start = self._scan_pos = offset
        if self._buf:
            self._buf = bytearray()
        self._overflow = False
