"""Incremental reading of one file from an offset into complete lines.

Only complete lines are returned: a last line without its newline waits for it. A
line longer than the limit keeps its first `max_line_bytes` and is marked truncated;
the rest is skipped as it is read, so memory stays bounded and the file never stalls.
Offsets are always line starts, so a checkpointed offset resumes on a line boundary.
"""

from __future__ import annotations

import logging
import os

from agent.tail.base import MAX_LINE_BYTES, Line

log = logging.getLogger(__name__)

CHUNK = 65_536


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


class FileReader:
    """Reads new lines of one file (identified by dev:ino) starting at `offset`."""

    def __init__(
        self,
        source: str,
        path: str,
        key: str,
        offset: int = 0,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.source = source
        self.path = path
        self.key = key
        self.max_line_bytes = max_line_bytes
        self._line_start = offset  # first byte of the pending (incomplete) line
        self._scan_pos = offset  # next byte to read
        self._buf = bytearray()
        self._overflow = False
        self._last_error = ""

    @property
    def offset(self) -> int:
        """Where a restart would resume: the start of the first line not yet returned."""
        return self._line_start

    def read(self, max_lines: int) -> list[Line]:
        lines: list[Line] = []
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if file_key(st) != self.key:
                    return lines  # the path now names another file; the next scan sees it
                if st.st_size < self._line_start:
                    # Truncated in place (copytruncate); rotation handling comes later.
                    log.warning(
                        "%s: truncated below offset %d, rereading", self.path, self._line_start
                    )
                    self._reset(0)
                if st.st_size <= self._scan_pos:
                    return lines
                f.seek(self._scan_pos)
                while len(lines) < max_lines:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    self._consume(chunk, lines, max_lines)
        except OSError as exc:
            message = f"{self.path}: cannot read: {exc.strerror or exc}"
            if message != self._last_error:  # once per distinct error, not every poll
                log.warning("%s", message)
                self._last_error = message
            return lines
        self._last_error = ""
        return lines

    def _consume(self, chunk: bytes, lines: list[Line], max_lines: int) -> None:
        pos = 0
        while pos < len(chunk):
            newline = chunk.find(b"\n", pos)
            if newline < 0:
                self._append(chunk[pos:])
                self._scan_pos += len(chunk) - pos
                return
            self._append(chunk[pos:newline])
            end = self._scan_pos + (newline - pos) + 1
            lines.append(
                Line(
                    source=self.source,
                    path=self.path,
                    file_key=self.key,
                    offset=self._line_start,
                    end_offset=end,
                    data=bytes(self._buf),
                    truncated=self._overflow,
                )
            )
            self._reset(end)
            pos = newline + 1
            if len(lines) >= max_lines:
                return  # the rest of the chunk is read again next time

    def _append(self, data: bytes) -> None:
        room = self.max_line_bytes - len(self._buf)
        if len(data) > room:
            self._buf += data[:room]
            self._overflow = True
        else:
            self._buf += data

    def _reset(self, offset: int) -> None:
        self._line_start = self._scan_pos = offset
        self._buf = bytearray()
        self._overflow = False
