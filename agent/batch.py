"""Size/age batching of spooled events. Pure: the caller supplies the time.

A batch closes when it holds `max_events`, when adding the next event would pass
`max_bytes` (what the events add to the Batch message: each one's bytes in
`event_bytes` and its hash in the seal), or when its first event is `max_wait_s` old.
A single event larger than `max_bytes` travels alone rather than being dropped.
"""

from __future__ import annotations

from agent.spool import SpoolRecord
from proto import integrity

# A hash in Seal.event_hashes: tag, length byte, 32 bytes; the seal itself sits inside
# the Batch, so its length prefix grows too (counted in proto.limits.ENVELOPE_BYTES).
_HASH_ENTRY = 2 + integrity.HASH_LEN


def encoded_size(event_bytes: bytes) -> int:
    """Bytes one event adds to a format 2 Batch: its field tag, length prefix and bytes,
    plus its hash in the seal."""
    size = len(event_bytes)
    # Runs twice per event: the usual one- and two-byte length prefixes without a call.
    if size < 0x80:
        return 2 + size + _HASH_ENTRY
    if size < 0x4000:
        return 3 + size + _HASH_ENTRY
    return 1 + _varint_len(size) + size + _HASH_ENTRY


def _varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


class Batcher:
    """Accumulates records; the caller asks `fits`/`full`/`due` and then `take`s the batch."""

    def __init__(self, max_events: int, max_bytes: int, max_wait_s: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self._records: list[SpoolRecord] = []
        self._bytes = 0
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._records)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def fits(self, record: SpoolRecord) -> bool:
        """True if `record` can join the open batch (always true for an empty batch)."""
        if not self._records:
            return True
        return (
            len(self._records) < self.max_events
            and self._bytes + encoded_size(record.event) <= self.max_bytes
        )

    def add(self, record: SpoolRecord, now: float) -> None:
        if not self._records:
            self._opened_at = now
        self._records.append(record)
        self._bytes += encoded_size(record.event)

    def full(self) -> bool:
        return len(self._records) >= self.max_events or self._bytes >= self.max_bytes

    def deadline(self) -> float | None:
        """When the open batch becomes due; None when empty."""
        return None if self._opened_at is None else self._opened_at + self.max_wait_s

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> list[SpoolRecord]:
        """Return the open batch's records and start a new, empty batch."""
        records, self._records = self._records, []
        self._bytes = 0
        self._opened_at = None
        return records
