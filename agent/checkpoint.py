"""Where reading resumes after a restart, and which sequence number comes next.

The checkpoint is one JSON file in state_dir, replaced atomically (temp file, fsync,
rename, fsync of the directory):

    {"version": 1, "next_sequence": N,
     "files": {"<dev>:<ino>": {"path": "/var/log/crm/audit.jsonl", "offset": 123}}}

Invariant: the checkpoint describes a *cut* of the input — every line before the
offsets got a sequence below `next_sequence`, and every event with such a sequence
was acknowledged STATUS_OK by the collector. It is written only when a batch is acked
OK; because acks arrive in order, that batch's cut closes a contiguous acked prefix.
After a restart the agent reads from the cut again, files in sorted path order, and
numbers events from `next_sequence`; (agent_id, sequence) is the document _id, so
events that were indexed but not yet checkpointed come back with the same _id and
are deduplicated by the collector.

Remaining gap (closed by the durable spool, issue 3): sequences of events that were
sent but not acked at the time of a crash are re-assigned by re-reading the files.
For one file that is the same line → the same sequence. With several files that grew
concurrently, the interleaving seen after the restart may differ from the one before
it, so a sequence already indexed for line A may now be given to line B: the collector
sees B as a duplicate of A and B is silently not indexed (and A may be indexed twice
under two sequences). Likewise a file truncated/replaced or deleted between crash and
restart loses its unacked lines. The spool fixes this by persisting each event with
its sequence before it is sent, so a resend is byte-identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import CheckpointError

VERSION = 1
FILE_NAME = "checkpoint.json"


@dataclass(frozen=True, slots=True)
class FileOffset:
    """Read position in one file: the byte after the last consumed line."""

    path: str
    offset: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A consistent cut: next sequence number plus per-file offsets keyed by "dev:ino"."""

    next_sequence: int = 1
    files: Mapping[str, FileOffset] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "next_sequence": self.next_sequence,
            "files": {
                key: {"path": pos.path, "offset": pos.offset}
                for key, pos in sorted(self.files.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """Parse the versioned format; raise ValueError on anything unexpected."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("version")
        if version != VERSION:
            raise ValueError(f"unsupported version {version!r} (this agent reads {VERSION})")
        next_sequence = data.get("next_sequence")
        files = data.get("files")
        if not isinstance(next_sequence, int) or next_sequence < 1:
            raise ValueError("next_sequence must be a positive integer")
        if not isinstance(files, dict):
            raise ValueError("files must be an object")
        out = {}
        for key, pos in files.items():
            if (
                not isinstance(pos, dict)
                or not isinstance(pos.get("path"), str)
                or not isinstance(pos.get("offset"), int)
                or pos["offset"] < 0
            ):
                raise ValueError(f"files[{key!r}] must be {{path: str, offset: int >= 0}}")
            out[key] = FileOffset(pos["path"], pos["offset"])
        return cls(next_sequence, out)


class CheckpointStore:
    """Loads and atomically saves the checkpoint file in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._state_dir = state_dir

    def prepare(self) -> None:
        """Create state_dir (0700) if missing."""
        self._state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self) -> Checkpoint:
        """The saved checkpoint; a fresh one when none exists yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Checkpoint()
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{self.path}: cannot read checkpoint: {exc}") from None
        try:
            return Checkpoint.from_json(json.loads(text))
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: invalid checkpoint: {exc}") from None

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically: readers see the old or the new one, whole."""
        data = json.dumps(checkpoint.to_json(), separators=(",", ":")).encode()
        tmp = self.path.with_name(f"{FILE_NAME}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)
        # The rename itself is durable only once the directory entry is flushed.
        dir_fd = os.open(self._state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
