from __future__ import annotations

import datetime as dt

import pytest

from agent.parse_command import parse_bytes
from agent.parsers import get_framer, get_parser
from agent.parsers.framing import StartPatternFramer
from agent.parsers.pgaudit import PgauditOptions, compile_prefix
from proto.v1 import audit_pb2 as pb

PREFIX = "%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "


def _events(text: str, **options: object) -> list[pb.AuditEvent]:
    model = PgauditOptions.model_validate(options)
    items = parse_bytes(
        text.encode(), get_parser("pgaudit", {}, model), get_framer("pgaudit", model)
    )
    return [i.event for i in items]


def test_prefix_escapes_fill_user_database_client_and_application() -> None:
    line = (
        "2026-11-27 09:00:01 UTC [42]: [3-1] user=crm_app,db=crm,app=crm-web,client=10.0.0.9 "
        "LOG:  AUDIT: OBJECT,7,1,READ,SELECT,TABLE,public.customers,SELECT iban FROM customers,"
        "<not logged>,120"
    )
    (event,) = _events(line, log_line_prefix=PREFIX)
    assert (event.user.name, event.source.ip, event.source.user_agent) == (
        "crm_app",
        "10.0.0.9",
        "crm-web",
    )
    assert event.attributes["db.name"] == "crm" and event.attributes["db.session_line"] == "3"
    assert (event.action, event.record_count, event.object.name) == (
        "db.select",
        120,
        "public.customers",
    )
    assert (
        event.time_unix_nano
        == int(dt.datetime(2026, 11, 27, 9, 0, 1, tzinfo=dt.UTC).timestamp()) * 10**9
    )


def test_q_ends_the_prefix_of_background_processes() -> None:
    text = (
        "2026-11-27 10:00:00.000 UTC [7] LOG:  checkpoint starting: time\n"
        "2026-11-27 10:00:01.500 UTC [9] bob@crm 10.0.0.2(5000) psql 65.1 LOG:  "
        "connection authorized: user=bob database=crm"
    )
    first, second = _events(text, log_line_prefix="%m [%p] %q%u@%d %r %a %c ")
    assert first.message == "checkpoint starting: time" and not first.action
    assert (second.action, second.user.name, second.source.ip, second.source.port) == (
        "login",
        "bob",
        "10.0.0.2",
        5000,
    )
    assert second.session_id == "65.1"


def test_padded_escapes_are_trimmed() -> None:
    prefix = compile_prefix("%m %-10u %5p ")
    match = prefix.line.match("2026-11-27 10:00:00.000 UTC bob           42 LOG:  x")
    assert match is not None and match.group("f_u").strip() == "bob"


def test_unknown_escape_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown escape %y"):
        PgauditOptions(log_line_prefix="%y ")


def test_statement_lines_join_their_error_and_make_a_failed_action() -> None:
    text = (
        "2026-11-27 10:00:00.000 UTC [5] ERROR:  permission denied for table customers\n"
        "2026-11-27 10:00:00.000 UTC [5] STATEMENT:  UPDATE customers\n"
        "\tSET iban = 'X' WHERE id = 1\n"
        "2026-11-27 10:00:01.000 UTC [5] LOG:  disconnection: session time: 0:00:01.0 "
        "user=bob database=crm host=10.0.0.2 port=5000"
    )
    denied, logout = _events(text)
    assert denied.action == "db.update" and denied.outcome == pb.OUTCOME_FAILURE
    assert [(c.field, c.new_value) for c in denied.changes] == [("iban", "X")]
    assert denied.message == "permission denied for table customers"
    assert denied.original.count("\n") == 2
    assert (logout.action, logout.user.name, logout.source.ip) == ("logout", "bob", "10.0.0.2")


@pytest.mark.parametrize(
    ("message", "user"),
    [
        ('password authentication failed for user "mallory"', "mallory"),
        (
            'no pg_hba.conf entry for host "192.0.2.1", user "eve", database "crm", no encryption',
            "eve",
        ),
        ('role "ghost" does not exist', "ghost"),
    ],
)
def test_fatal_authentication_lines_are_failed_logins(message: str, user: str) -> None:
    (event,) = _events(f"2026-11-27 10:00:00.000 UTC [5] FATAL:  {message}")
    assert (event.action, event.outcome, event.user.name) == (
        "login.failed",
        pb.OUTCOME_FAILURE,
        user,
    )
    assert event.audit_category == pb.AUDIT_CATEGORY_SECURITY


def test_zone_abbreviations_need_the_configured_zone_and_pick_the_dst_side() -> None:
    line = "2026-10-25 02:30:00.000 {} [5] LOG:  x"
    (unknown,) = _events(line.format("CET"))
    assert "invalid_timestamp" in unknown.flags and unknown.time_unix_nano == 0
    (summer,) = _events(line.format("CEST"), timezone="Europe/Berlin")
    (winter,) = _events(line.format("CET"), timezone="Europe/Berlin")
    assert winter.time_unix_nano - summer.time_unix_nano == 3600 * 10**9
    (offset,) = _events(line.format("+03"))
    assert (
        offset.time_unix_nano
        == int(
            dt.datetime(2026, 10, 25, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=3))).timestamp()
        )
        * 10**9
    )


def test_audit_config_changes_are_recognized() -> None:
    text = (
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,1,1,MISC,SET,,,"
        "SET pgaudit.log = 'none',<not logged>\n"
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,2,1,ROLE,ALTER ROLE,,,"
        "ALTER ROLE bob SET pgaudit.log TO 'none',<not logged>"
    )
    events = _events(text)
    assert [e.action for e in events] == ["db.audit_config_change"] * 2
    assert [(c.field, c.new_value) for c in events[0].changes] == [("pgaudit.log", "none")]
    assert events[1].object.name == "bob"


def test_csvlog_versions_by_column_count() -> None:
    base = (
        '2026-11-27 10:00:00.000 UTC,"bob","crm",5,"10.0.0.2:5000",65.1,1,"SELECT",'
        "2026-11-27 10:00:00 UTC,3/1,0,LOG,00000,"
        '"AUDIT: SESSION,1,1,READ,SELECT,,,""SELECT 1, \'a\'\n b"",<not logged>",,,,,,,,,"psql"'
    )
    for extra in ("", ',"client backend"', ',"client backend",,0'):
        (event,) = _events(base + extra, log_destination="csvlog")
        assert (event.action, event.user.name, event.source.ip) == ("db.select", "bob", "10.0.0.2")
        assert event.message == "SELECT 1, 'a'\n b"
        assert "parse_error" not in event.flags


def test_stderr_framer_does_not_start_records_at_secondary_lines() -> None:
    framer = get_framer("pgaudit", PgauditOptions())
    assert isinstance(framer, StartPatternFramer)
    lines = [
        b'2026-11-27 10:00:00.000 UTC [5] FATAL:  password authentication failed for user "x"',
        b"2026-11-27 10:00:00.000 UTC [5] DETAIL:  Connection matched pg_hba.conf line 1",
        b"2026-11-27 10:00:01.000 UTC [6] LOG:  next",
    ]
    out = []
    for i, line in enumerate(lines):
        out += framer.feed(line, i * 100, i * 100 + 100)
    assert [r.line_count for r in out] == [2]


def test_copy_logged_as_a_select_is_an_export_without_a_row_count() -> None:
    """COPY of a query, or of a table with row-level security, runs a query: pgaudit logs
    the table read as command SELECT (and object audit logs only that)."""
    text = (
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,1,1,READ,SELECT,TABLE,"
        "crm.customers,COPY crm.customers TO STDOUT,<not logged>,0\n"
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: OBJECT,2,1,READ,SELECT,TABLE,"
        'crm.customers,"COPY (SELECT iban FROM crm.customers) TO STDOUT;",<not logged>,0\n'
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,3,1,READ,SELECT,TABLE,"
        "crm.customers,SELECT * FROM crm.customers,<not logged>,7"
    )
    rls, query, select = _events(text)
    assert [(e.action, e.object.name) for e in (rls, query)] == [
        ("db.export", "crm.customers"),
        ("db.export", "crm.customers"),
    ]
    assert not rls.HasField("record_count") and not query.HasField("record_count")
    assert (select.action, select.record_count) == ("db.select", 7)


def test_alter_system_reset_names_the_setting_without_the_semicolon() -> None:
    line = (
        "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,1,1,DDL,ALTER SYSTEM,,,"
        "ALTER SYSTEM RESET pgaudit.log;,<not logged>"
    )
    (event,) = _events(line)
    assert (event.action, event.object.name) == ("db.audit_config_change", "pgaudit.log")
    assert [(c.field, c.new_value) for c in event.changes] == [("pgaudit.log", "DEFAULT")]


WRONG_PREFIX_LOG = (
    # A postmaster line (no session part after %q) matches the default prefix ...
    "2026-11-27 10:00:00.000 UTC [7] LOG:  database system is ready to accept connections\n"
    # ... the session lines, written with a longer prefix, do not.
    "2026-11-27 10:00:01.000 UTC [9] bob@crm LOG:  AUDIT: SESSION,1,1,READ,SELECT,TABLE,"
    "public.customers,SELECT * FROM customers,<not logged>\n"
    "2026-11-27 10:00:02.000 UTC [10] bob@crm FATAL:  "
    'password authentication failed for user "bob"\n'
    "2026-11-27 10:00:02.000 UTC [10] bob@crm DETAIL:  Connection matched pg_hba.conf line 3\n"
)


def test_a_prefix_that_does_not_match_splits_and_flags_instead_of_merging() -> None:
    events = _events(WRONG_PREFIX_LOG)
    # One event per line that is not a continuation: nothing merged into the first one.
    assert len(events) == 4
    assert events[0].message.startswith("database system is ready")
    assert not events[0].flags
    assert all({"prefix_mismatch", "parse_error"} <= set(e.flags) for e in events[1:]), [
        list(e.flags) for e in events
    ]
    assert events[1].original.endswith("SELECT * FROM customers,<not logged>")


def test_lines_joined_by_another_framer_are_flagged_too() -> None:
    """A `multiline:` start pattern joins lines the prefix does not describe."""
    text = WRONG_PREFIX_LOG.rstrip("\n")
    event = get_parser("pgaudit", {}, PgauditOptions())(text.encode())
    assert event is not None and "prefix_mismatch" in event.flags
    assert "parse_error" not in event.flags  # its first line was understood


def test_a_prefix_mismatch_is_warned_once_per_source(caplog: pytest.LogCaptureFixture) -> None:
    from agent.config import SourceConfig

    source = SourceConfig.model_validate(
        {"name": "pg-main", "format": "pgaudit", "paths": ["/var/log/pg/*.log"]}
    )
    options = source.parsed_options()
    parse = get_parser("pgaudit", {}, options)
    framer = get_framer("pgaudit", options)
    with caplog.at_level("WARNING"):
        events = [i.event for i in parse_bytes((WRONG_PREFIX_LOG * 3).encode(), parse, framer)]
    assert sum("prefix_mismatch" in e.flags for e in events) == 9
    (record,) = [r for r in caplog.records if "log_line_prefix" in r.getMessage()]
    assert "source pg-main" in record.getMessage() and "'%m [%p] '" in record.getMessage()


def test_the_prefix_warning_carries_no_log_content(caplog: pytest.LogCaptureFixture) -> None:
    """Privacy rules apply to events; the agent's own log must not leak the raw line."""
    options = PgauditOptions.model_validate(
        {"privacy": {"redact": {"user.name": {}}}}, context={"source_name": "pg"}
    )
    parse = get_parser("pgaudit", {}, options)
    with caplog.at_level("WARNING"):
        events = [
            i.event
            for i in parse_bytes(WRONG_PREFIX_LOG.encode(), parse, get_framer("pgaudit", options))
        ]
    assert any("prefix_mismatch" in e.flags for e in events)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "bob" not in message and "AUDIT" not in message and "source pg:" in message
