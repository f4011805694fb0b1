"""Ships batches over the mTLS gRPC `Collector.Ship` stream and collects the acks.

Knows nothing of parsing or files: it moves `Outgoing` batches (built from the spool
by agent.outbox) and reports each one acked STATUS_OK through `on_delivered`, in order.

Flow control: at most `max_in_flight` batches are sent and unacked; `submit` blocks
while `max_in_flight` more wait to be sent, which is the back-pressure that stops
the tail from reading further. Acks arrive in order, so the oldest unacked batch is
always the one being acknowledged.

Failure handling — nothing is ever dropped:
- stream error / cannot connect / STATUS_RETRY: close the stream, back off
  (exponential, jittered), reconnect and resend every unacked batch unchanged (the
  same sequences, so the collector deduplicates by document _id);
- STATUS_REJECTED: log an ERROR with the collector's detail and do the same, slowly;
- except a refusal for size (detail starting with proto.limits.BATCH_TOO_LARGE, or
  grpc's RESOURCE_EXHAUSTED "larger than max"): the batch is split in halves, each
  sealed again, and sent in its place — never resent unchanged. One event never needs
  splitting: the agent cuts events to proto.limits.MAX_EVENT_BYTES before spooling them.
Connection problems are logged in one line saying why, rate limited.

Endpoints: the configured collectors are used in order; after a failure the next one
is tried at once, and only when every endpoint failed in a row does the backoff
delay grow. The shipper stays with an endpoint for as long as it delivers. It never
gives up: retries go on forever, the delay capped at `retry.max_s`.

Connection state per endpoint (for metrics): "idle" until used, "connecting" while a
stream is being set up, "connected" once the channel is ready or an ack arrived,
"failing" after its last attempt failed.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from agent.checkpoint import FileOffset
from agent.config import CollectorConfig, endpoint_host
from agent.errors import PermanentShipError, RetryableShipError, ShipError
from agent.wire import varint
from proto import integrity, limits
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.5  # how often blocked waits re-check for abort / stream end


_EVENT_BYTES_TAG = b"\x5a"  # Batch.event_bytes: field 11, length-delimited


@dataclass(eq=False)
class Outgoing:
    """A sealed batch to deliver, held as the spooled event bytes, plus the file
    positions that become acked with it.

    `positions` holds, per file key, the resume position after the batch's last event
    of that file; once acked they are merged into the checkpoint (acks come in order).
    `times` holds each event's effective time: with the seal's event hashes, what
    resealing a half needs without decoding an event.
    A heartbeat has no events.
    """

    agent_id: str
    seal: pb.Seal
    event_bytes: Sequence[bytes] = ()
    times: Sequence[int] = ()
    positions: Mapping[str, FileOffset] = field(default_factory=dict)
    attempts: int = field(default=0)
    # A leading piece of a batch that was split (see `split`): its ack advances
    # nothing, since file positions are known only at the end of the whole batch; the
    # last piece carries them. Acks arrive in order, so that is safe.
    partial: bool = field(default=False)
    batch_id: int = field(default=0)  # set per stream when sent

    @property
    def events(self) -> int:
        return len(self.event_bytes)

    @property
    def first_sequence(self) -> int:
        return self.seal.first_sequence if self.event_bytes else 0

    @property
    def last_sequence(self) -> int:
        return self.seal.last_sequence if self.event_bytes else 0

    @property
    def head(self) -> bytes:
        """The stream head after the batch's last event (the seal's)."""
        return self.seal.chain_head

    @property
    def sequences(self) -> str:
        return f"{self.first_sequence}-{self.last_sequence}" if self.event_bytes else "-"

    def wire(self) -> bytes:
        """The serialized `Batch(format_version=2, event_bytes=..., seal=...)`: the envelope
        serialized, then the stored event bytes appended as field 11 (the fields are in
        number order, so this is what `Batch.SerializeToString` gives), never re-encoded."""
        envelope = pb.Batch(
            batch_id=self.batch_id,
            agent_id=self.agent_id,
            seal=self.seal,
            format_version=integrity.FORMAT_V2,
        ).SerializeToString()
        parts = [envelope]
        for data in self.event_bytes:
            parts += (_EVENT_BYTES_TAG, varint(len(data)), data)
        return b"".join(parts)

    def size(self) -> int:
        """Bytes of `wire()`, without building it."""
        envelope = pb.Batch(
            batch_id=self.batch_id,
            agent_id=self.agent_id,
            seal=self.seal,
            format_version=integrity.FORMAT_V2,
        ).ByteSize()
        return envelope + sum(1 + len(varint(len(d))) + len(d) for d in self.event_bytes)

    def to_batch(self) -> pb.Batch:
        """The batch as a message (tests and logs; shipping uses `wire`)."""
        return pb.Batch.FromString(self.wire())


Reseal = Callable[[int, bytes, Sequence[bytes], Sequence[int]], pb.Seal]
"""(first sequence, head before it, event hashes, event times) → a new seal."""


def split(item: Outgoing, reseal: Reseal) -> list[Outgoing]:
    """`item` as two batches of half its events each, sealed again (a seal covers
    exactly its batch's events); the first is partial, the second keeps the positions."""
    middle = len(item.event_bytes) // 2
    hashes = list(item.seal.event_hashes)
    first = item.seal.first_sequence
    prev = item.seal.prev_chain_head
    pieces = []
    for lo, hi, partial in ((0, middle, True), (middle, len(hashes), item.partial)):
        times = list(item.times[lo:hi])
        piece = Outgoing(
            agent_id=item.agent_id,
            seal=reseal(first + lo, prev, hashes[lo:hi], times),
            event_bytes=list(item.event_bytes[lo:hi]),
            times=times,
            positions={} if partial else item.positions,
            partial=partial,
        )
        prev = piece.seal.chain_head
        pieces.append(piece)
    return pieces


def _identity(data: bytes) -> bytes:
    return data


def ship_method(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable[bytes, pb.Ack]:
    """`Collector.Ship` taking already serialized batches (`Outgoing.wire`)."""
    return channel.stream_stream(
        "/crm_audit.v1.Collector/Ship",
        request_serializer=_identity,
        response_deserializer=pb.Ack.FromString,
    )


# grpc's own refusal of an oversized message: "Received message larger than max (A vs. B)"
_LARGER_THAN_MAX = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


def open_channel(config: CollectorConfig, endpoint: str) -> grpc.Channel:
    """A secure channel to `endpoint` with our client certificate; TLS files are re-read
    on every call so that renewed certificates are picked up on the next reconnect."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config.tls.ca.read_bytes(),
        private_key=config.tls.key.read_bytes(),
        certificate_chain=config.tls.cert.read_bytes(),
    )
    options: list[tuple[str, str | int]] = []
    if config.tls_name(endpoint) != endpoint_host(endpoint):
        options.append(("grpc.ssl_target_name_override", config.tls_name(endpoint)))
    # Our own backoff decides when to reconnect; keep grpc's from adding minutes to it.
    max_backoff_ms = int(config.retry.max_s * 1000)
    options += [
        ("grpc.initial_reconnect_backoff_ms", min(1000, max_backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
    ]
    return grpc.secure_channel(endpoint, credentials, options=options)


class Backoff:
    """Exponential backoff with "equal jitter": a delay in [d/2, d], d doubling up to max."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (1 << min(self.failures, 32)))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class _RateLimitedLog:
    """Log a repeated warning at most once per interval, or at once when it changes."""

    def __init__(self, interval_s: float, monotonic: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._last_message = ""
        self._last_at = float("-inf")
        self._suppressed = 0

    def warning(self, message: str) -> None:
        now = self._monotonic()
        if message == self._last_message and now - self._last_at < self._interval_s:
            self._suppressed += 1
            return
        suffix = f" (repeated {self._suppressed} more times)" if self._suppressed else ""
        log.warning("%s%s", message, suffix)
        self._last_message, self._last_at, self._suppressed = message, now, 0


class _Resend(RetryableShipError):
    """The stream ended on purpose (a batch was split): reconnect at once, no backoff."""


class _Stream:
    """Per-stream state shared by the request generator and the ack loop."""

    def __init__(self) -> None:
        self.closed = False
        self._last_id = 0

    def next_id(self) -> int:
        self._last_id += 1
        return self._last_id


class Shipper:
    """Delivers submitted batches in order; call `run` in its own thread."""

    def __init__(
        self,
        *,
        agent_id: str,
        endpoints: Sequence[str],
        channel_factory: Callable[[str], grpc.Channel],
        max_in_flight: int,
        backoff: Backoff,
        on_delivered: Callable[[Outgoing], None],
        monotonic: Callable[[], float],
        log_interval_s: float = 30.0,
        on_sent: Callable[[Outgoing], None] | None = None,
        reseal: Reseal,
        on_receipt: Callable[[pb.Receipt], None] | None = None,
    ) -> None:
        self._on_receipt = on_receipt  # keeps the collector's signed receipts
        self._on_sent = on_sent
        self._reseal = reseal  # seals the halves of a batch refused as too large
        self.splits = 0
        self._states: dict[str, str] = dict.fromkeys(endpoints, "idle")
        self.agent_id = agent_id
        self._endpoints = tuple(endpoints)
        self._endpoint_index = 0
        self._failed_in_a_row = 0
        self._channel_factory = channel_factory
        self._max_in_flight = max_in_flight
        self._backoff = backoff
        self._on_delivered = on_delivered
        self._problems = _RateLimitedLog(log_interval_s, monotonic)
        self._cond = threading.Condition()
        self._waiting: deque[Outgoing] = deque()  # submitted, not yet sent
        self._unacked: deque[Outgoing] = deque()  # sent on the current stream, not yet acked
        self._input_closed = False
        self._aborted = threading.Event()
        self._call: grpc.CallIterator[pb.Ack] | None = None
        self._failing = False
        self.delivered_batches = 0

    @property
    def endpoint(self) -> str:
        """The collector currently used."""
        return self._endpoints[self._endpoint_index]

    def connection_states(self) -> dict[str, str]:
        """Endpoint → idle | connecting | connected | failing."""
        return dict(self._states)

    def _set_state(self, endpoint: str, state: str) -> None:
        self._states[endpoint] = state

    # -- producer side -------------------------------------------------------------------

    def submit(self, item: Outgoing) -> bool:
        """Queue a batch; blocks while the queue is full. False if the shipper was aborted."""
        with self._cond:
            while len(self._waiting) >= self._max_in_flight and not self._aborted.is_set():
                self._cond.wait(_WAIT_SLICE_S)
            if self._aborted.is_set():
                return False
            self._waiting.append(item)
            self._cond.notify_all()
            return True

    def close_input(self) -> None:
        """No more batches will be submitted: `run` returns once all are delivered."""
        with self._cond:
            self._input_closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Stop now, delivered or not (undelivered batches stay behind the checkpoint)."""
        self._aborted.set()
        with self._cond:
            call = self._call
            self._cond.notify_all()
        if call is not None:
            call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs

    def pending(self) -> int:
        """Batches submitted but not yet acknowledged."""
        with self._cond:
            return len(self._waiting) + len(self._unacked)

    def _finished(self) -> bool:
        with self._cond:
            return self._input_closed and not self._waiting and not self._unacked

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Connect, stream, reconnect after failures; return when finished or aborted."""
        while not self._aborted.is_set() and not self._finished():
            try:
                self._stream_once()
            except _Resend as exc:
                log.warning("%s", exc)
                continue
            except RetryableShipError as exc:
                self._set_state(self.endpoint, "failing")
                self._failing = True
                if not self._aborted.is_set():
                    self._problems.warning(str(exc))
            except PermanentShipError as exc:
                self._set_state(self.endpoint, "failing")
                self._failing = True
                log.error("%s", exc)
            if self._aborted.is_set() or self._finished():
                break
            self._aborted.wait(self._after_failure())

    def _after_failure(self) -> float:
        """Fail over to the next endpoint; the delay before trying it."""
        self._failed_in_a_row += 1
        self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
        if len(self._endpoints) > 1:
            log.debug("failing over to collector %s", self.endpoint)
        if self._failed_in_a_row % len(self._endpoints):
            return 0.0  # another endpoint has not been tried in this round yet
        return self._backoff.next_delay()

    def _stream_once(self) -> None:
        endpoint = self.endpoint
        self._set_state(endpoint, "connecting")
        try:
            channel = self._channel_factory(endpoint)
        except OSError as exc:  # e.g. a TLS file removed while certificates are renewed
            raise RetryableShipError(f"cannot ship to {self.endpoint}: {exc}") from None

        # The state turns "connected" with the first ack of this stream and "failing" when
        # it breaks. No `channel.subscribe`: grpc's polling thread behind it races with
        # `channel.close()` and dies with "Cannot monitor channel state: Channel closed!".
        stream = _Stream()
        with self._cond:
            # Everything unacked goes out again, first and in order, with the same events.
            resend = list(self._unacked)
        try:
            call = ship_method(channel)(self._requests(stream, resend), wait_for_ready=False)
            with self._cond:
                self._call = call
            if self._aborted.is_set():
                call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
            try:
                for ack in call:
                    self._handle_ack(ack)
            except grpc.RpcError as exc:
                self._split_oversized(exc)
                raise RetryableShipError(self._describe(exc)) from None
            if not self._finished():
                raise RetryableShipError(
                    f"collector {self.endpoint} ended the stream with "
                    f"{len(self._unacked)} batches unacknowledged"
                )
        finally:
            with self._cond:
                stream.closed = True
                self._call = None
                self._cond.notify_all()
            channel.close()

    def _requests(self, stream: _Stream, resend: list[Outgoing]) -> Iterator[bytes]:
        """Runs in a grpc thread: resend the unacked batches, then new ones as capacity allows."""
        for item in resend:
            with self._cond:
                if stream.closed:
                    return
                item.batch_id = stream.next_id()
                item.attempts += 1
            self._sent(item)
            yield item.wire()
        while True:
            with self._cond:
                while not stream.closed and not self._aborted.is_set():
                    if self._waiting and len(self._unacked) < self._max_in_flight:
                        break
                    if self._input_closed and not self._waiting:
                        return  # half-close: the collector acks what it has and ends
                    self._cond.wait(_WAIT_SLICE_S)
                else:
                    return
                # Moved under the lock with the closed check, so an item is either sent on
                # this stream or still queued for the next one — never lost in between.
                item = self._waiting.popleft()
                self._unacked.append(item)
                item.batch_id = stream.next_id()
                item.attempts += 1
                self._cond.notify_all()
            self._sent(item)
            yield item.wire()

    def _sent(self, item: Outgoing) -> None:
        if self._on_sent is not None:
            self._on_sent(item)

    def _handle_ack(self, ack: pb.Ack) -> None:
        with self._cond:
            if not self._unacked or self._unacked[0].batch_id != ack.batch_id:
                expected = self._unacked[0].batch_id if self._unacked else None
                raise RetryableShipError(
                    f"collector {self.endpoint} acked batch {ack.batch_id}, expected {expected}"
                )
            head = self._unacked[0]
            detail = " ".join(ack.detail.split()) or "no detail"
            if ack.status == pb.Ack.STATUS_RETRY:
                raise RetryableShipError(
                    f"collector {self.endpoint} asked to retry batch of sequences "
                    f"{head.sequences}: {detail}"
                )
            if (
                ack.status == pb.Ack.STATUS_REJECTED
                and ack.detail.startswith(limits.BATCH_TOO_LARGE)
                and head.events > 1
            ):
                self._unacked.popleft()
                self._unacked.extendleft(reversed(split(head, self._reseal)))
                self.splits += 1
                # The collector ends the stream after such a refusal: the halves go out
                # first on the next one, then everything that followed, in order.
                raise _Resend(
                    f"collector {self.endpoint} refused batch of sequences {head.sequences} "
                    f"as too large; split in two and sent again: {detail}"
                )
            if ack.status == pb.Ack.STATUS_REJECTED:
                raise PermanentShipError(
                    f"collector {self.endpoint} REJECTED batch of sequences {head.sequences} "
                    f"(attempt {head.attempts}); keeping it and retrying: {detail}"
                )
            if ack.status != pb.Ack.STATUS_OK:
                raise RetryableShipError(
                    f"collector {self.endpoint} sent ack status {ack.status} for batch "
                    f"{ack.batch_id}"
                )
            self._unacked.popleft()
            self._cond.notify_all()
        self._set_state(self.endpoint, "connected")
        if self._failing:
            log.info("delivering to %s again", self.endpoint)
            self._failing = False
        self._backoff.reset()
        self._failed_in_a_row = 0
        self.delivered_batches += 1
        log.debug(
            "batch %s delivered: %d indexed, %d duplicates",
            head.sequences,
            ack.indexed,
            ack.duplicates,
        )
        if self._on_receipt is not None and ack.HasField("receipt"):
            self._on_receipt(ack.receipt)
        self._on_delivered(head)

    def _split_oversized(self, exc: grpc.RpcError) -> None:
        """grpc refused a message over the collector's size limit (a collector configured
        below proto.limits, or an older agent's batch): split every unacked batch over
        that limit, so the resend fits instead of failing the same way forever."""
        if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return
        match = _LARGER_THAN_MAX.search(exc.details() or "")
        if match is None:
            return  # e.g. too many streams: nothing to split
        limit = int(match.group(2))
        with self._cond:
            pieces: list[Outgoing] = []
            for item in self._unacked:
                size = item.size()
                if size > limit and item.events > 1:
                    pieces += split(item, self._reseal)
                    self.splits += 1
                    log.warning(
                        "batch of sequences %s (%d bytes) is over collector %s's message "
                        "limit of %d bytes; split in two",
                        item.sequences,
                        size,
                        self.endpoint,
                        limit,
                    )
                else:
                    pieces.append(item)
            self._unacked = deque(pieces)

    def _describe(self, exc: grpc.RpcError) -> str:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "ERROR"
        return f"cannot ship to {self.endpoint}: {name}: {' '.join((details or '').split())}"


__all__ = ["Backoff", "Outgoing", "Reseal", "ShipError", "Shipper", "open_channel", "split"]
