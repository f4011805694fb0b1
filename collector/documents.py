"""AuditEvent -> ECS-aligned OpenSearch document, plus the mapping that stores it.

Pure functions: no clock, no network. The caller passes the agent identity taken from
the client certificate (the payload's ``observer.agent_id`` is never trusted) and the
time the collector received the batch (used only when the event carries no time at all).

`EVENTS_MAPPING` is the strict mapping of every field `to_document` can emit; the two
live side by side so they change together (tests index real documents through it).
"""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from proto.v1 import audit_pb2

Document = dict[str, Any]
Granularity = Literal["monthly", "daily"]

_NANOS = 1_000_000_000

_OUTCOMES = {
    audit_pb2.OUTCOME_SUCCESS: "success",
    audit_pb2.OUTCOME_FAILURE: "failure",
}
_AUDIT_CATEGORIES = {
    audit_pb2.AUDIT_CATEGORY_SYSTEM_ADMIN: "system_admin",
    audit_pb2.AUDIT_CATEGORY_DATA_OPERATION: "data_operation",
    audit_pb2.AUDIT_CATEGORY_SECURITY: "security",
}

# Flags the collector adds (the agent's own flags are kept as they come).
FLAG_MISSING_TIMESTAMP = "missing_timestamp"
FLAG_MISSING_OBSERVED_TIMESTAMP = "missing_observed_timestamp"
FLAG_INVALID_TIMESTAMP = "invalid_timestamp"
FLAG_INVALID_SOURCE_IP = "invalid_source_ip"
FLAG_INVALID_SOURCE_PORT = "invalid_source_port"
FLAG_OBSERVER_MISMATCH = "observer_agent_id_mismatch"


class EventDocument(NamedTuple):
    """One event ready for indexing: its stable ``_id``, its effective time and body.

    A named tuple: one per event on the hot path, cheaper to make than a dataclass."""

    doc_id: str
    sequence: int
    timestamp_unix_nano: int
    source: Document


class DocumentBytes(NamedTuple):
    """One event's document already serialized (by the compiled kernel,
    `collector.native`): the same fields as `EventDocument`, the body as the JSON the
    bulk request carries."""

    doc_id: str
    sequence: int
    timestamp_unix_nano: int
    body: bytes


def document_id(agent_id: str, sequence: int, stream_id: str = "") -> str:
    """The deterministic ``_id``: identical across every re-delivery of the event.

    Stream format 1: ``agent:sequence``; format 2: ``agent:stream:sequence`` (sequences
    are per stream, so an agent that restarted without state never collides).
    """
    if stream_id:
        return f"{agent_id}:{stream_id}:{sequence}"
    return f"{agent_id}:{sequence}"


# Formatted times repeat: a batch's events share a few seconds and a month. The caches
# are bounded (cleared when full) and keyed by whole seconds / days, so they stay small
# whatever the traffic; dict operations are atomic, so threads may share them.
_CACHE_LIMIT = 4096
_SECOND_TEXT: dict[int, str] = {}
_DAY_SUFFIX: dict[tuple[int, bool], str] = {}
_IP_TEXT: dict[str, str | None] = {}


def _cached(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def index_name(
    prefix: str, retention_class: str, granularity: Granularity, timestamp_unix_nano: int
) -> str:
    """``{prefix}-events-{class}-YYYY.MM`` (daily: ``YYYY.MM.DD``), by event time in UTC."""
    key = (timestamp_unix_nano // _NANOS // 86400, granularity == "daily")
    suffix = _DAY_SUFFIX.get(key)
    if suffix is None:
        when = datetime.fromtimestamp(key[0] * 86400, UTC)
        suffix = _cached(_DAY_SUFFIX, key, when.strftime("%Y.%m.%d" if key[1] else "%Y.%m"))
    return f"{prefix}-events-{retention_class}-{suffix}"


def iso_nanos(unix_nano: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. ``2026-11-27T12:00:00.123456789Z``."""
    seconds, fraction = divmod(unix_nano, _NANOS)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        when = datetime.fromtimestamp(seconds, UTC)
        text = _cached(_SECOND_TEXT, seconds, f"{when:%Y-%m-%dT%H:%M:%S}")
    return f"{text}.{fraction:09d}Z"


# The receive time last formatted, as one (time, text) tuple (replaced whole, so threads
# never see half of one): every event of a batch carries its batch's (event.ingested).
_INGESTED: tuple[int, str] = (-1, "")


def _ingested(received_unix_nano: int) -> str:
    global _INGESTED
    last = _INGESTED
    if last[0] == received_unix_nano:
        return last[1]
    text = iso_nanos(received_unix_nano)
    _INGESTED = (received_unix_nano, text)
    return text


# Midnight (unix seconds) of each "YYYY-MM-DD" parsed, and the unix seconds of each
# "YYYY-MM-DDTHH:MM:SS" parsed, for `parse_iso_nanos`.
_DAY_START: dict[str, int] = {}
_SECOND_START: dict[str, int] = {}


def parse_iso_nanos(text: str) -> int:
    """Inverse of `iso_nanos` (``YYYY-MM-DDTHH:MM:SS[.fffffffff]Z``).

    Detection reads every event's time back and verify every stored one: the form
    `iso_nanos` writes is parsed by its fixed positions with the date cached per day
    and the whole seconds per second (`strptime` costs ~10 µs); any other text goes
    through `strptime`, which accepts and refuses what it always did.
    """
    # The form `iso_nanos` writes: the whole seconds looked up by their text (events of
    # a batch share a few seconds), the nanoseconds read by position.
    if len(text) == 30 and text[19] == "." and text[29] == "Z":
        seconds = _SECOND_START.get(text[:19])
        fraction = text[20:29]
        if seconds is not None and fraction.isdigit():
            return seconds * _NANOS + int(fraction)
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {text!r}")
    whole, _, fraction = text[:-1].partition(".")
    seconds = _whole_seconds(whole)
    if len(whole) == 19:
        _cached(_SECOND_START, whole, seconds)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return seconds * _NANOS + nanos


def _whole_seconds(whole: str) -> int:
    """Unix seconds of ``YYYY-MM-DDTHH:MM:SS`` (UTC)."""
    if len(whole) == 19 and whole[10] == "T" and whole[13] == ":" and whole[16] == ":":
        digits = whole[11:13] + whole[14:16] + whole[17:19]
        if digits.isascii() and digits.isdigit():
            hours, minutes, seconds = int(digits[:2]), int(digits[2:4]), int(digits[4:])
            if hours < 24 and minutes < 60 and seconds < 60:
                day = whole[:10]
                start = _DAY_START.get(day)
                if start is None:
                    midnight = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
                    start = _cached(_DAY_START, day, int(midnight.timestamp()))
                return int(start) + hours * 3600 + minutes * 60 + seconds
    return int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())


def _ip_text(raw: str) -> str | None:
    """The normalized address, or None when `raw` is not one (cached: addresses repeat)."""
    try:
        return _IP_TEXT[raw]
    except KeyError:
        pass
    try:
        text: str | None = str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        text = None
    return _cached(_IP_TEXT, raw, text)  # type: ignore[no-any-return]


def _user(user: audit_pb2.User) -> Document:
    """The ``user``-shaped object, without empty values (keyword fields hold no ``""``)."""
    out: Document = {}
    value = user.id
    if value:
        out["id"] = value
    value = user.name
    if value:
        out["name"] = value
    value = user.email
    if value:
        out["email"] = value
    roles = user.roles
    if roles:
        out["roles"] = list(roles)
    return out


def typed_change_value(text: str, value_type: int) -> str | int | float | bool:
    """A change value as the source typed it: a number stays a number in the document.

    The keyword mapping indexes every kind as text, so searches see no difference; the
    stored ``_source`` (what analysts and exports read) keeps the type. Text that does not
    read as the stated type stays text rather than being guessed at.
    """
    if value_type == audit_pb2.FieldChange.VALUE_TYPE_NUMBER:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if value_type == audit_pb2.FieldChange.VALUE_TYPE_BOOLEAN and text in ("true", "false"):
        return text == "true"
    return text


def _raw_key(attributes: dict[str, str], name: str) -> str:
    # An attribute of the source may already use the name; keep both values.
    return name if name not in attributes else f"{name}.collector"


def _flag(flags: list[str], name: str) -> None:
    if name not in flags:
        flags.append(name)


def to_document(
    event: audit_pb2.AuditEvent, *, agent_id: str, received_unix_nano: int, stream_id: str = ""
) -> EventDocument:
    """Map one event; problems found on the way become ``integrity.flags``.

    `stream_id` (stream format 2 only) goes into the ``_id`` and ``agent.stream``.
    ``@timestamp`` (and so the index month) is `proto.integrity.effective_time` whenever
    that is a valid time (> 0): the time a v2 seal's signed range is computed from, so a
    verifier can tell from a seal which index held its events. Only an event without a
    usable time falls back further (flagged), to the receive time at the end.

    ``event.original``: always for a format 1 event; for a format 2 event (it names a
    stream) only when it is flagged or did not parse, as its line is in its stored bytes.

    Built as literal dicts, field by field: an empty value (``""``, an empty list) is
    left out so keyword fields hold no ``""``, and an object none of whose fields is set
    is left out too. This runs once per event on the collector's hot path, so it is
    straight-line code: each protobuf field read once into a local, the flags list and
    the attributes dict copied only when there are some or a problem adds one.
    """
    flags: list[str] = list(event.flags) if event.flags else []
    attributes: dict[str, str] = dict(event.attributes) if event.attributes else {}

    observed = event.observed_unix_nano
    if observed < 0:
        attributes[_raw_key(attributes, "observed_unix_nano_raw")] = str(observed)
        _flag(flags, FLAG_INVALID_TIMESTAMP)
        observed = 0
    timestamp = event.time_unix_nano
    if timestamp <= 0:
        if timestamp < 0:
            # Before 1970: no date_nanos value and no sensible index; keep the raw value.
            attributes[_raw_key(attributes, "time_unix_nano_raw")] = str(timestamp)
            _flag(flags, FLAG_INVALID_TIMESTAMP)
        _flag(flags, FLAG_MISSING_TIMESTAMP)
        timestamp = observed
        if timestamp == 0:
            # Neither time is known: the receive time is the best left (and the only
            # input here that can differ between re-deliveries).
            _flag(flags, FLAG_MISSING_OBSERVED_TIMESTAMP)
            timestamp = received_unix_nano

    observer = event.observer
    payload_agent = observer.agent_id
    if payload_agent and payload_agent != agent_id:
        attributes[_raw_key(attributes, "observer_agent_id_raw")] = payload_agent
        _flag(flags, FLAG_OBSERVER_MISMATCH)

    ev: Document = {}
    if observed:
        ev["created"] = iso_nanos(observed)
    ev["ingested"] = _ingested(received_unix_nano)
    value: Any = event.event_category
    if value:
        ev["category"] = list(value)
    value = event.event_type
    if value:
        ev["type"] = list(value)
    value = event.action
    if value:
        ev["action"] = value
    ev["outcome"] = _OUTCOMES.get(event.outcome, "unknown")
    sequence = event.sequence
    ev["sequence"] = sequence
    doc: Document = {"@timestamp": iso_nanos(timestamp), "event": ev}

    # HasField first: reading an unset sub-message still builds a (default) object.
    has = event.HasField
    user = _user(event.user) if has("user") else {}
    if has("effective_user"):
        effective = _user(event.effective_user)
        if effective:
            user["effective"] = effective
    if has("target_user"):
        target = _user(event.target_user)
        if target:
            user["target"] = target
    if user:
        doc["user"] = user
    if has("organization"):
        org = event.organization
        org_id, org_name = org.id, org.name
        if org_id or org_name:
            organization: Document = {}
            if org_id:
                organization["id"] = org_id
            if org_name:
                organization["name"] = org_name
            doc["organization"] = organization

    src = event.source
    ip_raw, port, device_id, user_agent = src.ip, src.port, src.device_id, src.user_agent
    if ip_raw or port:
        source: Document = {}
        if ip_raw:
            ip = _ip_text(ip_raw)
            if ip is not None:
                source["ip"] = ip
            else:
                attributes[_raw_key(attributes, "source_ip_raw")] = ip_raw
                _flag(flags, FLAG_INVALID_SOURCE_IP)
        if port:
            if port <= 65535:
                source["port"] = port
            else:
                attributes[_raw_key(attributes, "source_port_raw")] = str(port)
                _flag(flags, FLAG_INVALID_SOURCE_PORT)
        if source:
            doc["source"] = source
    if user_agent:
        doc["user_agent"] = {"original": user_agent}

    crm: Document = {}
    if device_id:
        crm["device"] = {"id": device_id}
    value = event.session_id
    if value:
        crm["session"] = {"id": value}
    if has("object"):
        obj = event.object
        obj_type, obj_id, obj_name = obj.type, obj.id, obj.name
        if obj_type or obj_id or obj_name:
            crm_object: Document = {}
            if obj_type:
                crm_object["type"] = obj_type
            if obj_id:
                crm_object["id"] = obj_id
            if obj_name:
                crm_object["name"] = obj_name
            crm["object"] = crm_object
    value = event.changes
    if value:
        changes = []
        for change in value:
            entry: dict[str, Any] = {"field": change.field}
            # Optional values: "" means "was empty", absence means "not recorded" (or null).
            if change.HasField("old_value"):
                entry["old"] = typed_change_value(change.old_value, change.old_type)
            if change.HasField("new_value"):
                entry["new"] = typed_change_value(change.new_value, change.new_type)
            changes.append(entry)
        crm["changes"] = changes
    if has("record_count"):
        crm["record_count"] = event.record_count
    if crm:
        doc["crm"] = crm

    doc["audit"] = {"category": _AUDIT_CATEGORIES.get(event.audit_category, "unknown")}
    agent: Document = {}
    if agent_id:
        agent["id"] = agent_id
    if stream_id:
        agent["stream"] = stream_id
    value = observer.agent_version
    if value:
        agent["version"] = value
    if agent:
        doc["agent"] = agent
    value = observer.hostname
    if value:
        doc["host"] = {"hostname": value}
    origin = event.log
    file_path, offset, source_name, source_format = (
        origin.file_path,
        origin.offset,
        origin.source_name,
        origin.format,
    )
    if file_path:
        doc["log"] = {"file": {"path": file_path}, "offset": offset}
    elif offset:
        doc["log"] = {"offset": offset}
    if source_name or source_format:
        crm_source: Document = {}
        if source_name:
            crm_source["name"] = source_name
        if source_format:
            crm_source["format"] = source_format
        crm["source"] = crm_source
        doc["crm"] = crm
    value = event.message
    if value:
        doc["message"] = value
    parse_error = event.parse_error
    if parse_error:
        doc["error"] = {"message": parse_error}
    original = event.original
    # The raw line once: a format 2 event's line is in its stored bytes
    # (``integrity.canonical``), so ``event.original`` repeats it only where an analyst
    # needs it beside the fields, on a record with a problem (flagged or unparsed: the
    # "Integrity flags" search shows it). Decided from the event alone, so `verify`
    # re-derives the same document.
    if original and (flags or parse_error or not event.stream_id):
        ev["original"] = original
    if flags:
        doc["integrity"] = {"flags": flags}
    if attributes:
        crm["attributes"] = attributes
        doc["crm"] = crm

    return EventDocument(
        doc_id=f"{agent_id}:{stream_id}:{sequence}" if stream_id else f"{agent_id}:{sequence}",
        sequence=sequence,
        timestamp_unix_nano=timestamp,
        source=doc,
    )


# --- mapping -------------------------------------------------------------------------

# ignore_above keeps an oversized value in _source instead of failing the whole document
# (Lucene refuses terms over 32766 bytes).
_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 8191}
_KW_SHORT: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE: dict[str, Any] = {"type": "date_nanos"}


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    return {"properties": props}


# Fields whose case carries no meaning (names of people, roles, actions, object types
# and changed fields: one CRM writes `IBAN` and `Customer`, another `iban`, `customer`).
# Stored as written; detection rules compare them case-insensitively. Ids, values and
# free text compare exactly.
CASE_INSENSITIVE_FIELDS = frozenset(
    {
        "event.action",
        "event.outcome",
        "event.category",
        "event.type",
        "audit.category",
        "user.name",
        "user.email",
        "user.roles",
        "user.effective.name",
        "user.effective.email",
        "user.effective.roles",
        "user.target.name",
        "user.target.email",
        "user.target.roles",
        "crm.object.type",
        "crm.changes.field",
        "crm.source.format",
    }
)

EVENTS_MAPPING: dict[str, Any] = {
    # Unknown fields are refused (and dead-lettered) rather than silently mapped;
    # extras belong in crm.attributes.
    "dynamic": "strict",
    "date_detection": False,
    "properties": {
        "@timestamp": _DATE,
        "event": _obj(
            created=_DATE,
            ingested=_DATE,
            category=_KW_SHORT,
            type=_KW_SHORT,
            action=_KW_SHORT,
            outcome=_KW_SHORT,
            original={"type": "keyword", "index": False, "doc_values": False},
            sequence={"type": "unsigned_long"},
        ),
        "user": _obj(
            id=_KW,
            name=_KW,
            email=_KW,
            roles=_KW,
            # ECS: the identity acted as (impersonation) and the user acted upon.
            effective=_obj(id=_KW, name=_KW, email=_KW, roles=_KW),
            target=_obj(id=_KW, name=_KW, email=_KW, roles=_KW),
        ),
        "organization": _obj(id=_KW, name=_KW),
        "source": _obj(ip={"type": "ip"}, port={"type": "long"}),
        "user_agent": _obj(original=_KW),
        "crm": _obj(
            device=_obj(id=_KW),
            session=_obj(id=_KW),
            object=_obj(type=_KW_SHORT, id=_KW, name=_KW),
            # nested: "field=iban AND new=..." must match within one change.
            changes={
                "type": "nested",
                "properties": {"field": _KW, "old": _KW, "new": _KW},
            },
            record_count={"type": "unsigned_long"},
            source=_obj(name=_KW_SHORT, format=_KW_SHORT),
            # Core flat_object (OpenSearch >= 2.7): any keys, values searchable as
            # keywords, without a mapping explosion.
            attributes={"type": "flat_object"},
        ),
        "audit": _obj(category=_KW_SHORT),
        # stream: the agent's stream (incarnation) of a stream format 2 event.
        "agent": _obj(id=_KW_SHORT, version=_KW_SHORT, stream=_KW_SHORT),
        "host": _obj(hostname=_KW),
        "log": _obj(file=_obj(path=_KW), offset={"type": "unsigned_long"}),
        "message": {"type": "text"},
        "error": _obj(message={"type": "text"}),
        # canonical: the event's canonical bytes (proto.integrity; format 2: the bytes
        # exactly as received), base64, stored in _source only; chain_hash: hex chain
        # hash (format 2: the stream head after the event) recomputed by the collector;
        # event_hash (format 2): hex event hash, an unsigned convenience (seals sign the
        # hashes). Set by collector.server next to what `to_document` derives;
        # `crm-audit verify` re-derives every other field from `canonical` and compares.
        "integrity": _obj(
            flags=_KW_SHORT,
            canonical={"type": "binary"},
            chain_hash=_KW_SHORT,
            event_hash=_KW_SHORT,
        ),
    },
}

DEADLETTER_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "agent": _obj(id=_KW_SHORT),
        "event": _obj(
            sequence={"type": "unsigned_long"},
            original={"type": "keyword", "index": False, "doc_values": False},
        ),
        "deadletter": _obj(
            index=_KW_SHORT,
            status={"type": "integer"},
            error_type=_KW_SHORT,
            reason={"type": "text"},
            # The refused document, kept verbatim in _source only.
            document={"type": "object", "enabled": False},
        ),
    },
}
