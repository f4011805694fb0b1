"""Tail layer: finds files and yields new complete lines with their file and byte offset.

It knows nothing of formats: a line is bytes. The pipeline drives a `Tailer`:

    items = tailer.read(max_items)        # Line / Truncated / Closed / Unread, in order
    if len(items) < max_items:
        tailer.wait(timeout, stop)        # until something may have changed (inotify or poll)

`FileTailer` (poller.py) discovers files by glob, identifies them by dev:ino plus a
fingerprint of their first bytes (fingerprint.py), keeps a handle open so that
renamed, deleted and truncated files are handled without loss (reader.py), and is
woken by inotify through watchdog (watch.py) with polling as the fallback.
"""

from agent.tail.base import Closed, Line, SourceSpec, Tailer, TailItem, Truncated, Unread
from agent.tail.poller import FileTailer

__all__ = [
    "Closed",
    "FileTailer",
    "Line",
    "SourceSpec",
    "TailItem",
    "Tailer",
    "Truncated",
    "Unread",
]
