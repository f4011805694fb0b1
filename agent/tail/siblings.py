"""Find a checkpointed file again after it moved, among the files beside its last path.

While the agent is stopped, logrotate may rename a file (`audit.jsonl.1`, a dated name),
copy and truncate it, or compress and delete the rotated copy. At start the checkpoint
still names the file by identity (dev:ino plus a fingerprint of its first bytes,
agent.tail.fingerprint), so the directory it was in is searched:
- `by_key`: the same dev:ino under another name whose first bytes still match: the
  renamed file itself, to be read on from the checkpointed offset;
- `copy_of`: another file starting with the same bytes and at least as long as the
  checkpointed offset, the newest such: the copy copytruncate made, to be read on from
  that offset;
- `compressed`: a compressed file (gzip, bzip2, xz) named after the old one whose
  content starts with the same bytes: it cannot be tailed, but the exact byte range
  not read can be reported.
Only names starting with the old file's name (minus its extension) are considered
for copies and compressed files, so an unrelated log of the same directory is never
taken for it. Everything is best effort: an unreadable entry is skipped.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from agent.tail.fingerprint import covered, matches
from agent.tail.reader import file_key

log = logging.getLogger(__name__)

_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_CHUNK = 1 << 20


def _stem(path: str) -> str:
    """`audit.jsonl` → `audit`: rotated names keep at least this prefix."""
    name = Path(path).name
    return name.split(".", 1)[0] or name


def _entries(path: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(Path(path).parent) as found:
            yield from (e for e in found if e.is_file(follow_symlinks=False))
    except OSError:
        return


def _starts_with(path: str, value: str, min_size: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size >= min_size and matches(fd, value)
    except OSError:
        return False
    finally:
        os.close(fd)


def by_key(old_path: str, key: str, value: str) -> str | None:
    """A path beside `old_path` naming the file `key` whose first bytes match `value`."""
    for entry in _entries(old_path):
        try:
            if file_key(entry.stat(follow_symlinks=False)) == key:
                return entry.path if _starts_with(entry.path, value, 0) else None
        except OSError:
            continue
    return None


def copy_of(old_path: str, value: str, offset: int, skip: set[str]) -> tuple[str, str] | None:
    """(path, key) of a file beside `old_path` (not one of `skip`) starting with the bytes
    `value` covers and at least `offset` long: the copy copytruncate left."""
    if covered(value) == 0:
        return None  # an empty file's fingerprint matches anything: no evidence
    stem = _stem(old_path)
    # Newest first: copytruncate's copy was just written, while an older generation
    # could start with the same bytes (e.g. a file holding only a CSV header so far).
    for entry in sorted(_entries(old_path), key=_mtime, reverse=True):
        if not entry.name.startswith(stem) or entry.path == old_path:
            continue
        if Path(entry.name).suffix in _OPENERS:
            continue
        try:
            key = file_key(entry.stat(follow_symlinks=False))
        except OSError:
            continue
        if key not in skip and _starts_with(entry.path, value, offset):
            return entry.path, key
    return None


def _mtime(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        return 0


def _head_matches(stream: IO[bytes], value: str) -> bytes | None:
    n = covered(value)
    head = stream.read(n)
    digest = hashlib.blake2b(head, digest_size=8).hexdigest()
    return head if len(head) == n and value == f"{n}:{digest}" else None


def compressed(old_path: str, value: str) -> tuple[str, int] | None:
    """(path, uncompressed size) of a compressed file beside `old_path` whose content
    starts with the bytes `value` covers."""
    if covered(value) == 0:
        return None
    stem = _stem(old_path)
    for entry in sorted(_entries(old_path), key=lambda e: e.name):
        opener = _OPENERS.get(Path(entry.name).suffix)
        if opener is None or not entry.name.startswith(stem):
            continue
        try:
            with opener(entry.path, "rb") as stream:
                head = _head_matches(stream, value)
                if head is None:
                    continue
                size = len(head)
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                return entry.path, size
        except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
            log.debug("%s: cannot read as compressed: %s", entry.path, exc)
    return None
