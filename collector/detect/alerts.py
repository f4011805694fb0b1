"""Alerts: what a rule found, its deterministic id and its document in ``{prefix}-alerts``.

The alerts index is shared with `collector.gate` (chain gaps, forks, bad seals),
whose documents carry ``@timestamp``, ``agent.id`` and ``alert.{kind, first_sequence,
last_sequence, reason, batch_id, peer}``. Detection documents use the same shape and add
(`ALERT_FIELDS`, added to the index mapping by `ensure_indices`):

    alert.kind            "detection" (a rule fired) or "response" (an action taken)
    alert.rule.{id, kind, description}
    alert.severity        low | medium | high | critical
    alert.key             the value(s) of the rule's key fields, "|"-joined
    alert.key_fields      the key field names
    alert.window.{start, end}   first and triggering event times (end = trigger)
    alert.event_ids       ``_id`` of every event that triggered it (agent:sequence)
    alert.event_count     how many events (event_ids is capped at 100)
    alert.status          "open" when raised
    alert.origin          "live" (the collector) or "backfill" (`crm-audit rules backfill`)
    alert.lag_s           the largest delay, in seconds, between an event's own time and
                          its receipt by the collector (``event.ingested``) among its events
    alert.late            true when that delay exceeds ``detection.max_delay_s``: the
                          alert came from late data (a host catching up a backlog)
    alert.evidence        rule-specific details (stored, not indexed)
    alert.response.*      for kind "response": action, target, outcome, attempts, ...

``_id`` = ``{rule id}:{sha256(key)[:16]}:{trigger event id}``: evaluating the same data
again (another collector, a restart, an overlapping window) gives the same id, and the
``op_type=create`` write turns the repeat into a 409 instead of a second alert.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.detect.fields import lookup, normalize, path_of
from collector.documents import Document, iso_nanos, parse_iso_nanos

MAX_EVENT_IDS = 100

_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE: dict[str, Any] = {"type": "date_nanos"}


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    return {"properties": props}


#: Fields detection adds to the alerts mapping of `collector.gate`.
ALERT_FIELDS: dict[str, Any] = {
    "properties": {
        "alert": _obj(
            rule=_obj(id=_KW, kind=_KW, description={"type": "text"}),
            severity=_KW,
            key=_KW,
            key_fields=_KW,
            window=_obj(start=_DATE, end=_DATE),
            event_ids=_KW,
            event_count={"type": "long"},
            status=_KW,
            origin=_KW,
            lag_s={"type": "double"},
            late={"type": "boolean"},
            evidence={"type": "object", "enabled": False},
            source_alert=_KW,
            response=_obj(
                alert_id=_KW,
                action=_KW,
                target=_KW,
                outcome=_KW,
                attempts={"type": "long"},
                status_code={"type": "long"},
                detail={"type": "text"},
            ),
        )
    }
}

LEASES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "lease": _obj(
            name=_KW,
            holder=_KW,
            expires=_DATE,
            evaluated_to=_DATE,
        ),
    },
}


def leases_index(prefix: str) -> str:
    return f"{prefix}-leases"


@dataclass(frozen=True)
class Event:
    """An indexed event as the rules see it: ``_id``, time in ns and the document."""

    id: str
    ts: int
    doc: Mapping[str, Any]

    @classmethod
    def from_source(cls, doc_id: str, source: Mapping[str, Any]) -> Event:
        return cls(doc_id, parse_iso_nanos(str(source["@timestamp"])), source)

    def get(self, dotted: str) -> Any:
        node: Any = self.doc
        for part in path_of(dotted):
            # dict first: documents are dicts, matched exactly before the (slow) ABC check
            if not isinstance(node, (dict, Mapping)) or part not in node:
                return None
            node = node[part]
        return node

    def text(self, dotted: str) -> str | None:
        value = self.get(dotted)
        if isinstance(value, list):
            value = value[0] if value else None
        return None if value is None else str(value)

    @property
    def ingested(self) -> int | None:
        """When the collector received the event (ns), when the document says."""
        value = self.get("event.ingested")
        return parse_iso_nanos(str(value)) if value else None

    @property
    def lag(self) -> int:
        """How long after its own time the event reached the collector (ns, >= 0)."""
        ingested = self.ingested
        return max(0, ingested - self.ts) if ingested is not None else 0


def key_of(event: Event, fields: Sequence[str]) -> str | None:
    """The rule key of `event` ("|"-joined), None when a key field is missing.

    A field the mapping normalizes (lowercase) gives its key in lower case, as the
    cluster's aggregations do, so ``Alice`` and ``alice`` are one key.
    """
    parts = []
    for name in fields:
        value = event.text(name)
        if value is None or value == "":
            return None
        info = lookup(name)
        parts.append(str(normalize(info, value)) if info is not None else value)
    return "|".join(parts)


@dataclass(frozen=True)
class Alert:
    """One incident found by a rule."""

    rule_id: str
    rule_kind: str
    description: str
    severity: str
    key: str
    key_fields: tuple[str, ...]
    start: int
    trigger: int
    trigger_id: str
    event_ids: tuple[str, ...]
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    agent_id: str = ""
    lag: int = 0  # ns: the largest receipt delay among its events (Event.lag)
    late: bool = False
    origin: str = "live"

    @property
    def alert_id(self) -> str:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        return f"{self.rule_id}:{digest}:{self.trigger_id}"

    def document(self, now_unix_nano: int) -> Document:
        body: Document = {
            "@timestamp": iso_nanos(now_unix_nano),
            "alert": {
                "kind": "detection",
                "rule": {"id": self.rule_id, "kind": self.rule_kind},
                "severity": self.severity,
                "key": self.key,
                "key_fields": list(self.key_fields),
                "window": {"start": iso_nanos(self.start), "end": iso_nanos(self.trigger)},
                "event_ids": list(self.event_ids[:MAX_EVENT_IDS]),
                "event_count": len(self.event_ids),
                "status": "open",
                "origin": self.origin,
                "lag_s": round(self.lag / 1e9, 3),
                "late": self.late,
                "reason": self.reason,
                "evidence": copy.deepcopy(self.evidence),
            },
        }
        if self.description:
            body["alert"]["rule"]["description"] = self.description
        if self.agent_id:
            body["agent"] = {"id": self.agent_id}
        return body

    def to_json(self, now_unix_nano: int) -> dict[str, Any]:
        """What notifiers and response hooks receive."""
        return {"id": self.alert_id, **self.document(now_unix_nano)}


def response_document(
    alert_id: str,
    rule_id: str,
    *,
    action: str,
    target: str,
    outcome: str,
    attempts: int,
    detail: str,
    status_code: int | None,
    now_unix_nano: int,
) -> tuple[str, Document]:
    """The audit record of one action taken for an alert, and its ``_id``."""
    response: dict[str, Any] = {
        "alert_id": alert_id,
        "action": action,
        "target": target,
        "outcome": outcome,
        "attempts": attempts,
        "detail": detail[:2000],
    }
    if status_code is not None:
        response["status_code"] = status_code
    body: Document = {
        "@timestamp": iso_nanos(now_unix_nano),
        "alert": {
            "kind": "response",
            "rule": {"id": rule_id},
            "reason": f"{action} {target}: {outcome}",
            "response": response,
        },
    }
    digest = hashlib.sha256(f"{action}\0{target}".encode()).hexdigest()[:12]
    return f"response:{alert_id}:{digest}", body


def mapping_for_alerts() -> dict[str, Any]:
    """The additive ``PUT _mapping`` body for the alerts index."""
    return copy.deepcopy(ALERT_FIELDS)
