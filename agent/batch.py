"""Size/age batching of events. Pure: the caller supplies the time.

A batch closes when it holds `max_events`, when adding the next event would pass
`max_bytes` of serialized events, or when its first event is `max_wait_s` old. A
single event larger than `max_bytes` travels alone rather than being dropped.
"""

from __future__ import annotations

from proto.v1 import audit_pb2 as pb


def encoded_size(event: pb.AuditEvent) -> int:
    """Bytes the event adds to a Batch: field tag + length prefix + message."""
    size = event.ByteSize()
    return 1 + _varint_len(size) + size


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


class Batcher:
    """Accumulates events; the caller asks `fits`/`full`/`due` and then `take`s the batch."""

    def __init__(self, max_events: int, max_bytes: int, max_wait_s: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self._events: list[pb.AuditEvent] = []
        self._bytes = 0
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._events)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def fits(self, event: pb.AuditEvent) -> bool:
        """True if `event` can join the open batch (always true for an empty batch)."""
        if not self._events:
            return True
        return (
            len(self._events) < self.max_events
            and self._bytes + encoded_size(event) <= self.max_bytes
        )

    def add(self, event: pb.AuditEvent, now: float) -> None:
        if not self._events:
            self._opened_at = now
        self._events.append(event)
        self._bytes += encoded_size(event)

    def full(self) -> bool:
        return len(self._events) >= self.max_events or self._bytes >= self.max_bytes

    def deadline(self) -> float | None:
        """When the open batch becomes due; None when empty."""
        return None if self._opened_at is None else self._opened_at + self.max_wait_s

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> list[pb.AuditEvent]:
        """Return the open batch's events and start a new, empty batch."""
        events, self._events = self._events, []
        self._bytes = 0
        self._opened_at = None
        return events
