"""Property: whatever bytes a file holds, framing + parsing never raises and loses nothing.

Every format is exercised through its registry parser and framer, with random bytes and
with lines shaped like the format (so the deeper code paths run on mutated input).
Each event is a valid protobuf (serializable: strings are valid UTF-8); a parser bug
would show as the guard's "internal parser error" reason, which must never appear.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.parse_command import parse_bytes
from agent.parsers import FORMATS, get_framer, get_parser
from agent.parsers._common import INTERNAL_ERROR

OPTIONS = {
    "jsonlines": {},
    "pgaudit": {"log_line_prefix": "%m [%p] %q%u@%d %r %a %c ", "timezone": "Europe/Berlin"},
    "mariadb_audit": {"timezone": "Europe/Berlin"},
    "mysql_enterprise_audit": {},
    "percona_audit": {},
    "salesforce_elf": {},
    "salesforce_json": {},
    "regex": {"pattern": r"(?P<timestamp>\S+) (?P<user_name>\w+) (?P<action>\S+)(?P<rest>.*)"},
}
VARIANTS = [(name, dict(opts)) for name, opts in OPTIONS.items()] + [
    ("pgaudit", {"log_destination": "csvlog"}),
    ("pgaudit", {"log_destination": "jsonlog"}),
]

SHAPES = [
    b"2026-11-27 13:39:32.276 CET [1558] crm_app@crm 127.0.0.1(33718) crm-web 6b.61 LOG:  "
    b"AUDIT: SESSION,2,1,WRITE,INSERT,TABLE,public.c,\"INSERT INTO c (a) VALUES ('x')\",,1",
    b"\tLine 2', 'Kai 2')\",<not logged>,1",
    b"2026-11-27 13:39:32.288 CET [1560] u@crm 127.0.0.1(1) [unknown] 6b.618 FATAL:  "
    b'password authentication failed for user "u"',
    b'2015-08-12 16:13:44.813 UTC,"v","p",22612,"[local]",55.54,8,"GRANT",2015-08-12 16:13:44 UTC,'
    b'2/8,1834,LOG,00000,"AUDIT: SESSION,6,1,ROLE,GRANT,,,""grant usage',
    b'{"timestamp":"2023-05-13 21:09:08.505 GMT","user":"p","error_severity":"LOG",'
    b'"message":"AUDIT: SESSION,2,1,WRITE,UPDATE,,,\\"update t set a=1\\",<not logged>"}',
    b"20170914 17:31:24,centos,root,10.0.0.1:3306,11,114,QUERY,loans,'UPDATE t SET a=\\'1,2\\'',0",
    b"Sep 14 17:46:51 centos mysql-server_auditing: x centos,root,localhost,11,117,READ,db,t,",
    b'[\n{ "timestamp": "2019-10-03 14:23:41", "class": "connection", "event": "connect",',
    b'  "connection_data": { "status": 0 } },',
    b'{"audit_record":{"name":"Connect","timestamp":"2021-06-30T15:07:58 UTC","status":1045}}',
    b'"EVENT_TYPE","TIMESTAMP","USER_ID","CLIENT_IP","ROWS_PROCESSED","METHOD_NAME"',
    b'"API","20231218054831.655","005","Salesforce.com IP","12","query"',
    b'{"attributes":{"type":"AccountHistory"},"Field":"Phone","OldValue":1,"NewValue":[2]}',
    b"2026-11-27T10:00:00Z alice record.update extra",
    b"",
    b"\xff\xfe\x00",
]

line = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(SHAPES),
    st.tuples(st.sampled_from(SHAPES), st.integers(0, 200), st.binary(max_size=8)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
).map(lambda b: b.replace(b"\n", b" "))


def _run(name: str, options: dict[str, object], lines: list[bytes]) -> None:
    model = FORMATS[name].options_model.model_validate(options)
    parse, framer = get_parser(name, {}, model), get_framer(name, model)
    data = b"\n".join(lines)
    for item in parse_bytes(data, parse, framer):
        event = item.event
        event.SerializeToString()
        assert INTERNAL_ERROR not in event.parse_error, (name, event.parse_error, data)
        if "parse_error" in event.flags:
            assert event.parse_error and event.original
        assert 0 <= item.record.offset <= len(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(VARIANTS), lines=st.lists(line, max_size=8))
def test_any_input_yields_events_never_an_exception(
    variant: tuple[str, dict[str, object]], lines: list[bytes]
) -> None:
    _run(variant[0], variant[1], lines)


def test_every_registered_format_is_covered() -> None:
    assert set(FORMATS) == {name for name, _ in VARIANTS}
