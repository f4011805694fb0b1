"""Types shared by tailer implementations."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from agent.checkpoint import FileOffset

MAX_LINE_BYTES = 1_048_576


class Line(NamedTuple):
    """One complete line (newline stripped) and where it was read.

    A named tuple, not a frozen dataclass: one is made per line read, and a frozen
    dataclass of eight fields takes ~0.7 µs more to build."""

    source: str  # name of the configured source
    path: str
    file_key: str  # "<dev>:<ino>": identity of the file regardless of its name
    offset: int  # byte offset of the line's first byte
    end_offset: int  # byte offset just past its newline: where reading resumes
    data: bytes
    truncated: bool = False  # longer than the limit; `data` holds its first bytes
    fingerprint: str = ""  # of the file when the line was read (agent.tail.fingerprint)


@dataclass(frozen=True, slots=True)
class Truncated:
    """The file shrank below the read position (copytruncate) or its first bytes changed:
    it is read again from 0. Bytes of the old content from `offset` on (at least
    `last_seen_size - offset` of them seen but unread) may be missed."""

    source: str
    path: str
    file_key: str
    offset: int  # where reading had got to (start of the first unreturned line)
    last_seen_size: int  # the largest size seen before the truncation
    size: int  # the size after it
    fingerprint: str  # of the new content
    while_stopped: bool = False  # noticed at start: truncated while the agent was stopped
    previous_fingerprint: str = ""  # of the content before the truncation
    copy_path: str = ""  # copytruncate's copy, read on from `offset` (agent.tail.siblings)
    copy_size: int = 0  # its size when found: the previous content's end


@dataclass(frozen=True, slots=True)
class Closed:
    """The file's handle was closed: rotated away or deleted and read to its end, or
    inactive. Whatever a framer holds for it must be flushed."""

    source: str
    path: str
    file_key: str
    reason: Literal["rotated", "inactive", "unreadable", "removed"]


@dataclass(frozen=True, slots=True)
class Unread:
    """Bytes of a checkpointed file that can no longer be read: it was rotated away
    while the agent was stopped and is gone, or was compressed (agent.tail.siblings).
    Bytes `offset` to `end` were not read; `end` is None when nobody can know it."""

    source: str
    path: str  # where the file was last read
    file_key: str
    offset: int
    end: int | None
    reason: str  # one line: what happened to the file


TailItem = Line | Truncated | Closed | Unread


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What a tailer needs to know of a source."""

    name: str
    patterns: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    poll_interval_s: float = 0.25
    start_at: Literal["beginning", "end"] = "beginning"
    close_inactive_s: float = 300.0
    close_rotated_after_s: float = 5.0
    max_line_bytes: int = MAX_LINE_BYTES


class Tailer(Protocol):
    """Produces lines of all sources in a deterministic order (see agent.tail)."""

    def read(self, max_items: int) -> list[TailItem]:
        """Up to `max_items` new items; fewer means everything available was read."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until new data may be available, `timeout` passes or `stop` is set."""

    def busy(self) -> bool:
        """True when the last `read` stopped at its byte budget with data left."""

    def forgotten(self) -> set[str]:
        """File keys dropped since the last call (their checkpoint entries can go)."""

    def first_line(self, key: str) -> bytes | None:
        """The first line of the open file `key`, None if unknown or not available
        (a framer resuming mid-file needs it, e.g. a CSV header)."""

    def reconfigure(self, sources: Sequence[SourceSpec]) -> None:
        """Switch to another set of sources between two reads (agent.tail.poller)."""

    def close(self) -> None:
        """Close every file handle and stop watching."""


StartPositions = Mapping[str, FileOffset]
"""file key → position to resume from (files not listed are new)."""
