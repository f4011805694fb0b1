"""Per-batch event bytes: one compressed document per batch and events index.

A format 2 event document does not carry its signed bytes: the collector stores the
bytes of a batch's events that went to events index ``{prefix}-events-<class>-<period>``
together, zstd-compressed, in one document of ``{prefix}-batches-<class>-<period>``
(same class and period, so the same ISM policy, retention job and holds apply), written
in the same bulk request as the events. Over a batch of a few hundred events the bytes
compress to ~65 bytes per event, where inline base64 cost the node a third of its CPU
per document and 60 % of the disk (docs/design/stream-format-v2.md).

A batch document (`BATCHES_MAPPING`)::

    {"@timestamp": received, "agent": {"id", "stream"},
     "batch": {"first", "last", "count", "sequences": [...], "encoding": ENCODING,
               "bytes": base64(zstd(u32be len || event bytes, ...))}}

with ``_id`` `batch_doc_id` (agent, stream, range and a digest of the event hashes:
a re-cut or differing re-delivery is a document of its own, an identical one a 409).
`crm-audit verify` gives each event document without ``integrity.canonical`` the bytes
listed at its sequence in the batch document of its index; none, or bytes that do not
hash to what the seal signed, make the event a finding, never VALID.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import zstandard

from proto import limits

ENCODING = "zstd-u32be"  # zstd frame of (4-byte big-endian length, bytes) per event
# Level 1: over a batch of the bench corpus, levels 1 and 3 both gave ~65 bytes per event
# (docs/design/stream-format-v2.md); 1 costs the collector less CPU.
_LEVEL = 1
_LEN = 4
# Decompressed size bound: what one gRPC message can carry (proto.limits), framed.
MAX_DECOMPRESSED = limits.MAX_MESSAGE_BYTES + limits.MAX_BATCH_EVENTS * _LEN

# A ZstdCompressor must not be used by two threads at once (python-zstandard: not thread
# safe; shared, concurrent batches corrupted each other's frames or crashed the
# process): one per thread, kept for the thread's next batch.
_local = threading.local()


class BatchBytesError(ValueError):
    """A batch document's bytes do not decode (edited, truncated, unknown encoding)."""


def encode(datas: Iterable[bytes]) -> str:
    """The events' bytes as one base64 text of a zstd frame (content size recorded)."""
    framed = b"".join(len(d).to_bytes(_LEN, "big") + d for d in datas)
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=_LEVEL)
    return base64.b64encode(compressor.compress(framed)).decode("ascii")


def decode(text: str, count: int) -> list[bytes]:
    """`count` events' bytes from `encode`'s text; BatchBytesError otherwise."""
    try:
        frame = base64.b64decode(text, validate=True)
        framed = zstandard.ZstdDecompressor().decompress(frame, max_output_size=MAX_DECOMPRESSED)
    except (binascii.Error, ValueError, TypeError, zstandard.ZstdError) as exc:
        raise BatchBytesError(f"batch bytes do not decode: {exc}") from None
    out: list[bytes] = []
    at = 0
    while at < len(framed):
        if at + _LEN > len(framed):
            raise BatchBytesError("batch bytes end inside a length")
        size = int.from_bytes(framed[at : at + _LEN], "big")
        at += _LEN
        if at + size > len(framed):
            raise BatchBytesError("batch bytes end inside an event")
        out.append(framed[at : at + size])
        at += size
    if len(out) != count:
        raise BatchBytesError(f"batch bytes hold {len(out)} events, the document lists {count}")
    return out


def batches_index(prefix: str, events_index: str) -> str:
    """``{prefix}-batches-<class>-<period>`` beside ``{prefix}-events-<class>-<period>``."""
    head = f"{prefix}-events-"
    if not events_index.startswith(head):
        raise ValueError(f"{events_index!r} is not an events index of prefix {prefix!r}")
    return f"{prefix}-batches-{events_index[len(head) :]}"


def events_index_of(prefix: str, batches_index_name: str) -> str:
    """The events index whose batch bytes ``batches_index_name`` holds (`batches_index`
    reversed)."""
    head = f"{prefix}-batches-"
    if not batches_index_name.startswith(head):
        raise ValueError(f"{batches_index_name!r} is not a batches index of prefix {prefix!r}")
    return f"{prefix}-events-{batches_index_name[len(head) :]}"


def batches_index_pattern(prefix: str, retention_class: str | None = None) -> str:
    """``{prefix}-batches-*``, or one class's ``{prefix}-batches-{class}-*``."""
    if retention_class is None:
        return f"{prefix}-batches-*"
    return f"{prefix}-batches-{retention_class}-*"


def batch_doc_id(
    agent_id: str, stream_id: str, sequences: Sequence[int], hashes: Iterable[bytes]
) -> str:
    """``agent:stream:first-last:digest``, the digest over the events' hashes."""
    digest = hashlib.sha256(b"".join(hashes)).hexdigest()[:16]
    return f"{agent_id}:{stream_id}:{min(sequences)}-{max(sequences)}:{digest}"


def batch_document(
    *,
    agent_id: str,
    stream_id: str,
    sequences: Sequence[int],
    datas: Sequence[bytes],
    timestamp: str,
) -> dict[str, Any]:
    """The batch document of these events (in this order) of one events index."""
    return {
        "@timestamp": timestamp,
        "agent": {"id": agent_id, "stream": stream_id},
        "batch": {
            "first": min(sequences),
            "last": max(sequences),
            "count": len(sequences),
            "sequences": list(sequences),
            "encoding": ENCODING,
            "bytes": encode(datas),
        },
    }


_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_STORED: dict[str, Any] = {"index": False, "doc_values": False}

BATCHES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date_nanos"},
        "agent": {"properties": {"id": _KW, "stream": _KW}},
        "batch": {
            "properties": {
                "first": {"type": "long"},
                "last": {"type": "long"},
                "count": {"type": "integer"},
                # Read back from _source only: neither searched nor aggregated.
                "sequences": {"type": "long", **_STORED},
                "encoding": _KW,
                "bytes": {"type": "binary"},
            }
        },
    },
}
