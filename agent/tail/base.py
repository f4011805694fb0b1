"""Types shared by tailer implementations."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

MAX_LINE_BYTES = 1_048_576


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line (newline stripped) and where it was read."""

    source: str  # name of the configured source
    path: str
    file_key: str  # "<dev>:<ino>": identity of the file regardless of its name
    offset: int  # byte offset of the line's first byte
    end_offset: int  # byte offset just past its newline: where reading resumes
    data: bytes
    truncated: bool = False  # longer than the limit; `data` holds its first bytes


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What a tailer needs to know of a source: a name, globs, excludes, a poll interval."""

    name: str
    patterns: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    poll_interval_s: float = 0.25


class Tailer(Protocol):
    """Produces lines of all sources in a deterministic order (see agent.tail)."""

    def read(self, max_lines: int) -> list[Line]:
        """Up to `max_lines` new complete lines; fewer means everything available was read."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until new data may be available, `timeout` passes or `stop` is set."""

    def active_keys(self) -> frozenset[str]:
        """File keys currently tailed (checkpoint entries of other files can be pruned)."""


StartOffsets = Mapping[str, int]
"""file key → offset to resume from (files not listed are read from the beginning)."""
