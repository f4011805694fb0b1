"""The reading side: tail → parse → number → batch → hand to the shipper.

Runs in one thread, so lines are numbered in exactly the order the tailer yields them.
Each batch carries the checkpoint cut that holds right after its last line; the
shipper reports it back once the batch is acked, and only then is it saved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.batch import Batcher
from agent.checkpoint import Checkpoint, FileOffset
from agent.parsers import ParseFn
from agent.ship import Outgoing
from agent.tail import Line, Tailer
from proto.v1 import audit_pb2 as pb

READ_BUDGET = 1000  # lines per tailer call; bounds the work between batch checks
IDLE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class SourceParser:
    """How the lines of one source are parsed."""

    format: str
    parse: ParseFn


class Pipeline:
    """Turns tailed lines into numbered events and sealed batches."""

    def __init__(
        self,
        *,
        agent_id: str,
        observer: pb.Observer,
        tailer: Tailer,
        parsers: Mapping[str, SourceParser],
        batcher: Batcher,
        start: Checkpoint,
        submit: Callable[[Outgoing], bool],
        wall_ns: Callable[[], int],
        monotonic: Callable[[], float],
    ) -> None:
        self._agent_id = agent_id
        self._observer = observer
        self._tailer = tailer
        self._parsers = parsers
        self._batcher = batcher
        self._submit = submit
        self._wall_ns = wall_ns
        self._monotonic = monotonic
        self._next_sequence = start.next_sequence
        self._offsets: dict[str, FileOffset] = dict(start.files)

    def run(self, stop: threading.Event) -> None:
        """Read until `stop` is set, then seal and submit the open batch."""
        while not stop.is_set():
            lines = self._tailer.read(READ_BUDGET)
            for line in lines:
                if not self._process(line):
                    return
            now = self._monotonic()
            if self._batcher.due(now) and not self._seal():
                return
            if len(lines) < READ_BUDGET:
                deadline = self._batcher.deadline()
                timeout = IDLE_WAIT_S if deadline is None else max(0.0, deadline - now)
                self._tailer.wait(timeout, stop)
        self._seal()

    def _process(self, line: Line) -> bool:
        source = self._parsers[line.source]
        event = source.parse(line.data)
        if event is None:  # blank line: consumed, nothing to send
            self._offsets[line.file_key] = FileOffset(line.path, line.end_offset)
            return True
        if line.truncated:
            event.flags.append("line_truncated")
        event.observed_unix_nano = self._wall_ns()
        event.observer.CopyFrom(self._observer)
        event.log.file_path = line.path
        event.log.offset = line.offset
        event.log.source_name = line.source
        event.log.format = source.format
        # Seal before numbering: the cut of the sealed batch must not include this line.
        if not self._batcher.fits(event) and not self._seal():
            return False
        event.sequence = self._next_sequence
        self._next_sequence += 1
        self._offsets[line.file_key] = FileOffset(line.path, line.end_offset)
        self._batcher.add(event, self._monotonic())
        return not self._batcher.full() or self._seal()

    def _seal(self) -> bool:
        """Submit the open batch (if any); False when the shipper has been aborted."""
        events = self._batcher.take()
        if not events:
            return True
        active = self._tailer.active_keys()
        cut = Checkpoint(
            next_sequence=self._next_sequence,
            files={k: v for k, v in self._offsets.items() if k in active},
        )
        batch = pb.Batch(agent_id=self._agent_id, events=events)
        return self._submit(Outgoing(batch=batch, cut=cut))
