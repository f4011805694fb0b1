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
