"""The lines the benchmark writes, and the writers that append them to files.

Two kinds of corpus, both JSON lines the agent's jsonlines format reads with its default
mapping:

- `sample_lines`: realistic CRM audit records from `crm-audit sample`'s generator
  (logins, views, updates with field changes, exports, admin work; ~500 B per line).
  Used by the ceiling, end-to-end, agent-alone, latency and peer scenarios.
- `padded_lines`: a minimal record padded through its ``message`` to an exact line
  length (newline included); the scaling scenario's 100 B and 1 KiB lines.

Every record's time lies on one day (`CORPUS_DAY`), so all documents of a run land in
one monthly index.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.admin.sample import generate, to_line

CORPUS_DAY = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
WARMUP_OBJECT_ID = "bench-warmup"
PROBE_OBJECT_TYPE = "bench_probe"


def _encode(record: dict[str, Any]) -> bytes:
    return (to_line(record) + "\n").encode("utf-8")


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sample_lines(count: int, seed: int = 42) -> list[bytes]:
    """`count` realistic audit records as newline-terminated UTF-8 lines."""
    return [_encode(record) for record in generate(count, seed, CORPUS_DAY)]


def padded_lines(count: int, line_bytes: int) -> list[bytes]:
    """`count` minimal records, each exactly `line_bytes` long (newline included).

    A record that cannot be made that short (below ~100 B) is left unpadded.
    """
    lines = []
    for i in range(count):
        record: dict[str, Any] = {
            "timestamp": _timestamp(CORPUS_DAY + dt.timedelta(milliseconds=i)),
            "event": "record.view",
            "user": {"name": f"u{i % 1000:03d}"},
            "message": "",
        }
        room = line_bytes - len(_encode(record))
        record["message"] = "x" * max(room, 0)
        lines.append(_encode(record))
    return lines


def warmup_line(tag: str) -> bytes:
    """One record on the corpus day: shipping it opens connections and creates the index."""
    return _encode(
        {
            "timestamp": _timestamp(CORPUS_DAY),
            "event": "record.view",
            "outcome": "success",
            "user": {"name": "bench"},
            "object": {"type": "bench", "id": WARMUP_OBJECT_ID},
            "message": f"warm-up {tag}",
        }
    )


def probe_line(marker: str, written: dt.datetime) -> bytes:
    """A latency probe: its marker is searchable as ``crm.object.id``.

    Its record time is on the corpus day like every other line (so it lands in the
    index the warm-up created); the write time is only informative here.
    """
    return _encode(
        {
            "timestamp": _timestamp(CORPUS_DAY),
            "event": "record.view",
            "outcome": "success",
            "user": {"id": "u-probe", "name": "bench"},
            "object": {"type": PROBE_OBJECT_TYPE, "id": marker},
            "message": f"latency probe written {written.isoformat()}",
        }
    )


def split_round_robin(lines: Sequence[bytes], parts: int) -> list[list[bytes]]:
    """Deal `lines` into `parts` lists (line i goes to part i % parts)."""
    return [list(lines[k::parts]) for k in range(parts)]


def append_all(paths: Sequence[Path], per_file: Sequence[Sequence[bytes]], chunk: int) -> int:
    """Append each file's lines in writes of up to `chunk` lines, visiting the files in turn.

    Returns the bytes written. Files are opened in append mode (created when missing),
    as an application appending to its log files would.
    """
    handles = [path.open("ab", buffering=0) for path in paths]
    written = 0
    try:
        position = [0] * len(paths)
        remaining = sum(len(lines) for lines in per_file)
        while remaining:
            for k, handle in enumerate(handles):
                start = position[k]
                block = per_file[k][start : start + chunk]
                if not block:
                    continue
                data = b"".join(block)
                handle.write(data)
                written += len(data)
                position[k] += len(block)
                remaining -= len(block)
    finally:
        for handle in handles:
            handle.close()
    return written


@dataclass
class PacedWriter:
    """Appends lines to one file at a steady rate, every `probe_every`-th line a probe.

    Runs in a thread (`start`/`join`). `probes` maps each probe marker to the wall-clock
    time (epoch seconds) right after the write that contained it returned.
    """

    path: Path
    background: Sequence[bytes]
    rate_per_s: float
    duration_s: float
    probe_every: int
    run_tag: str
    tick_s: float = 0.01
    probes: dict[str, float] = field(default_factory=dict)
    lines_written: int = 0
    clock: Callable[[], float] = time.time
    _thread: threading.Thread | None = None
    error: Exception | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="paced-writer", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._write()
        except Exception as exc:  # noqa: BLE001 - reported by the scenario, not lost in a thread
            self.error = exc

    def _write(self) -> None:
        total = int(self.rate_per_s * self.duration_s)
        started = time.monotonic()
        next_background = 0
        with self.path.open("ab", buffering=0) as handle:
            while self.lines_written < total:
                due = min(total, int((time.monotonic() - started) * self.rate_per_s) + 1)
                block: list[bytes] = []
                markers: list[str] = []
                while self.lines_written + len(block) < due:
                    number = self.lines_written + len(block)
                    if number % self.probe_every == 0:
                        marker = f"lat-{self.run_tag}-{number}"
                        markers.append(marker)
                        block.append(probe_line(marker, dt.datetime.now(dt.UTC)))
                    else:
                        block.append(self.background[next_background % len(self.background)])
                        next_background += 1
                if block:
                    handle.write(b"".join(block))
                    now = self.clock()
                    for marker in markers:
                        self.probes[marker] = now
                    self.lines_written += len(block)
                time.sleep(self.tick_s)


def corpus_bytes(lines: Sequence[bytes]) -> int:
    return sum(len(line) for line in lines)
