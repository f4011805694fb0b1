"""inotify (watchdog) → a wake-up signal for the tailer. No reading, no parsing.

The tailer still polls and re-resolves its globs every poll interval; events only
make it look sooner. Whatever cannot be watched (a directory that does not exist yet,
an exhausted inotify limit, a network filesystem) is covered by that poll.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


def watch_roots(patterns: Iterable[str]) -> dict[str, bool]:
    """Directory → recursive?, for the fixed prefix of every glob pattern."""
    roots: dict[str, bool] = {}
    for pattern in patterns:
        parts = Path(pattern).parts
        fixed: list[str] = []
        for part in parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        # Wildcards only in the file name: watch its directory alone; else the whole subtree.
        recursive = len(fixed) < len(parts) - 1
        directory = str(Path(*fixed)) if len(fixed) < len(parts) else str(Path(*fixed).parent)
        roots[directory] = roots.get(directory, False) or recursive
    return roots


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._wake.set()


class Watcher:
    """Sets `wake` whenever something changes under the watched directories."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.wake = threading.Event()
        self._roots = watch_roots(patterns)
        self._observer: Any = None

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        handler = _Wake(self.wake)
        watched = 0
        for directory, recursive in sorted(self._roots.items()):
            if not os.path.isdir(directory):  # noqa: PTH112 - plain string paths
                continue
            try:
                observer.schedule(handler, directory, recursive=recursive)
                watched += 1
            except OSError as exc:
                log.warning("cannot watch %s (%s); polling it instead", directory, exc)
        if watched:
            try:
                observer.start()
            except OSError as exc:
                log.warning("file watching unavailable (%s); polling instead", exc)
                return
            self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
