"""Durable small-file writes of the agent's state directory (checkpoint, stream id,
receipts): the whole content written and fsynced before the file is renamed or linked
into place, and the directory fsynced so that the new name itself survives a crash."""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to `path` (mode 0600, never through a symlink) and fsync it.

    `exclusive`: fail with FileExistsError when `path` exists instead of truncating it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries: a rename, link or unlink in it is durable only then."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
