"""Tail layer: finds files and yields new complete lines with their file and byte offset.

It knows nothing of formats: a line is bytes. The pipeline drives a `Tailer`:

    lines = tailer.read(max_lines)        # what is available now, in a deterministic order
    if len(lines) < max_lines:
        tailer.wait(timeout, stop)        # until something may have changed

`PollingTailer` implements it by re-resolving globs every poll interval; a
watchdog/inotify-driven tailer (and rotation handling) can replace it behind the same
protocol without touching the pipeline.
"""

from agent.tail.base import Line, SourceSpec, Tailer
from agent.tail.poller import PollingTailer

__all__ = ["Line", "PollingTailer", "SourceSpec", "Tailer"]
