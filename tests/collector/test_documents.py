"""collector.documents: AuditEvent -> ECS-aligned document (pure function)."""

from __future__ import annotations

from collector.documents import (
    FLAG_INVALID_SOURCE_IP,
    FLAG_MISSING_TIMESTAMP,
    FLAG_OBSERVER_MISMATCH,
    document_id,
    index_name,
    iso_nanos,
    to_document,
)
from proto.v1 import audit_pb2
from tests.collector.conftest import NOV_27_2026, make_event

RECEIVED = NOV_27_2026 + 60_000_000_000


def test_full_event_maps_to_ecs_fields() -> None:
    doc = to_document(make_event(7), agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.doc_id == "agent-1:7"
    assert doc.timestamp_unix_nano == NOV_27_2026 + 7
    assert doc.source == {
        "@timestamp": "2026-11-27T12:00:00.000000007Z",
        "event": {
            "created": "2026-11-27T12:00:05.000000000Z",
            "ingested": "2026-11-27T12:01:00.000000000Z",
            "category": ["database"],
            "type": ["change"],
            "action": "record.update",
            "outcome": "success",
            "original": '{"user":"alice","action":"update"}',
            "sequence": 7,
        },
        "user": {"id": "u42", "name": "alice", "email": "alice@example.com", "roles": ["sales"]},
        "source": {"ip": "10.1.2.3", "port": 51515},
        "user_agent": {"original": "UA/1"},
        "crm": {
            "device": {"id": "dev-9"},
            "session": {"id": "sess-1"},
            "object": {"type": "customer", "id": "c-1", "name": "ACME"},
            "changes": [
                {"field": "iban", "old": "DE01", "new": "DE02"},
                {"field": "phone", "new": "+49 1"},
            ],
            "source": {"name": "crm", "format": "jsonlines"},
            "attributes": {"tenant": "eu"},
        },
        "audit": {"category": "data_operation"},
        "agent": {"id": "agent-1", "version": "0.1.0"},
        "host": {"hostname": "crm-01"},
        "log": {"file": {"path": "/var/log/crm/audit.log"}, "offset": 1234},
        "message": "alice updated customer c-1",
    }


def test_missing_timestamp_uses_observed_time_and_flags_it() -> None:
    doc = to_document(
        make_event(1, time_unix_nano=0), agent_id="agent-1", received_unix_nano=RECEIVED
    )
    assert doc.timestamp_unix_nano == NOV_27_2026 + 5_000_000_000
    assert doc.source["@timestamp"] == "2026-11-27T12:00:05.000000000Z"
    assert doc.source["integrity"]["flags"] == [FLAG_MISSING_TIMESTAMP]


def test_no_time_at_all_falls_back_to_receive_time() -> None:
    doc = to_document(
        make_event(1, time_unix_nano=0, observed_unix_nano=0),
        agent_id="agent-1",
        received_unix_nano=RECEIVED,
    )
    assert doc.timestamp_unix_nano == RECEIVED
    assert "created" not in doc.source["event"]
    assert doc.source["integrity"]["flags"] == ["missing_timestamp", "missing_observed_timestamp"]


def test_negative_time_is_kept_raw_and_flagged() -> None:
    doc = to_document(
        make_event(1, time_unix_nano=-5), agent_id="agent-1", received_unix_nano=RECEIVED
    )
    assert doc.source["crm"]["attributes"]["time_unix_nano_raw"] == "-5"
    assert "invalid_timestamp" in doc.source["integrity"]["flags"]


def test_invalid_source_ip_kept_under_attributes() -> None:
    event = make_event(2, source=audit_pb2.Source(ip="not-an-ip", port=80))
    doc = to_document(event, agent_id="agent-1", received_unix_nano=RECEIVED)
    assert "ip" not in doc.source["source"]
    assert doc.source["source"]["port"] == 80
    assert doc.source["crm"]["attributes"]["source_ip_raw"] == "not-an-ip"
    assert doc.source["integrity"]["flags"] == [FLAG_INVALID_SOURCE_IP]


def test_ipv6_source_ip_is_normalized() -> None:
    event = make_event(2, source=audit_pb2.Source(ip="2001:DB8::0001"))
    doc = to_document(event, agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.source["source"] == {"ip": "2001:db8::1"}


def test_agent_id_comes_from_certificate_not_payload() -> None:
    doc = to_document(make_event(3, "evil"), agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.doc_id == "agent-1:3"
    assert doc.source["agent"]["id"] == "agent-1"
    assert doc.source["crm"]["attributes"]["observer_agent_id_raw"] == "evil"
    assert FLAG_OBSERVER_MISMATCH in doc.source["integrity"]["flags"]


def test_parse_error_event_keeps_original_and_error() -> None:
    event = audit_pb2.AuditEvent(
        sequence=9,
        observed_unix_nano=NOV_27_2026,
        original="garbage \x01 line",
        flags=["parse_error"],
        parse_error="expected JSON object at column 1",
    )
    doc = to_document(event, agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.source["error"] == {"message": "expected JSON object at column 1"}
    assert doc.source["event"]["original"] == "garbage \x01 line"
    assert doc.source["event"]["outcome"] == "unknown"
    assert doc.source["audit"]["category"] == "unknown"
    assert doc.source["integrity"]["flags"] == ["parse_error", "missing_timestamp"]
    # empty fields are left out rather than stored as ""
    assert "user" not in doc.source and "source" not in doc.source


def test_record_count_and_empty_old_value() -> None:
    event = make_event(
        4,
        record_count=0,
        changes=[audit_pb2.FieldChange(field="email", old_value="", new_value="a@b")],
    )
    doc = to_document(event, agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.source["crm"]["record_count"] == 0
    assert doc.source["crm"]["changes"] == [{"field": "email", "old": "", "new": "a@b"}]


def test_unknown_enum_values_map_to_unknown() -> None:
    event = make_event(5)
    event.outcome = 42  # type: ignore[assignment]
    event.audit_category = 42  # type: ignore[assignment]
    doc = to_document(event, agent_id="agent-1", received_unix_nano=RECEIVED)
    assert doc.source["event"]["outcome"] == "unknown"
    assert doc.source["audit"]["category"] == "unknown"


def test_index_name_by_event_time_and_class() -> None:
    assert index_name("crm-audit", "standard", "monthly", NOV_27_2026) == (
        "crm-audit-events-standard-2026.11"
    )
    assert (
        index_name("crm-audit", "gold", "daily", NOV_27_2026) == "crm-audit-events-gold-2026.11.27"
    )
    # UTC: 23:59:59.999999999 on Dec 31 stays in December
    last_ns = 1_798_761_599_999_999_999
    assert index_name("p", "c", "monthly", last_ns) == "p-events-c-2026.12"
    assert index_name("p", "c", "monthly", last_ns + 1) == "p-events-c-2027.01"


def test_document_id_and_iso() -> None:
    assert document_id("agent-1", 18446744073709551615) == "agent-1:18446744073709551615"
    assert iso_nanos(0) == "1970-01-01T00:00:00.000000000Z"


def test_effective_target_user_and_organization() -> None:
    event = make_event(1)
    event.user.name = "admin.sven"
    event.effective_user.name = "jürgen.weiß"
    event.effective_user.id = "u-17"
    event.target_user.name = "carla"
    event.target_user.roles.extend(["sales_manager"])
    event.organization.id = "tenant-eu-3"
    doc = to_document(event, agent_id="agent-1", received_unix_nano=NOV_27_2026).source
    assert doc["user"]["name"] == "admin.sven"
    assert doc["user"]["effective"] == {"id": "u-17", "name": "jürgen.weiß"}
    assert doc["user"]["target"] == {"name": "carla", "roles": ["sales_manager"]}
    assert doc["organization"] == {"id": "tenant-eu-3"}


def test_absent_effective_user_leaves_no_empty_object() -> None:
    doc = to_document(make_event(1), agent_id="agent-1", received_unix_nano=NOV_27_2026).source
    assert "effective" not in doc["user"]
    assert "target" not in doc["user"]
    assert "organization" not in doc


def test_change_values_keep_their_types() -> None:
    t = audit_pb2.FieldChange
    event = make_event(1)
    del event.changes[:]
    event.changes.extend(
        [
            t(
                field="credit_limit",
                old_value="5000",
                new_value="7500.5",
                old_type=t.VALUE_TYPE_NUMBER,
                new_type=t.VALUE_TYPE_NUMBER,
            ),
            t(
                field="vip",
                old_value="false",
                new_value="true",
                old_type=t.VALUE_TYPE_BOOLEAN,
                new_type=t.VALUE_TYPE_BOOLEAN,
            ),
            t(field="phone", new_value="+49 30 1234"),  # old: null at the source
            t(field="tags", new_value='["a","b"]', new_type=t.VALUE_TYPE_JSON),
            # a value that does not read as its stated type stays text
            t(field="odd", new_value="12abc", new_type=t.VALUE_TYPE_NUMBER),
        ]
    )
    doc = to_document(event, agent_id="agent-1", received_unix_nano=NOV_27_2026).source
    assert doc["crm"]["changes"] == [
        {"field": "credit_limit", "old": 5000, "new": 7500.5},
        {"field": "vip", "old": False, "new": True},
        {"field": "phone", "new": "+49 30 1234"},
        {"field": "tags", "new": '["a","b"]'},
        {"field": "odd", "new": "12abc"},
    ]
