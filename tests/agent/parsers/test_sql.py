from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.parsers.sql import action_for_command, classify, qualified


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


@pytest.mark.parametrize(
    ("statement", "name", "changes"),
    [
        # psql passes the terminating semicolon through and pgaudit logs it.
        ("ALTER SYSTEM RESET pgaudit.log;", "pgaudit.log", [("pgaudit.log", "DEFAULT")]),
        ("ALTER SYSTEM SET pgaudit.log = 'ddl' ;", "pgaudit.log", [("pgaudit.log", "ddl")]),
        # A PostgreSQL list value is one value, not a second setting.
        (
            "ALTER SYSTEM SET pgaudit.log TO write, ddl",
            "pgaudit.log",
            [("pgaudit.log", "write, ddl")],
        ),
        ("SET pgaudit.log = 'all, -read'", "pgaudit.log", [("pgaudit.log", "all, -read")]),
        ("SET pgaudit.log TO DEFAULT", "pgaudit.log", [("pgaudit.log", "DEFAULT")]),
        ("RESET pgaudit.log", "pgaudit.log", [("pgaudit.log", "DEFAULT")]),
        ("ALTER SYSTEM RESET ALL", "all", [("all", "DEFAULT")]),
        ("ALTER ROLE bob RESET pgaudit.log", "bob", [("pgaudit.log", "DEFAULT")]),
        ("ALTER DATABASE crm SET pgaudit.log = 'none'", "crm", [("pgaudit.log", "none")]),
    ],
)
def test_audit_setting_changes_carry_the_new_value(
    statement: str, name: str, changes: list[tuple[str, str | None]]
) -> None:
    info = classify(statement)
    assert (info.action, info.object_name, info.changes) == (
        "db.audit_config_change",
        name,
        changes,
    )


def test_only_the_first_statement_counts() -> None:
    info = classify("COPY crm.customers TO STDOUT; DELETE FROM t;")
    assert (info.action, info.object_name) == ("db.export", "crm.customers")
    assert classify("SET search_path = a, b").changes == [("search_path", "a, b")]
    assert classify("RESET search_path").action == "db.reset"
    # MySQL assigns several variables in one SET.
    assert classify(
        "SET GLOBAL server_audit_events = 'CONNECT', general_log = 1", True
    ).changes == [
        ("server_audit_events", "CONNECT"),
        ("general_log", "1"),
    ]


def test_schema_objects_are_qualified_with_the_current_database() -> None:
    assert qualified(classify("INSERT INTO customers (a) VALUES (1)", True), "crm") == (
        "crm.customers"
    )
    assert qualified(classify("SELECT * FROM other.customers", True), "crm") == "other.customers"
    assert qualified(classify("GRANT SELECT ON t TO bob", True), "crm") == "bob"  # a role
    assert qualified(classify("SELECT * FROM customers", True), "") == "customers"
