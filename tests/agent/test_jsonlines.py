from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.parsers import get_parser
from agent.parsers.categorize import categorize
from agent.parsers.jsonlines import parse
from agent.parsers.timestamps import TimestampError, parse_timestamp
from proto.v1 import audit_pb2 as pb

SAMPLE = {
    "timestamp": "2026-03-01T09:15:00.250Z",
    "event": "record.update",
    "outcome": "success",
    "user": {"id": "u-17", "name": "jdoe", "email": "jdoe@bank.example", "roles": ["advisor"]},
    "source_ip": "192.0.2.10",
    "device": "LAPTOP-17",
    "user_agent": "Mozilla/5.0",
    "session_id": "s-1",
    "object": {"type": "customer", "id": "C-1", "name": "ACME Ltd"},
    "changes": [
        {"field": "iban", "old": "DE00 1", "new": "DE00 2"},
        {"field": "phone", "new": "555"},
    ],
    "record_count": 1,
    "message": "updated customer",
    "reason": "client request",
    "tenant": "emea",
}


def line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_default_mapping_fills_every_field() -> None:
    event = parse(line(SAMPLE))
    assert event is not None
    assert event.time_unix_nano == 1772356500_250_000_000
    assert event.action == "record.update"
    assert event.outcome == pb.OUTCOME_SUCCESS
    assert (event.user.id, event.user.name, event.user.email) == (
        "u-17",
        "jdoe",
        "jdoe@bank.example",
    )
    assert list(event.user.roles) == ["advisor"]
    assert event.source.ip == "192.0.2.10"
    assert event.source.device_id == "LAPTOP-17"
    assert event.source.user_agent == "Mozilla/5.0"
    assert event.session_id == "s-1"
    assert (event.object.type, event.object.id, event.object.name) == (
        "customer",
        "C-1",
        "ACME Ltd",
    )
    assert event.changes[0].old_value == "DE00 1" and event.changes[0].new_value == "DE00 2"
    assert event.changes[1].field == "phone"
    assert not event.changes[1].HasField("old_value")  # absent = not recorded
    assert event.record_count == 1
    assert event.message == "updated customer"
    assert dict(event.attributes) == {"reason": "client request", "tenant": "emea"}
    assert list(event.event_category) == ["database"]
    assert list(event.event_type) == ["change"]
    assert event.audit_category == pb.AUDIT_CATEGORY_DATA_OPERATION
    assert list(event.flags) == []
    assert event.original == line(SAMPLE).decode()


def test_unmapped_nested_keys_become_dotted_attributes() -> None:
    event = parse(line({"event": "login", "user": {"id": "u", "dept": "ops"}, "x": {"y": [1, 2]}}))
    assert event is not None
    assert dict(event.attributes) == {"user.dept": "ops", "x.y": "[1,2]"}


def test_mapping_override() -> None:
    parser = get_parser("jsonlines", {"user.name": "actor.username", "action": "op"})
    event = parser(line({"op": "logout", "actor": {"username": "amy", "team": "x"}}))
    assert event is not None
    assert event.user.name == "amy"
    assert event.action == "logout"
    assert list(event.event_type) == ["end"]
    assert dict(event.attributes) == {"actor.team": "x"}


def test_unknown_override_field_is_refused() -> None:
    with pytest.raises(ValueError, match=r"usr\.name"):
        get_parser("jsonlines", {"usr.name": "x"})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event": "login",', "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"just a string"', "expected a JSON object, got string"),
        (b"NaN", "invalid JSON"),
    ],
)
def test_bad_json_becomes_flagged_event(raw: bytes, reason: str) -> None:
    event = parse(raw)
    assert event is not None
    assert list(event.flags) == ["parse_error"]
    assert reason in event.parse_error and "\n" not in event.parse_error
    assert event.original == raw.decode()


def test_invalid_utf8_is_replaced_and_flagged() -> None:
    event = parse(b'{"event": "login", "user": {"name": "J\xe9r\xf4me"}}')
    assert event is not None
    assert "invalid_utf8" in event.flags
    assert event.user.name == "J\ufffdr\ufffdme"
    assert "parse_error" not in event.flags


@pytest.mark.parametrize("blank", [b"", b"   ", b"\t\r"])
def test_blank_lines_are_skipped(blank: bytes) -> None:
    assert parse(blank) is None


@pytest.mark.parametrize(
    ("value", "nanos"),
    [
        ("2026-03-01T09:15:00Z", 1772356500_000_000_000),
        ("2026-03-01T10:15:00+01:00", 1772356500_000_000_000),
        ("2026-03-01T04:15:00.123456789-0500", 1772356500_123_456_789),
        ("2026-03-01 09:15:00,5Z", 1772356500_500_000_000),
        (1772356500, 1772356500_000_000_000),
        (1772356500250, 1772356500_250_000_000),
        ("1772356500", 1772356500_000_000_000),
    ],
)
def test_timestamp_forms(value: object, nanos: int) -> None:
    assert parse_timestamp(value) == nanos
    event = parse(line({"timestamp": value}))
    assert event is not None and event.time_unix_nano == nanos


def test_epoch_float_seconds_are_exact() -> None:
    event = parse(b'{"timestamp": 1772356500.123456789}')
    assert event is not None and event.time_unix_nano == 1772356500_123_456_789


@pytest.mark.parametrize(
    "value", ["2026-03-01T09:15:00", "yesterday", "2026-13-01T00:00:00Z", True]
)
def test_bad_timestamps_are_flagged_and_kept(value: object) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)
    event = parse(line({"timestamp": value, "event": "login"}))
    assert event is not None
    assert event.time_unix_nano == 0
    assert "invalid_timestamp" in event.flags
    assert "timestamp" in event.attributes


def test_wrong_shapes_are_flagged_and_kept() -> None:
    event = parse(line({"source_ip": "not-an-ip", "changes": "x", "record_count": -1, "user": []}))
    assert event is not None
    assert list(event.flags) == ["mapping_error"]
    assert event.source.ip == ""
    assert {"source_ip", "changes", "record_count", "user"} <= set(event.attributes)


def test_null_change_value_is_absent_and_empty_stays_empty() -> None:
    event = parse(line({"changes": [{"field": "phone", "old": None, "new": 5}]}))
    assert event is not None
    assert not event.changes[0].HasField("old_value")
    assert event.changes[0].new_value == "5"
    assert event.changes[0].new_type == pb.FieldChange.VALUE_TYPE_NUMBER
    event = parse(line({"changes": [{"field": "phone", "old": "", "new": True}]}))
    assert event is not None
    assert event.changes[0].HasField("old_value") and event.changes[0].old_value == ""
    assert event.changes[0].old_type == pb.FieldChange.VALUE_TYPE_STRING
    assert event.changes[0].new_type == pb.FieldChange.VALUE_TYPE_BOOLEAN


@pytest.mark.parametrize(
    ("action", "category", "types", "audit"),
    [
        ("login", ["authentication"], ["start"], pb.AUDIT_CATEGORY_SECURITY),
        ("logout", ["authentication"], ["end"], pb.AUDIT_CATEGORY_SECURITY),
        ("Login Failed", ["authentication"], ["start"], pb.AUDIT_CATEGORY_SECURITY),
        ("record.view", ["database"], ["access"], pb.AUDIT_CATEGORY_DATA_OPERATION),
        ("record.export", ["database"], ["access"], pb.AUDIT_CATEGORY_DATA_OPERATION),
        ("record.delete", ["database"], ["change"], pb.AUDIT_CATEGORY_DATA_OPERATION),
        ("role.assign", ["iam"], ["change"], pb.AUDIT_CATEGORY_SYSTEM_ADMIN),
        ("permission.create", ["iam"], ["creation"], pb.AUDIT_CATEGORY_SYSTEM_ADMIN),
        (
            "settings.audit_log.disable",
            ["configuration"],
            ["change"],
            pb.AUDIT_CATEGORY_SYSTEM_ADMIN,
        ),
    ],
)
def test_categories(action: str, category: list[str], types: list[str], audit: int) -> None:
    event = parse(line({"event": action}))
    assert event is not None
    assert (list(event.event_category), list(event.event_type)) == (category, types)
    assert event.audit_category == audit


def test_failed_login_implies_failure_and_unknown_action_no_category() -> None:
    event = parse(line({"event": "login failed"}))
    assert event is not None and event.outcome == pb.OUTCOME_FAILURE
    assert categorize("report.run") is None


@given(st.binary(max_size=512))
def test_any_bytes_yield_exactly_one_event(raw: bytes) -> None:
    raw = raw.replace(b"\n", b"")
    event = parse(raw)
    if not raw.strip():
        assert event is None
    else:
        assert isinstance(event, pb.AuditEvent)
        event.SerializeToString()  # every string must be valid UTF-8 for protobuf


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["timestamp", "event", "outcome", "user", "source_ip", "changes", "record_count", "object"]
)


@given(st.dictionaries(_keys | st.text(max_size=8), _json, max_size=8))
def test_any_json_object_yields_one_serializable_event(record: dict[str, object]) -> None:
    event = parse(json.dumps(record).encode())
    assert isinstance(event, pb.AuditEvent)
    event.SerializeToString()
