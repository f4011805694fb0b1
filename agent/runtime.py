"""Assembles and runs the agent: checkpoint → shipper → pipeline (tail + parsers + batcher).

Start-up goes downstream first (shipper, then reader); shutdown in reverse: stop
reading, seal the open batch, give the shipper `shutdown_grace_s` to get the
outstanding acks, then abort whatever is left (it stays behind the checkpoint and is
read again at the next start).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from agent.batch import Batcher
from agent.checkpoint import Checkpoint, CheckpointStore
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.parsers import get_parser
from agent.pipeline import Pipeline, SourceParser
from agent.ship import Backoff, Outgoing, Shipper, open_channel
from agent.tail import PollingTailer, SourceSpec
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Clock:
    """Time sources, injected so that only the CLI picks the real clock."""

    wall_ns: Callable[[], int]
    monotonic: Callable[[], float]


class Agent:
    """One agent process: `run(stop)` blocks until `stop` is set and the drain is over."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock,
        hostname: str,
        version: str,
        rng: random.Random | None = None,
        shutdown_grace_s: float = 5.0,
        channel_factory: Callable[[], grpc.Channel] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._observer = pb.Observer(
            agent_id=config.agent_id, hostname=hostname, agent_version=version
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._grace_s = shutdown_grace_s
        self._channel_factory = channel_factory or (lambda: open_channel(config.collector))
        self.store = CheckpointStore(config.state_dir)
        self._crash: BaseException | None = None
        self._stop: threading.Event | None = None

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set; raise AgentError if a worker thread failed."""
        self._stop = stop
        self.store.prepare()
        start = self.store.load()
        log.info(
            "agent %s starting at sequence %d with %d checkpointed files",
            self.config.agent_id,
            start.next_sequence,
            len(start.files),
        )
        retry = self.config.collector.retry
        shipper = Shipper(
            agent_id=self.config.agent_id,
            endpoint=self.config.collector.endpoint,
            channel_factory=self._channel_factory,
            max_in_flight=self.config.collector.max_in_flight,
            backoff=Backoff(retry.initial_s, retry.max_s, self._rng),
            on_delivered=self._delivered,
            monotonic=self._clock.monotonic,
        )
        pipeline = self._pipeline(start, shipper)
        reading = threading.Event()  # set = stop reading; distinct from `stop` on crashes
        ship_thread = self._thread("ship", shipper.run)
        read_thread = self._thread("read", lambda: pipeline.run(reading))
        ship_thread.start()
        read_thread.start()
        stop.wait()
        log.info("stopping: %d batches awaiting acknowledgement", shipper.pending())
        reading.set()
        deadline = self._clock.monotonic() + self._grace_s
        read_thread.join(max(0.0, deadline - self._clock.monotonic()))
        if not read_thread.is_alive():
            shipper.close_input()
            ship_thread.join(max(0.0, deadline - self._clock.monotonic()))
        if shipper.pending() or ship_thread.is_alive():
            log.warning(
                "%d batches not acknowledged before shutdown; they will be read again",
                shipper.pending(),
            )
        shipper.abort()
        ship_thread.join()
        read_thread.join()
        if self._crash is not None:
            raise AgentError(f"internal error: {self._crash!r}") from self._crash

    def _pipeline(self, start: Checkpoint, shipper: Shipper) -> Pipeline:
        sources = self.config.sources
        tailer = PollingTailer(
            [
                SourceSpec(s.name, tuple(s.paths), tuple(s.exclude), s.poll_interval_s)
                for s in sources
            ],
            {key: pos.offset for key, pos in start.files.items()},
            self._clock.monotonic,
        )
        batch = self.config.batch
        return Pipeline(
            agent_id=self.config.agent_id,
            observer=self._observer,
            tailer=tailer,
            parsers={
                s.name: SourceParser(s.format, get_parser(s.format, s.mapping, s.parsed_options()))
                for s in sources
            },
            batcher=Batcher(batch.max_events, batch.max_bytes, batch.max_wait_s),
            start=start,
            submit=shipper.submit,
            wall_ns=self._clock.wall_ns,
            monotonic=self._clock.monotonic,
        )

    def _delivered(self, item: Outgoing) -> None:
        try:
            self.store.save(item.cut)
        except OSError as exc:
            # Not fatal: the old checkpoint only means re-reading (and deduplicated resends).
            log.error("cannot write checkpoint %s: %s", self.store.path, exc)

    def _thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - a dead thread must stop the agent
                log.critical("thread %s failed: %r", name, exc)
                self._crash = exc
                if self._stop is not None:
                    self._stop.set()

        return threading.Thread(target=guarded, name=f"agent-{name}", daemon=True)
