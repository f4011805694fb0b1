"""File identity beyond dev:ino: a hash of the file's first bytes.

An inode number is reused once a file is deleted, and copytruncate keeps the inode
while replacing the content, so a checkpointed `dev:ino` alone cannot say "this is
still the file we read". The fingerprint is `"<n>:<hash>"` over the first n bytes,
n = min(size, FINGERPRINT_BYTES); it is recomputed as a file grows until it covers
1 KiB. A file matches a fingerprint when its first n bytes hash the same; "" (an
empty file's fingerprint) matches anything.
"""

from __future__ import annotations

import hashlib
import os

FINGERPRINT_BYTES = 1024


def fingerprint(fd: int, size: int) -> str:
    """Fingerprint of the open file `fd` whose size is `size`."""
    n = min(size, FINGERPRINT_BYTES)
    if n <= 0:
        return ""
    head = os.pread(fd, n, 0)
    return f"{len(head)}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"


def covered(value: str) -> int:
    """How many leading bytes `value` covers (0 for "")."""
    return int(value.split(":", 1)[0]) if value else 0


def matches(fd: int, value: str) -> bool:
    """True if the open file `fd` starts with the bytes `value` was computed from."""
    n = covered(value)
    if n == 0:
        return True
    head = os.pread(fd, n, 0)
    return len(head) == n and value == f"{n}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"
