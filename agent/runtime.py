"""Assembles and runs the agent: spool → shipper → outbox → pipeline (tail + parsers).

Start-up goes downstream first: the spool is recovered (next sequence and file
positions = acked checkpoint + unacked spool records), then the shipper, the outbox
feeding it from the spool, and last the reader. Shutdown in reverse: stop reading
(framers flushed into the spool), let the outbox submit what is spooled, give the
shipper `shutdown_grace_s` to get the outstanding acks, then abort whatever is left —
it stays in the spool and is sent again, with the same sequences, at the next start.

Threads: read (pipeline), feed (outbox), ship (shipper; acks land here and advance
the checkpoint, then let the spool delete fully acked segments).

Stream and tamper evidence (agent.stream, agent.sealing): the signing key is loaded
(created on the first start) before anything else, then the stream (state_dir/
stream.json, created with the state). The acked checkpoint holds the stream, its
acked sequence and the head after it; the outbox recomputes the heads of what was
spooled past it from the spool records themselves, so nothing about the chain is
written per append. A state of stream format 1 (checkpoint without a stream) is taken
over: its file positions are kept, a new stream starts at sequence 1, its spool
segments are deleted if fully acked and otherwise refused (agent.spool.drop_legacy).
The new stream's sequence 1 is an `agent.stream_continued` event naming the format 1
history's last acked sequence (and its head, from the legacy chain.json when that
holds exactly that sequence), so an upgrade is not taken for a restart without state.
Order, for exactly once across crashes: stream.json, then the event is spooled (only
when this stream's spool is still empty), then the format 2 checkpoint is written, then
chain.json is deleted. A crash before the checkpoint repeats the takeover with the same
stream and finds the event already spooled; after it, there is no format 1 state left.

Reload (`reload`, on SIGHUP from the CLI): sources and batch limits of a new, already
validated config are handed to the read and feed threads, which apply them between two
passes — the spool, checkpoint and chain are untouched, so sequences and offsets run
on. Settings read only at start (identity, state, collector, spool, integrity,
metrics) are reported as taking effect at the next restart.

Metrics (agent.metrics): always counted; served when `metrics.listen` is set.

Health (`healthy`, for the systemd watchdog): every thread alive, and the read loop
— the one that can hang on a stuck file system — has been round within the limit.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import grpc
from pydantic import BaseModel

from agent import native, notices, stream
from agent.batch import Batcher
from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.config import AgentConfig, SourceConfig
from agent.errors import AgentError
from agent.metrics import AgentMetrics, AgentState, MetricsServer
from agent.outbox import Outbox
from agent.parsers import get_framer, get_source
from agent.parsers.framing import Framer, StartPatternFramer
from agent.pipeline import Pipeline, SourceParser
from agent.receipts import ReceiptStore
from agent.sealing import LEGACY_CHAIN_FILE, PUBLIC_KEY_FILE, AgentKey, Chainer
from agent.ship import Backoff, Outgoing, Shipper, open_channel
from agent.spool import DIR_NAME, Entry, Recovery, Spool, drop_legacy
from agent.statedisk import StateDisk, disk_full
from agent.tail import FileTailer, SourceSpec
from proto import integrity
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

SPOOL_DIR = DIR_NAME
# Top-level keys read only at start: a reload that changes them says "restart needed".
RESTART_KEYS = ("agent_id", "state_dir", "collector", "spool", "integrity", "metrics")
# At most one checkpoint save per this many seconds (Watermark): a save costs ~0.7 ms of
# CPU (fsync, rename, directory fsync), ~1.4 µs per event when every 500-event batch's
# ack saved one; a crash re-sends at most this much of what was already acked.
CHECKPOINT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Takeover:
    """A format 1 state being taken over: the new stream's checkpoint, still to be
    written, and what the continuation event states about the format 1 history."""

    checkpoint: Checkpoint
    previous_sequence: int  # the format 1 history's last acked sequence
    previous_head: bytes | None  # its chain head there, when chain.json held it


@dataclass(frozen=True, slots=True)
class Clock:
    """Time sources, injected so that only the CLI picks the real clock."""

    wall_ns: Callable[[], int]
    monotonic: Callable[[], float]


class Watermark:
    """The acked checkpoint: advanced by acks (ship thread), pruned of files the tailer
    forgot (read thread) once every record spooled before the forgetting is acked.

    Saved at most once per `save_interval_s` (an fsync, a rename and a directory fsync
    each time): an ack within the interval of the last save only moves the watermark in
    memory, and `flush` (the main thread's tick, and shutdown) saves it later. A crash
    in between leaves an older checkpoint, which recovery handles as it handles a crash
    between an ack and its save: the spool keeps every record past the saved watermark
    (segments are deleted only up to what is saved) and they are sent again, with the
    same sequences and bytes, and deduplicated by the collector."""

    def __init__(
        self,
        store: CheckpointStore,
        start: Checkpoint,
        spool: Spool,
        disk: StateDisk,
        *,
        monotonic: Callable[[], float],
        save_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self._store = store
        self._spool = spool
        self._disk = disk
        self._monotonic = monotonic
        self._interval_s = save_interval_s
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time, in order
        self._next_sequence = start.next_sequence
        self._stream_id = start.stream_id
        self._head = start.head
        self._files: dict[str, FileOffset] = dict(start.files)
        self._forgotten: dict[str, int] = {}  # key → spool next_sequence when forgotten
        self._dirty = False  # acked past the saved checkpoint
        self._saved_at: float | None = None  # monotonic time of the last save

    @property
    def acked_sequence(self) -> int:
        """The last acknowledged sequence (0 before the first)."""
        return self._next_sequence - 1

    def forget(self, keys: set[str]) -> None:
        upto = self._spool.next_sequence
        with self._lock:
            for key in keys:
                self._forgotten[key] = upto

    def delivered(self, item: Outgoing) -> None:
        if not item.events or item.partial:
            return  # a heartbeat, or a piece of a split batch: its last piece advances
        last = item.last_sequence
        with self._lock:
            self._files.update(item.positions)
            for key, upto in list(self._forgotten.items()):
                if last + 1 >= upto:
                    self._files.pop(key, None)
                    del self._forgotten[key]
            if last + 1 > self._next_sequence:
                self._next_sequence, self._head = last + 1, item.head
            self._dirty = True
            saved_at = self._saved_at
        if saved_at is None or self._monotonic() - saved_at >= self._interval_s:
            self.flush()

    def flush(self) -> None:
        """Save the watermark if an ack moved it since the last save, then let the spool
        delete what that save covers."""
        with self._save_lock:
            with self._lock:
                if not self._dirty:
                    return
                checkpoint = Checkpoint(
                    self._next_sequence, dict(self._files), self._stream_id, self._head
                )
                self._dirty = False
                self._saved_at = self._monotonic()
            try:
                self._disk.write("the checkpoint", lambda: self._store.save(checkpoint))
            except OSError as exc:
                # Not fatal: the spool keeps the records; an old watermark means resends.
                log.error("cannot write checkpoint %s: %s", self._store.path, exc)
                with self._lock:
                    self._dirty = True
                return
            self._spool.ack(checkpoint.next_sequence - 1)
        if not self._disk.has_reserve():
            self._disk.take_reserve()  # acked segments are gone: room again, maybe


def _framer_factory(source: SourceConfig) -> Callable[[], Framer]:
    multiline = source.multiline
    if multiline is not None:
        pattern = re.compile(multiline.start_pattern.encode())
        max_lines = multiline.max_lines
        return lambda: StartPatternFramer(pattern, max_lines)
    options = source.parsed_options()
    return lambda: get_framer(source.format, options)


def _source_spec(s: SourceConfig) -> SourceSpec:
    return SourceSpec(
        s.name,
        tuple(s.paths),
        tuple(s.exclude),
        s.poll_interval_s,
        s.start_at,
        s.close_inactive_s,
        s.close_rotated_after_s,
        s.max_line_bytes,
    )


def _source_parser(s: SourceConfig) -> SourceParser:
    parse, encode = get_source(s.format, s.mapping, s.parsed_options(), s.actions)
    return SourceParser(
        s.format,
        parse,
        _framer_factory(s),
        s.multiline.timeout_s if s.multiline is not None else 2.0,
        encode,
    )


def _changed_keys(old: BaseModel, new: BaseModel, keys: Sequence[str]) -> list[str]:
    """Dotted names of the settings under `keys` that differ (one level deep)."""
    out = []
    for key in keys:
        a, b = getattr(old, key), getattr(new, key)
        if a == b:
            continue
        if isinstance(a, BaseModel) and isinstance(b, BaseModel):
            subs = [f for f in type(a).model_fields if getattr(a, f) != getattr(b, f)]
            out += [f"{key}.{f}" for f in subs] or [key]
        else:
            out.append(key)
    return out


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
        self.disk = StateDisk(config.state_dir)
        self.receipts = ReceiptStore(config.state_dir)
        self.stream_id = ""  # set by `run`
        self.spool = Spool(
            config.state_dir / SPOOL_DIR,
            max_bytes=config.spool.max_bytes,
            segment_bytes=config.spool.segment_bytes,
        )
        self._crash: BaseException | None = None
        self._stop: threading.Event | None = None
        self._threads: list[threading.Thread] = []
        self._read_loop_at: float | None = None  # monotonic time of the read loop's last round
        self.metrics = AgentMetrics(wall=lambda: clock.wall_ns() / 1e9)
        self._started = config  # what restart-only settings are in effect
        self._pipeline: Pipeline | None = None
        self._outbox: Outbox | None = None
        self._tailer: FileTailer | None = None
        self._files_watched: dict[str, int] = {}
        self.metrics_port: int | None = None  # bound port of the metrics endpoint

    def healthy(self, stall_s: float) -> bool:
        """True while every thread runs and the read loop went round within `stall_s`."""
        if not self._threads or not all(t.is_alive() for t in self._threads):
            return False
        at = self._read_loop_at
        return at is not None and self._clock.monotonic() - at <= stall_s

    def _read_loop_round(self) -> None:
        self._read_loop_at = self._clock.monotonic()
        if self._tailer is not None:  # a snapshot for metrics, taken in the read thread
            self._files_watched = self._tailer.watched_files()

    def reload(self, new: AgentConfig) -> list[str]:
        """Apply what can change while running (sources, batch limits); return one line
        per thing that happened, those needing a restart first (see module docstring)."""
        if self._pipeline is None or self._outbox is None:
            return ["not running yet: nothing reloaded"]
        lines = []
        restart = _changed_keys(self._started, new, RESTART_KEYS)
        if restart:
            lines.append(
                f"config reload: {', '.join(restart)} changed; takes effect at the next restart"
            )
        old = self.config
        parsers = {s.name: _source_parser(s) for s in new.sources}
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        added = [n for n in new_sources if n not in old_sources]
        removed = [n for n in old_sources if n not in new_sources]
        changed = [n for n in new_sources if n in old_sources and new_sources[n] != old_sources[n]]
        self._pipeline.reconfigure([_source_spec(s) for s in new.sources], parsers)
        if new.batch != old.batch:
            b = new.batch
            self._outbox.set_batch_limits(b.max_events, b.max_bytes, b.max_wait_s)
        self.config = old.model_copy(
            update={"sources": new.sources, "batch": new.batch, "logging": new.logging}
        )
        parts = [
            f"{what}: {', '.join(names)}"
            for what, names in (("added", added), ("removed", removed), ("changed", changed))
            if names
        ]
        if new.batch != old.batch:
            parts.append("batch limits changed")
        lines.append(f"config reloaded: {'; '.join(parts) or 'no source or batch changes'}")
        return lines

    def _state(self, watermark: Watermark, shipper: Shipper) -> AgentState:
        return AgentState(
            spool_bytes=self.spool.size_bytes(),
            spool_segments=len(self.spool.segment_names()),
            next_sequence=self.spool.next_sequence,
            acked_sequence=watermark.acked_sequence,
            batches_in_flight=shipper.pending(),
            files_watched=self._files_watched,
            connections=shipper.connection_states(),
            state_disk_full=disk_full(self.config.state_dir),
        )

    def run(
        self,
        stop: threading.Event,
        *,
        on_ready: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        """Run until `stop` is set; raise AgentError if a worker thread failed.

        `on_ready` is called once the spool is recovered and every thread runs;
        `on_tick` every `tick_s` from this (the main) thread until `stop`.
        """
        self._stop = stop
        self.store.prepare()
        self.disk.take_reserve()  # no room now is not fatal: taken once acks free some
        server = None
        if self.config.metrics.listen is not None:
            server = MetricsServer(self.config.metrics.listen, self.metrics)
            try:
                self.metrics_port = server.start()
            except OSError as exc:
                raise AgentError(
                    f"metrics.listen: cannot listen on {self.config.metrics.listen}: "
                    f"{exc.strerror or exc}"
                ) from None
        try:
            self._run(stop, on_ready, on_tick, tick_s)
        finally:
            if server is not None:
                server.stop()

    def _run(
        self,
        stop: threading.Event,
        on_ready: Callable[[], None] | None,
        on_tick: Callable[[], None] | None,
        tick_s: float,
    ) -> None:
        key = AgentKey.load_or_create(self.config.state_dir)
        log.info(
            "signing key %s; public key %s (register it on the collector: crm-audit keys "
            "register KEYS_DIR %s %s)",
            key.key_id,
            self.config.state_dir / PUBLIC_KEY_FILE,
            self.config.agent_id,
            self.config.state_dir / PUBLIC_KEY_FILE,
        )
        had_state = self.store.path.exists()
        acked, takeover = self._take_stream(self.store.load(), had_state)
        self.stream_id = acked.stream_id
        recovery = self.spool.open(acked.next_sequence - 1, stream_id=acked.stream_id)
        if takeover is not None:
            recovery = self._finish_takeover(takeover, recovery)
        positions: Mapping[str, FileOffset] = {**acked.files, **recovery.positions}
        log.info(
            "agent %s stream %s starting: next sequence %d, %d spooled events to deliver, "
            "%d files with positions",
            self.config.agent_id,
            acked.stream_id,
            recovery.next_sequence,
            recovery.unacked,
            len(positions),
        )
        log.info("parsing: %s", native.DESCRIPTION)
        watermark = Watermark(
            self.store, acked, self.spool, self.disk, monotonic=self._clock.monotonic
        )
        retry = self.config.collector.retry
        outbox: Outbox | None = None

        def reseal(
            first: int, prev: bytes, hashes: Sequence[bytes], times: Sequence[int]
        ) -> pb.Seal:
            assert outbox is not None  # batches exist only once the outbox runs
            return outbox.reseal(first, prev, hashes, times)

        shipper = Shipper(
            agent_id=self.config.agent_id,
            endpoints=self.config.collector.all_endpoints,
            channel_factory=self._channel_factory,
            max_in_flight=self.config.collector.max_in_flight,
            backoff=Backoff(retry.initial_s, retry.max_s, self._rng),
            on_delivered=lambda item: self._delivered(watermark, item),
            monotonic=self._clock.monotonic,
            on_sent=lambda item: self.metrics.events_sent.inc(item.events),
            reseal=reseal,
            on_receipt=self._keep_receipt,
        )
        self.metrics.snapshot = lambda: self._state(watermark, shipper)
        batch = self.config.batch
        outbox = Outbox(
            agent_id=self.config.agent_id,
            stream_id=acked.stream_id,
            key=key,
            observer=self._observer,
            spool=self.spool,
            reader=self.spool.reader(acked.next_sequence),
            batcher=Batcher(batch.max_events, batch.max_bytes, batch.max_wait_s),
            submit=shipper.submit,
            wall_ns=self._clock.wall_ns,
            monotonic=self._clock.monotonic,
            head=(
                acked.next_sequence - 1,
                acked.head or integrity.genesis_v2(self.config.agent_id, acked.stream_id),
            ),
            heartbeat_interval_s=self.config.integrity.heartbeat_interval_s,
            may_beat=lambda: shipper.pending() == 0,
        )
        initial = not had_state and recovery.next_sequence == 1
        pipeline = self._make_pipeline(positions, initial, watermark)
        self._pipeline, self._outbox = pipeline, outbox
        reading = threading.Event()  # set = stop reading; distinct from `stop` on crashes
        draining = threading.Event()  # set = submit what is spooled, then end
        ship_thread = self._thread("ship", shipper.run)
        feed_thread = self._thread("feed", lambda: outbox.run(draining))
        read_thread = self._thread("read", lambda: pipeline.run(reading))
        self._threads = [ship_thread, feed_thread, read_thread]
        self._read_loop_round()
        ship_thread.start()
        feed_thread.start()
        read_thread.start()
        if on_ready is not None:
            on_ready()
        while not stop.wait(tick_s):
            watermark.flush()  # an ack held back by the save interval
            if on_tick is not None:
                on_tick()
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
        watermark.flush()
        self.spool.close()
        if self._crash is not None:
            raise AgentError(f"internal error: {self._crash!r}") from self._crash

    def _take_stream(
        self, acked: Checkpoint, had_state: bool
    ) -> tuple[Checkpoint, Takeover | None]:
        """The checkpoint of this state's stream: its own, or a new stream's (module
        docstring), and the takeover still to finish when it was a format 1 state;
        AgentError when stream.json and checkpoint.json disagree."""
        state = self.config.state_dir
        spool_dir = state / SPOOL_DIR
        existing = stream.read(state)
        if acked.stream_id:
            if existing != acked.stream_id:
                found = "is missing" if existing is None else f"names stream {existing}"
                raise AgentError(
                    f"{state / stream.FILE_NAME} {found} but {self.store.path} names stream "
                    f"{acked.stream_id}; restore stream.json, or move the whole state "
                    "directory away to start a new stream"
                )
            drop_legacy(spool_dir, None)
            return acked, None
        drop_legacy(spool_dir, acked.next_sequence - 1 if had_state else 0)
        made = stream.load_or_create(state, now_unix_nano=self._clock.wall_ns())
        if made.created:
            log.info("new stream %s: sequences start at 1", made.stream_id)
        taken = Checkpoint(1, dict(acked.files), made.stream_id, b"")
        if not had_state:
            return taken, None
        # A state of stream format 1: its sequences counted another chain; keep the
        # file positions, continue under the new stream from sequence 1.
        ended = acked.next_sequence - 1
        return taken, Takeover(taken, ended, self._legacy_head(ended))

    def _legacy_head(self, sequence: int) -> bytes | None:
        """The format 1 chain head at `sequence` from chain.json; None when that file is
        gone, unreadable or holds another sequence (its head would not be the one there)."""
        try:
            chain = Chainer.load(self.config.state_dir, self.config.agent_id)
        except AgentError as exc:
            log.warning("format 1 chain state not usable, its head is not stated: %s", exc)
            return None
        if chain.path is None or not (chain.path.exists() and chain.head_sequence == sequence):
            return None
        return chain.head

    def _finish_takeover(self, takeover: Takeover, recovery: Recovery) -> Recovery:
        """Spool the continuation event (once), then write the format 2 checkpoint."""
        state = self.config.state_dir
        taken = takeover.checkpoint
        if recovery.next_sequence == 1:
            # This stream's spool is empty: nothing of it was spooled by an earlier try.
            event = notices.stream_continued(
                takeover.previous_sequence, takeover.previous_head, self._clock.wall_ns()
            )
            event.observer.CopyFrom(self._observer)  # as on every event the agent writes
            self.spool.append([Entry(event)])
            recovery = replace(recovery, next_sequence=2, unacked=recovery.unacked + 1)
        try:
            self.disk.write("the checkpoint", lambda: self.store.save(taken))
        except OSError as exc:
            # Not fatal: the next start takes the old state over again the same way (and
            # finds the continuation event already spooled).
            log.error("cannot write checkpoint %s: %s", self.store.path, exc)
        else:
            (state / LEGACY_CHAIN_FILE).unlink(missing_ok=True)
        log.info(
            "state of stream format 1 taken over: %d file positions kept, stream %s "
            "continues the format 1 history that ended at sequence %d (head %s)",
            len(taken.files),
            taken.stream_id,
            takeover.previous_sequence,
            "stated" if takeover.previous_head is not None else "not available",
        )
        return recovery

    def _keep_receipt(self, receipt: pb.Receipt) -> None:
        try:
            self.disk.write("a receipt", lambda: self.receipts.add(receipt))
        except OSError as exc:
            # Not fatal: receipts are extra anchors, the next ack brings a newer one.
            log.error("cannot keep receipt in %s: %s", self.receipts.directory, exc)

    def _delivered(self, watermark: Watermark, item: Outgoing) -> None:
        watermark.delivered(item)
        if item.events:
            self.metrics.acked(item.events)

    def _make_pipeline(
        self, positions: Mapping[str, FileOffset], initial: bool, watermark: Watermark
    ) -> Pipeline:
        sources = self.config.sources
        tailer = FileTailer(
            [_source_spec(s) for s in sources],
            positions,
            self._clock.monotonic,
            initial=initial,
            watch=self._watch,
        )
        self._tailer = tailer
        return Pipeline(
            observer=self._observer,
            tailer=tailer,
            parsers={s.name: _source_parser(s) for s in sources},
            spool=self.spool,
            on_forgotten=watermark.forget,
            wall_ns=self._clock.wall_ns,
            monotonic=self._clock.monotonic,
            on_round=self._read_loop_round,
            metrics=self.metrics,
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
