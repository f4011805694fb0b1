"""Size limits agent and collector share, so that whatever an agent builds fits what a
collector accepts: no record or batch can block the ones behind it.

The chain of bounds, each side checking its own end:
- a line is cut at the source's `max_line_bytes` (at most MAX_LINE_BYTES) and flagged;
- an event (the parsed record plus its original) larger than MAX_EVENT_BYTES is cut
  before it is numbered and chained, and flagged (agent.oversize);
- a batch closes before `batch.max_bytes` (at most MAX_BATCH_BYTES) — a single event
  larger than that travels alone, and it is at most MAX_EVENT_BYTES — and before
  `batch.max_events` (at most MAX_BATCH_EVENTS);
- so a Batch message is at most max(MAX_BATCH_BYTES, MAX_EVENT_BYTES) plus its envelope
  (agent id, batch id, seal: well under ENVELOPE_BYTES), below MAX_MESSAGE_BYTES, the
  gRPC message size a collector must accept (`server.max_message_bytes` may not be lower).

A collector may accept fewer events per batch than an agent sends
(`server.max_events_per_batch`): it then refuses the batch with STATUS_REJECTED and a
detail starting with BATCH_TOO_LARGE, and ends the stream; the agent splits the batch
in halves, seals each and sends them again.
"""

from __future__ import annotations

MIB = 1024 * 1024

MAX_MESSAGE_BYTES = 16 * MIB
"""The gRPC message size every collector accepts (its receive limit may not be lower)."""

ENVELOPE_BYTES = 64 * 1024
"""Bound on what a Batch adds around its events (ids, seal)."""

MAX_EVENT_BYTES = 4 * MIB
"""Largest serialized AuditEvent an agent ships; larger ones are cut and flagged."""

MAX_LINE_BYTES = 4 * MIB
"""Upper bound of a source's `max_line_bytes`."""

MAX_BATCH_BYTES = 8 * MIB
"""Upper bound of the agent's `batch.max_bytes`."""

MAX_BATCH_EVENTS = 10_000
"""Upper bound of the agent's `batch.max_events`; the collector's default cap."""

BATCH_TOO_LARGE = "batch too large"
"""Prefix of an Ack detail refusing a batch for its size: the agent splits it."""

assert max(MAX_BATCH_BYTES, MAX_EVENT_BYTES) + ENVELOPE_BYTES <= MAX_MESSAGE_BYTES
