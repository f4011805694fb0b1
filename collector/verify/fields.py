"""Searchable fields of a stored event against the document re-derived from its signed
bytes (both stream formats)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collector.documents import parse_iso_nanos, to_document
from collector.verify.reading import StoredEvent


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "attributes":
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def field_differences(event: StoredEvent, agent: str) -> list[str]:
    """Searchable fields that differ from the document re-derived from the signed bytes.

    ``event.ingested`` (when the collector received it) is not in the signed bytes:
    it is taken as stored, and only where the event has neither time of its own does
    it decide ``@timestamp`` (then it is parsed and re-derived like every field)."""
    assert event.decoded is not None
    decoded = event.decoded
    stored = event.source
    ingested = stored.get("event", {}).get("ingested")
    timeless = decoded.time_unix_nano <= 0 and decoded.observed_unix_nano <= 0
    received = 0
    if timeless:
        try:
            received = parse_iso_nanos(ingested) if isinstance(ingested, str) else 0
        except ValueError:
            received = 0
    derived = to_document(decoded, agent_id=agent, received_unix_nano=received).source
    if not timeless and isinstance(ingested, str):
        derived["event"]["ingested"] = ingested
    # What the collector stores beside the derived fields: the signed bytes and the head
    # (checked against the seal, not here); format 2 also the stream the signed bytes
    # name and their hash (an unsigned convenience, still not allowed to lie).
    extra: dict[str, Any] = {}
    stored_integrity = stored.get("integrity", {})
    for key in ("canonical", "chain_hash"):
        if key in stored_integrity:
            extra[key] = stored_integrity[key]
    if decoded.stream_id:
        derived.setdefault("agent", {})["stream"] = decoded.stream_id
        if event.event_hash is not None:
            extra["event_hash"] = event.event_hash.hex()
    if extra:
        derived["integrity"] = {**derived.get("integrity", {}), **extra}
    if stored == derived:  # the common case, compared in C
        return []
    left = _flatten(stored)
    right = _flatten(derived)
    return sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))
