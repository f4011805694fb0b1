"""Assembles and runs the agent: spool → shipper → outbox → pipeline (tail + parsers).

Start-up goes downstream first: the spool is recovered (next sequence and file
positions = acked checkpoint + unacked spool records), then the shipper, the outbox
feeding it from the spool, and last the reader. Shutdown in reverse: stop reading
(framers flushed into the spool), let the outbox submit what is spooled, give the
shipper `shutdown_grace_s` to get the outstanding acks, then abort whatever is left —
it stays in the spool and is sent again, with the same sequences, at the next start.

Threads: read (pipeline), feed (outbox), ship (shipper; acks land here and advance
the checkpoint, then let the spool delete fully acked segments).
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from agent.batch import Batcher
from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.config import AgentConfig, SourceConfig
from agent.errors import AgentError
from agent.outbox import Outbox
from agent.parsers import get_framer, get_parser
from agent.parsers.framing import Framer, StartPatternFramer
from agent.pipeline import Pipeline, SourceParser
from agent.ship import Backoff, Outgoing, Shipper, open_channel
from agent.spool import Spool
from agent.tail import FileTailer, SourceSpec
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"


@dataclass(frozen=True, slots=True)
class Clock:
    """Time sources, injected so that only the CLI picks the real clock."""

    wall_ns: Callable[[], int]
    monotonic: Callable[[], float]


class Watermark:
    """The acked checkpoint: advanced by acks (ship thread), pruned of files the tailer
    forgot (read thread) once every record spooled before the forgetting is acked."""

    def __init__(self, store: CheckpointStore, start: Checkpoint, spool: Spool) -> None:
        self._store = store
        self._spool = spool
        self._lock = threading.Lock()
        self._next_sequence = start.next_sequence
        self._files: dict[str, FileOffset] = dict(start.files)
        self._forgotten: dict[str, int] = {}  # key → spool next_sequence when forgotten

    def forget(self, keys: set[str]) -> None:
        upto = self._spool.next_sequence
        with self._lock:
            for key in keys:
                self._forgotten[key] = upto

    def delivered(self, item: Outgoing) -> None:
        last = item.last_sequence
        with self._lock:
            self._files.update(item.positions)
            for key, upto in list(self._forgotten.items()):
                if last + 1 >= upto:
                    self._files.pop(key, None)
                    del self._forgotten[key]
            self._next_sequence = max(self._next_sequence, last + 1)
            checkpoint = Checkpoint(self._next_sequence, dict(self._files))
        try:
            self._store.save(checkpoint)
        except OSError as exc:
            # Not fatal: the spool keeps the records; an old watermark means resends.
            log.error("cannot write checkpoint %s: %s", self._store.path, exc)
            return
        self._spool.ack(last)


def _framer_factory(source: SourceConfig) -> Callable[[], Framer]:
    multiline = source.multiline
    if multiline is not None:
        pattern = re.compile(multiline.start_pattern.encode())
        max_lines = multiline.max_lines
        return lambda: StartPatternFramer(pattern, max_lines)
    options = source.parsed_options()
    return lambda: get_framer(source.format, options)


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
        channel_factory: Callable[[str], grpc.Channel] | None = None,
        watch: bool = True,
    ) -> None:
        self.config = config
        self._clock = clock
        self._observer = pb.Observer(
            agent_id=config.agent_id, hostname=hostname, agent_version=version
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._grace_s = shutdown_grace_s
        self._channel_factory = channel_factory or (
            lambda endpoint: open_channel(config.collector, endpoint)
        )
        self._watch = watch
        self.store = CheckpointStore(config.state_dir)
        self.spool = Spool(
            config.state_dir / SPOOL_DIR,
            max_bytes=config.spool.max_bytes,
            segment_bytes=config.spool.segment_bytes,
        )
        self._crash: BaseException | None = None
        self._stop: threading.Event | None = None

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set; raise AgentError if a worker thread failed."""
        self._stop = stop
        self.store.prepare()
        acked = self.store.load()
        had_state = self.store.path.exists()
        recovery = self.spool.open(acked.next_sequence - 1)
        positions: Mapping[str, FileOffset] = {**acked.files, **recovery.positions}
        log.info(
            "agent %s starting: next sequence %d, %d spooled events to deliver, "
            "%d files with positions",
            self.config.agent_id,
            recovery.next_sequence,
            recovery.unacked,
            len(positions),
        )
        watermark = Watermark(self.store, acked, self.spool)
        retry = self.config.collector.retry
        shipper = Shipper(
            agent_id=self.config.agent_id,
            endpoints=self.config.collector.all_endpoints,
            channel_factory=self._channel_factory,
            max_in_flight=self.config.collector.max_in_flight,
            backoff=Backoff(retry.initial_s, retry.max_s, self._rng),
            on_delivered=watermark.delivered,
            monotonic=self._clock.monotonic,
        )
        batch = self.config.batch
        outbox = Outbox(
            agent_id=self.config.agent_id,
            observer=self._observer,
            spool=self.spool,
            reader=self.spool.reader(acked.next_sequence),
            batcher=Batcher(batch.max_events, batch.max_bytes, batch.max_wait_s),
            submit=shipper.submit,
            wall_ns=self._clock.wall_ns,
            monotonic=self._clock.monotonic,
        )
        initial = not had_state and recovery.next_sequence == 1
        pipeline = self._pipeline(positions, initial, watermark)
        reading = threading.Event()  # set = stop reading; distinct from `stop` on crashes
        draining = threading.Event()  # set = submit what is spooled, then end
        ship_thread = self._thread("ship", shipper.run)
        feed_thread = self._thread("feed", lambda: outbox.run(draining))
        read_thread = self._thread("read", lambda: pipeline.run(reading))
        ship_thread.start()
        feed_thread.start()
        read_thread.start()
        stop.wait()
        log.info("stopping: %d batches awaiting acknowledgement", shipper.pending())
        reading.set()
        deadline = self._clock.monotonic() + self._grace_s
        read_thread.join(max(0.0, deadline - self._clock.monotonic()))
        draining.set()
        feed_thread.join(max(0.0, deadline - self._clock.monotonic()))
        if not read_thread.is_alive() and not feed_thread.is_alive():
            shipper.close_input()
            ship_thread.join(max(0.0, deadline - self._clock.monotonic()))
        if shipper.pending() or ship_thread.is_alive() or feed_thread.is_alive():
            log.warning(
                "%d batches not acknowledged before shutdown; they stay in the spool and "
                "are sent again at the next start",
                shipper.pending(),
            )
        shipper.abort()
        ship_thread.join()
        feed_thread.join()
        read_thread.join()
        self.spool.close()
        if self._crash is not None:
            raise AgentError(f"internal error: {self._crash!r}") from self._crash

    def _pipeline(
        self, positions: Mapping[str, FileOffset], initial: bool, watermark: Watermark
    ) -> Pipeline:
        sources = self.config.sources
        tailer = FileTailer(
            [
                SourceSpec(
                    s.name,
                    tuple(s.paths),
                    tuple(s.exclude),
                    s.poll_interval_s,
                    s.start_at,
                    s.close_inactive_s,
                    s.close_rotated_after_s,
                    s.max_line_bytes,
                )
                for s in sources
            ],
            positions,
            self._clock.monotonic,
            initial=initial,
            watch=self._watch,
        )
        return Pipeline(
            observer=self._observer,
            tailer=tailer,
            parsers={
                s.name: SourceParser(
                    s.format,
                    get_parser(s.format, s.mapping, s.parsed_options()),
                    _framer_factory(s),
                    s.multiline.timeout_s if s.multiline is not None else 2.0,
                )
                for s in sources
            },
            spool=self.spool,
            on_forgotten=watermark.forget,
            wall_ns=self._clock.wall_ns,
            monotonic=self._clock.monotonic,
        )

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
