"""What the shipping scenarios (e2e, peer, latency, detection) do alike: wait for the
warm-up line, append the corpus and wait until every line is searchable, and the
throughput figures of such a run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opensearchpy import OpenSearch

from bench.corpus import append_all, corpus_bytes
from bench.processes import Proc
from bench.scenarios.base import Run
from bench.search import CountSamples, stored_bytes, wait_for_count
from bench.stats import rate_between

MIN_RATE = 100.0  # events/s below which a run is given up as stuck


def timeout_for(events: int) -> float:
    return 120.0 + events / MIN_RATE


def wait_warmed(client: OpenSearch, index: str, watch: tuple[Proc, ...]) -> None:
    """The warm-up line searchable: connections up, the index created."""
    wait_for_count(
        client, index, 1, started=time.monotonic(), timeout=120, watch=watch, interval=0.2
    )


@dataclass(frozen=True)
class Shipped:
    """One corpus appended and waited for."""

    lines: Sequence[bytes]
    write_s: float
    elapsed_s: float
    progress: CountSamples

    def stored(self, client: OpenSearch, pattern: str) -> Run:
        """Bytes on disk per event in the run's indices (`pattern`), untimed: call it
        after the clock stopped (the indices are merged first)."""
        events = 1 + len(self.lines)  # + the warm-up line
        return {"stored_bytes_per_event": stored_bytes(client, pattern) / events}

    def throughput(self) -> Run:
        """events, elapsed, events/s (overall and steady 10-90 %), write time, MiB/s."""
        events = len(self.lines)
        return {
            "events": events,
            "elapsed_s": self.elapsed_s,
            "events_per_s": events / self.elapsed_s,
            "steady_events_per_s": rate_between(self.progress.samples, 0.1, 0.9) or float("nan"),
            "write_s": self.write_s,
            "mib_per_s": corpus_bytes(self.lines) / self.elapsed_s / 2**20,
        }


def write_and_wait(
    client: OpenSearch,
    path: Path,
    lines: Sequence[bytes],
    chunk: int,
    index: str,
    watch: tuple[Proc, ...],
) -> Shipped:
    """Append `lines` to `path` in chunks and wait until they (and the warm-up line)
    are searchable in `index`; the clock starts with the first write."""
    started = time.monotonic()
    append_all([path], [lines], chunk)
    write_s = time.monotonic() - started
    progress = CountSamples()
    elapsed = wait_for_count(
        client,
        index,
        1 + len(lines),
        started=started,
        timeout=timeout_for(len(lines)),
        watch=watch,
        progress=progress,
    )
    return Shipped(lines, write_s, elapsed, progress)
