from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.parsers.sql import action_for_command, classify


@pytest.mark.parametrize(
    ("statement", "action", "obj", "changes"),
    [
        (
            "UPDATE crm.customers c SET iban = 'DE1', c.city = 'Köln', updated = now() WHERE id=1",
            "db.update",
            "crm.customers",
            [("iban", "DE1"), ("city", "Köln"), ("updated", None)],
        ),
        ("update t set (a, b) = (1, 2)", "db.update", "t", [("a", None), ("b", None)]),
        (
            "INSERT INTO t (a, b) VALUES ('x, y', -3)",
            "db.insert",
            "t",
            [("a", "x, y"), ("b", "-3")],
        ),
        ("INSERT INTO t (a) VALUES (1), (2)", "db.insert", "t", [("a", None)]),
        ("WITH x AS (SELECT 1) DELETE FROM only t", "db.delete", "t", []),
        ('/* c */ SELECT a FROM "Cust" -- x', "db.select", "Cust", []),
        ("COPY t TO STDOUT", "db.export", "t", []),
        ("COPY t FROM '/tmp/x'", "db.import", "t", []),
        ("GRANT SELECT ON t TO analyst", "db.grant", "analyst", []),
        ("REVOKE ALL ON t FROM analyst", "db.revoke", "analyst", []),
        ("CREATE USER bob WITH PASSWORD 'x'", "db.role_change", "bob", []),
        ("DROP ROLE IF EXISTS bob", "db.role_change", "bob", []),
        (
            "ALTER SYSTEM SET log_statement = 'none'",
            "db.audit_config_change",
            "log_statement",
            [("log_statement", "none")],
        ),
        ("SET search_path TO crm", "db.set", "", [("search_path", "crm")]),
        ("CREATE TABLE IF NOT EXISTS s.t (a int)", "db.create.table", "s.t", []),
        ("DROP EXTENSION pgaudit", "db.audit_config_change", "pgaudit", []),
        ("DO $$ BEGIN UPDATE t SET a = 1; END $$", "db.do", "", []),
        ("", "", "", []),
    ],
)
def test_statements(
    statement: str, action: str, obj: str, changes: list[tuple[str, str | None]]
) -> None:
    info = classify(statement)
    assert (info.action, info.object_name, info.changes) == (action, obj, changes)


def test_mysql_dialect() -> None:
    statement = "UPDATE `crm`.`customers` SET `iban`='it\\'s', note=\"a\\nb\" WHERE 1"
    info = classify(statement, mysql=True)
    assert (info.object_name, info.changes) == (
        "crm.customers",
        [("iban", "it's"), ("note", "a\nb")],
    )
    assert classify("SELECT * FROM t INTO OUTFILE '/tmp/x'", mysql=True).action == "db.export"
    assert (
        classify("SET GLOBAL server_audit_logging=OFF", mysql=True).action
        == "db.audit_config_change"
    )
    assert classify("UNINSTALL PLUGIN server_audit", mysql=True).action == "db.audit_config_change"
    assert classify("RENAME USER a TO b", mysql=True).action == "db.role_change"


def test_command_tags() -> None:
    assert action_for_command("ALTER ROLE") == "db.role_change"
    assert action_for_command("ALTER SYSTEM") == "db.audit_config_change"
    assert action_for_command("CREATE TABLE") == "db.create.table"
    assert action_for_command("SELECT") == "db.select"


@given(st.text(max_size=300), st.booleans())
def test_any_text_is_classified_without_error(text: str, mysql: bool) -> None:
    classify(text, mysql=mysql)
