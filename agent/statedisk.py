"""A full state disk must pause the agent, never wedge it.

The spool lives on the same filesystem as the checkpoint. When the collector is away
the spool can fill that filesystem; once the collector is back, every ack must write
checkpoint.json *before* the acked spool segments may be deleted — and that write
would fail with ENOSPC, so nothing would ever be freed. Hence a reserve: a file of
RESERVE_BYTES in state_dir, written while there is room. A state write that fails
with ENOSPC releases the reserve and is tried again; the checkpoint then lands, the
acked segments go, and the reserve is taken again as soon as there is room.

`disk_full` says whether the state filesystem has less than one reserve left (the
agent is then paused: reading waits for spool room); `crm-audit-agent status` and
the metrics (`state_disk_full`) show it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

RESERVE_FILE = "reserve"
RESERVE_BYTES = 1 << 20
_BLOCK = 64 * 1024

T = TypeVar("T")


def disk_full(state_dir: Path, reserve_bytes: int = RESERVE_BYTES) -> bool:
    """True when the filesystem of `state_dir` has less than `reserve_bytes` free."""
    try:
        st = os.statvfs(state_dir)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < reserve_bytes


class StateDisk:
    """The reserve file and the ENOSPC retry around state writes (module docstring)."""

    def __init__(self, state_dir: Path, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = state_dir / RESERVE_FILE
        self.state_dir = state_dir
        self.reserve_bytes = reserve_bytes
        self._lock = threading.Lock()
        self._warned = False

    def has_reserve(self) -> bool:
        try:
            return self.path.stat().st_size >= self.reserve_bytes
        except OSError:
            return False

    def take_reserve(self) -> bool:
        """Write the reserve file if it is missing; False when there is no room."""
        with self._lock:
            if self.has_reserve():
                return True
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    block = bytes(_BLOCK)
                    for _ in range(0, self.reserve_bytes, _BLOCK):
                        os.write(fd, block)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                if not self._warned:
                    log.warning(
                        "state disk: cannot keep a %d-byte reserve in %s (%s)",
                        self.reserve_bytes,
                        self.state_dir,
                        exc.strerror or exc,
                    )
                    self._warned = True
                return False
            if self._warned:
                log.info("state disk: room again; reserve of %d bytes kept", self.reserve_bytes)
                self._warned = False
            return True

    def release(self) -> bool:
        """Delete the reserve (to make room for a state write); False if there was none."""
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            log.warning(
                "state disk %s is full: reserve released for the agent's state writes",
                self.state_dir,
            )
            return True

    def write(self, what: str, action: Callable[[], T]) -> T:
        """Run the state write `action`; on ENOSPC release the reserve and try once more.
        OSError when it still fails."""
        try:
            return action()
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not self.release():
                raise
            log.info("retrying %s in the released reserve", what)
            return action()
