"""MySQL Enterprise Audit and Percona audit_log: object naming (database.table)."""

from __future__ import annotations

import json

from agent.parsers import get_parser
from proto.v1 import audit_pb2 as pb


def _percona(sql: str, db: str) -> pb.AuditEvent:
    record = {
        "audit_record": {
            "name": "Query",
            "timestamp": "2021-06-30T15:07:58 UTC",
            "command_class": "select",
            "connection_id": "2",
            "status": 0,
            "sqltext": sql,
            "user": "app[app] @ localhost [10.0.0.5]",
            "host": "localhost",
            "ip": "10.0.0.5",
            "db": db,
        }
    }
    event = get_parser("percona_audit", {})(json.dumps(record).encode())
    assert event is not None
    return event


def test_percona_names_tables_with_the_records_database() -> None:
    assert _percona("SELECT * FROM customers", "crm").object.name == "crm.customers"
    assert _percona("UPDATE hr.staff SET a = 1", "crm").object.name == "hr.staff"
    assert _percona("SELECT * FROM customers", "").object.name == "customers"


def test_enterprise_table_access_and_qualified_statements_name_the_database() -> None:
    parse = get_parser("mysql_enterprise_audit", {})
    access = {
        "timestamp": "2019-10-03 14:23:41",
        "class": "table_access",
        "event": "read",
        "connection_id": 9,
        "login": {"user": "app", "ip": "10.0.0.5"},
        "table_access_data": {
            "db": "crm",
            "table": "customers",
            "query": "SELECT * FROM customers",
        },
    }
    event = parse(json.dumps(access).encode())
    assert event is not None and (event.action, event.object.name) == ("db.select", "crm.customers")
