from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.parsers import get_parser
from agent.parsers.mariadb import MariadbOptions
from proto.v1 import audit_pb2 as pb


def _parse(line: str, timezone: str = "UTC") -> pb.AuditEvent:
    event = get_parser("mariadb_audit", {}, MariadbOptions(timezone=timezone))(line.encode())
    assert event is not None
    return event


def test_timezone_is_required_and_checked() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        MariadbOptions.model_validate({})
    with pytest.raises(ValidationError, match="unknown time zone"):
        MariadbOptions(timezone="Mars/Olympus")


def test_query_with_escaped_quotes_commas_and_newline() -> None:
    event = _parse(
        r"20261127 10:00:00,db1,crm_app,10.0.0.5,3,9,QUERY,crm,"
        r"'UPDATE customers SET iban=\'DE12, 34\', note=\'O\\\'Brien\nx\' WHERE id=1',0",
        "Europe/Berlin",
    )
    assert event.action == "db.update" and event.outcome == pb.OUTCOME_SUCCESS
    assert [(c.field, c.new_value) for c in event.changes] == [
        ("iban", "DE12, 34"),
        ("note", "O'Brien\nx"),
    ]
    # 10:00 in Berlin (CET) is 09:00 UTC.
    assert event.time_unix_nano == 1795770000 * 10**9
    assert (event.user.name, event.source.ip, event.session_id) == ("crm_app", "10.0.0.5", "3")


def test_failed_query_and_failed_connect() -> None:
    denied = _parse("20261127 10:00:00,db1,app,10.0.0.5,3,9,QUERY,crm,'DELETE FROM t',1142")
    assert (denied.action, denied.outcome) == ("db.delete", pb.OUTCOME_FAILURE)
    failed = _parse("20261127 10:00:00,db1,app,10.0.0.5,4,0,FAILED_CONNECT,,,1045")
    assert (failed.action, failed.audit_category) == ("login.failed", pb.AUDIT_CATEGORY_SECURITY)
    refused = _parse("20261127 10:00:00,db1,app,10.0.0.5,4,0,CONNECT,crm,,1045")
    assert refused.action == "login.failed"


def test_table_event_with_empty_retcode() -> None:
    event = _parse("20261127 10:00:00,db1,app,localhost,3,9,WRITE,crm,customers,")
    assert (event.action, event.object.name, event.outcome) == (
        "db.table.write",
        "crm.customers",
        pb.OUTCOME_UNSPECIFIED,
    )
    assert event.attributes["source.address"] == "localhost"


def test_syslog_wrapped_records() -> None:
    event = _parse(
        "Nov 27 10:00:00 h1 mysql-server_auditing: info1 db1,root,localhost,11,117,QUERY,"
        "crm,'SET GLOBAL server_audit_logging=OFF',0"
    )
    assert event.action == "db.audit_config_change"
    assert [(c.field, c.new_value) for c in event.changes] == [("server_audit_logging", "OFF")]
    assert event.time_unix_nano == 0 and event.attributes["syslog.timestamp"] == "Nov 27 10:00:00"
    assert event.attributes["syslog.info"] == "info1"
    iso = _parse(
        "2026-11-27T10:00:00.5+01:00 h1 mysql-server_auditing:  db1,root,localhost,11,0,"
        "DISCONNECT,crm,,0"
    )
    assert iso.action == "logout" and iso.time_unix_nano == 1795770000 * 10**9 + 500_000_000


def test_unreadable_line_is_flagged_not_dropped() -> None:
    event = _parse("garbage")
    assert "parse_error" in event.flags and event.original == "garbage"


def test_statement_tables_are_named_with_the_records_database() -> None:
    """The QUERY record names the table as the TABLE record does: database.table."""
    query = _parse("20261127 10:00:00,db1,app,10.0.0.5,3,9,QUERY,crm,'SELECT * FROM customers',0")
    table = _parse("20261127 10:00:00,db1,app,10.0.0.5,3,9,READ,crm,customers,")
    assert query.object.name == table.object.name == "crm.customers"
    other = _parse("20261127 10:00:00,db1,app,10.0.0.5,3,9,QUERY,crm,'DELETE FROM hr.staff',0")
    assert other.object.name == "hr.staff"
    grant = _parse(
        "20261127 10:00:00,db1,root,localhost,3,9,QUERY,crm,'GRANT SELECT ON t TO \\'bob\\'',0"
    )
    assert (grant.object.type, grant.object.name) == ("role", "bob")
