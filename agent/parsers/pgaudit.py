"""PostgreSQL server log (stderr, csvlog, jsonlog) with pgaudit records → AuditEvent. Pure.

Besides pgaudit's `AUDIT:` records (AUDIT_TYPE, STATEMENT_ID, SUBSTATEMENT_ID, CLASS,
COMMAND, OBJECT_TYPE, OBJECT_NAME, STATEMENT, PARAMETER[, ROWS]) the server's own
lines that matter to an auditor are understood: `connection authorized` (login),
`disconnection` (logout), FATAL authentication failures (login.failed) and ERRORs with
their STATEMENT (the statement's action, outcome failure — pgaudit logs nothing for a
statement refused by the server). Any other line becomes an event without an action.

Options (`options:` of the source): see `PgauditOptions` (log_destination,
log_line_prefix, timezone), documented in docs/config-reference.md.

Object names are those pgaudit gives (`schema.table`); a name taken from the statement
text only (COPY, refused statements) is kept as written, since the session's search_path
is not in the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from agent.parsers import sql
from agent.parsers._common import (
    ParseFn,
    clean,
    flag,
    local_to_nanos,
    parse_error,
    put,
    set_action,
    set_count,
    set_ip,
    set_port,
    start_event,
    zone,
    zone_for_abbreviation,
)
from agent.parsers.csvtext import split_csv
from agent.parsers.framing import Framer, LineFramer, QuoteBalancedFramer, StartPatternFramer
from agent.parsers.options import FormatOptions
from proto.v1 import audit_pb2 as pb

NAME = "pgaudit"
FIELDS: frozenset[str] = frozenset()
DEFAULT_PREFIX = "%m [%p] "
# Flag of a stderr record whose lines the configured log_line_prefix does not describe.
PREFIX_MISMATCH = "prefix_mismatch"

log = logging.getLogger(__name__)

# Lines PostgreSQL writes as part of the message before them (same prefix, own severity).
_SECONDARY = ("DETAIL", "HINT", "QUERY", "CONTEXT", "LOCATION", "STATEMENT")
_SEVERITY = r"(?P<severity>[A-Z][A-Z0-9]*):  (?:(?P<sqlstate>[0-9A-Z]{5}):  )?"
_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_ZONE = r"[A-Za-z0-9+\-:]+"
# Escape → (regex, free text?). Free-text values are matched up to the next literal.
_ESCAPES: dict[str, tuple[str, bool]] = {
    "a": ("", True),  # application_name
    "u": ("", True),  # user
    "d": ("", True),  # database
    "r": ("", True),  # remote host(port)
    "h": ("", True),  # remote host
    "L": ("", True),  # local address (16+)
    "b": ("", True),  # backend type
    "i": ("", True),  # command tag
    "p": (r"\d+", False),
    "P": (r"\d*", False),
    "t": (rf"{_TS} {_ZONE}", False),
    "m": (rf"{_TS}\.\d+ {_ZONE}", False),
    "n": (r"\d+\.\d+", False),
    "e": (r"[0-9A-Z]{5}", False),
    "c": (r"[0-9a-f]+\.[0-9a-f]+", False),
    "l": (r"\d+", False),
    "s": (rf"{_TS} {_ZONE}", False),
    "v": (r"[0-9/]*", False),
    "x": (r"\d*", False),
    "Q": (r"-?\d+", False),
}
_ESCAPE = re.compile(r"%(-?\d+)?(.)")

# csvlog columns: PG 9.0-12 (23), 13 adds backend_type (24), 14-17 leader_pid, query_id.
_CSV_COLUMNS = [
    "log_time",
    "user_name",
    "database_name",
    "process_id",
    "connection_from",
    "session_id",
    "session_line_num",
    "command_tag",
    "session_start_time",
    "virtual_transaction_id",
    "transaction_id",
    "error_severity",
    "sql_state_code",
    "message",
    "detail",
    "hint",
    "internal_query",
    "internal_query_pos",
    "context",
    "query",
    "query_pos",
    "location",
    "application_name",
    "backend_type",
    "leader_pid",
    "query_id",
]
_JSON_KEYS = {  # jsonlog key → csvlog column name
    "timestamp": "log_time",
    "user": "user_name",
    "dbname": "database_name",
    "pid": "process_id",
    "session_id": "session_id",
    "line_num": "session_line_num",
    "ps": "command_tag",
    "error_severity": "error_severity",
    "state_code": "sql_state_code",
    "message": "message",
    "detail": "detail",
    "hint": "hint",
    "context": "context",
    "statement": "query",
    "application_name": "application_name",
    "backend_type": "backend_type",
    "query_id": "query_id",
    "leader_pid": "leader_pid",
    "vxid": "virtual_transaction_id",
    "txid": "transaction_id",
}

_AUTH_FAILED = re.compile(r'(\S+) authentication failed for user "(.*)"', re.DOTALL)
_NO_HBA = re.compile(
    r'no pg_hba\.conf entry for (?:replication connection from )?host "([^"]*)", '
    r'user "([^"]*)"(?:, database "([^"]*)")?'
)
_NO_ROLE = re.compile(r'role "(.*)" does not exist')
_NO_DB = re.compile(r'database "(.*)" does not exist')
_KV = re.compile(r"(\w+)=(\S*)")


class PgauditOptions(FormatOptions):
    """How the PostgreSQL server writes its log: copy `log_destination`,
    `log_line_prefix` and `log_timezone` from its postgresql.conf (`SHOW
    log_line_prefix;`). With a prefix that does not match the log, each unrecognized
    line is shipped as an event of its own flagged `prefix_mismatch` and `parse_error`
    (counted by `crm-audit-agent parse`, warned once per source in the agent log)."""

    log_destination: Literal["stderr", "csvlog", "jsonlog"] = Field(
        "stderr",
        description="The server's log_destination for the files of this source: stderr "
        "(plain text with log_line_prefix), csvlog (*.csv) or jsonlog (*.json, PostgreSQL 15+).",
    )
    log_line_prefix: str = Field(
        DEFAULT_PREFIX,
        description="stderr only: the server's log_line_prefix, exactly (escapes %m %t %n %p "
        "%P %u %d %r %h %a %c %l %e %i %b %s %v %x %Q %L %q and %%; padding like %-10u). "
        "The default is PostgreSQL's own default.",
    )
    timezone: str | None = Field(
        None,
        description="IANA zone of the server's log_timezone (e.g. Europe/Berlin): needed "
        "when the log prints a zone abbreviation other than UTC/GMT or a numeric offset "
        "(CET is ambiguous worldwide); without it such times are flagged invalid_timestamp.",
    )

    @field_validator("log_line_prefix")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_prefix(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value


@dataclass(frozen=True, slots=True)
class Prefix:
    """A compiled log_line_prefix: the regex of a record's first line and of any line."""

    line: re.Pattern[str]  # prefix + severity, anchored at the start
    # Where the framer starts a record: any line but a continuation (PostgreSQL starts
    # each continuation line of a message with a tab) or a prefixed secondary line
    # (DETAIL, STATEMENT, …). A line the prefix does not match is thus a record of its
    # own, flagged, instead of being glued to the record before it.
    start: re.Pattern[bytes]


def compile_prefix(prefix: str) -> Prefix:
    """Turn a log_line_prefix into regexes; ValueError for an unknown escape."""
    parts: list[str] = []
    seen: set[str] = set()
    optional_from: int | None = None
    pos = 0
    matches = list(_ESCAPE.finditer(prefix))
    for index, match in enumerate(matches):
        parts.append(re.escape(prefix[pos : match.start()]))
        pos = match.end()
        pad, letter = match.groups()
        if letter == "%":
            parts.append("%")
            continue
        if letter == "q":
            optional_from = len(parts)
            continue
        if letter not in _ESCAPES:
            raise ValueError(f"unknown escape %{letter} in log_line_prefix")
        pattern, free = _ESCAPES[letter]
        if free:
            nxt = prefix[pos : matches[index + 1].start()] if index + 1 < len(matches) else ""
            nxt = nxt or (prefix[pos:] if index + 1 >= len(matches) else "")
            stop = nxt[:1]
            pattern = f"[^{re.escape(stop)}\\n]*" if stop else r"[^\n]*?"
        name = f"f_{letter}" if letter.isupper() is False else f"F_{letter}"
        group = f"(?P<{name}>{pattern})" if name not in seen else f"(?:{pattern})"
        seen.add(name)
        parts.append(f" *{group} *" if pad else group)
    parts.append(re.escape(prefix[pos:]))
    if optional_from is not None:
        head, tail = "".join(parts[:optional_from]), "".join(parts[optional_from:])
        body = f"{head}(?:{tail})?"
    else:
        body = "".join(parts)
    line = re.compile(rf"\A{body}{_SEVERITY}")
    not_secondary = "|".join(_SECONDARY)
    start = re.compile(rf"\A(?!\t)(?!{body}(?:{not_secondary}):  )".encode())
    return Prefix(line, start)


@dataclass(slots=True)
class _PgRecord:
    """One server log record, whatever the destination it was read from."""

    fields: dict[str, str] = field(default_factory=dict)  # csvlog column names
    sections: dict[str, str] = field(default_factory=dict)  # DETAIL/STATEMENT/... lines


def make_parser(_mapping: Mapping[str, str], options: PgauditOptions) -> ParseFn:
    tz = zone(options.timezone) if options.timezone else None
    if options.log_destination == "csvlog":
        return lambda data: parse_csvlog(data, tz)
    if options.log_destination == "jsonlog":
        return lambda data: parse_jsonlog(data, tz)
    prefix = compile_prefix(options.log_line_prefix)
    warned = False

    def parse(data: bytes) -> pb.AuditEvent | None:
        nonlocal warned
        event = parse_stderr(data, prefix, tz)
        if event is not None and PREFIX_MISMATCH in event.flags and not warned:
            # Once per source: a wrong prefix affects every line, the events are flagged.
            # No line content: privacy rules apply to events, not to the agent's log.
            warned = True
            log.warning(
                "source %s: lines of the PostgreSQL log do not match options."
                "log_line_prefix %r (set it to the server's log_line_prefix); such lines "
                "are shipped as events of their own flagged %s "
                "(crm-audit-agent parse --source %s shows them)",
                options.source_name or "(pgaudit)",
                options.log_line_prefix,
                PREFIX_MISMATCH,
                options.source_name or "NAME",
            )
        return event

    return parse


def make_framer(options: PgauditOptions) -> Framer:
    if options.log_destination == "csvlog":
        return QuoteBalancedFramer()
    if options.log_destination == "jsonlog":
        return LineFramer()
    return StartPatternFramer(compile_prefix(options.log_line_prefix).start)


# --- the three destinations ------------------------------------------------------------


def parse_stderr(data: bytes, prefix: Prefix, tz: dt.tzinfo | None = None) -> pb.AuditEvent | None:
    """One stderr record (first line plus continuation / DETAIL / STATEMENT lines)."""
    if not data.strip():
        return None
    event, text = start_event(data)
    lines = text.split("\n")
    first = prefix.line.match(lines[0][:8192])
    if first is None:
        flag(event, PREFIX_MISMATCH)
        return parse_error(event, "line does not start with the configured log_line_prefix")
    groups = {k: v for k, v in first.groupdict().items() if v is not None}
    record = _PgRecord()
    f = record.fields
    f["error_severity"] = groups.get("severity", "")
    f["sql_state_code"] = groups.get("sqlstate") or groups.get("f_e", "")
    f["log_time"] = groups.get("f_m") or groups.get("f_t", "")
    f["epoch"] = groups.get("f_n", "")
    f["user_name"] = groups.get("f_u", "").strip()
    f["database_name"] = groups.get("f_d", "").strip()
    f["process_id"] = groups.get("f_p", "")
    f["session_id"] = groups.get("f_c", "")
    f["session_line_num"] = groups.get("f_l", "")
    f["command_tag"] = groups.get("f_i", "").strip()
    f["application_name"] = groups.get("f_a", "").strip()
    f["backend_type"] = groups.get("f_b", "").strip()
    f["query_id"] = groups.get("F_Q", "")
    remote = groups.get("f_r", "").strip() or groups.get("f_h", "").strip()
    f["connection_from"] = _paren_port(remote)
    current = "message"
    collected: dict[str, list[str]] = {"message": [lines[0][first.end() :]]}
    for line in lines[1:]:
        match = prefix.line.match(line[:8192])
        if match is not None and match.group("severity") in _SECONDARY:
            current = match.group("severity")
            collected.setdefault(current, []).append(line[match.end() :])
            continue
        # PostgreSQL puts a tab after every newline of a message: a line without one
        # (joined by a framer other than ours, e.g. a `multiline:` setting) means the
        # prefix did not recognize a record's first line.
        if not line.startswith("\t"):
            flag(event, PREFIX_MISMATCH)
        collected.setdefault(current, []).append(line[1:] if line.startswith("\t") else line)
    f["message"] = "\n".join(collected.pop("message"))
    for name, parts in collected.items():
        record.sections[name] = "\n".join(parts)
    return _interpret(event, record, tz)


def _paren_port(remote: str) -> str:
    """`host(port)` as written by %r → `host:port` as in csvlog's connection_from."""
    match = re.fullmatch(r"(.*)\((\d+)\)", remote)
    return f"{match.group(1)}:{match.group(2)}" if match else remote


def parse_csvlog(data: bytes, tz: dt.tzinfo | None = None) -> pb.AuditEvent | None:
    """One csvlog record (may span lines: quoted newlines)."""
    if not data.strip():
        return None
    event, text = start_event(data)
    values, ok = split_csv(text)
    if not ok:
        flag(event, "unbalanced_quotes")
    if len(values) < 14:
        return parse_error(event, f"expected at least 14 csvlog columns, got {len(values)}")
    if len(values) > len(_CSV_COLUMNS):
        flag(event, "extra_columns")
    record = _PgRecord(dict(zip(_CSV_COLUMNS, values, strict=False)))
    return _interpret(event, record, tz)


def parse_jsonlog(data: bytes, tz: dt.tzinfo | None = None) -> pb.AuditEvent | None:
    """One jsonlog line (PostgreSQL 15+)."""
    if not data.strip():
        return None
    event, text = start_event(data)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return parse_error(event, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return parse_error(event, "expected a JSON object")
    fields = {_JSON_KEYS[k]: _text(v) for k, v in obj.items() if k in _JSON_KEYS}
    host, port = _text(obj.get("remote_host")), _text(obj.get("remote_port"))
    fields["connection_from"] = f"{host}:{port}" if host and port else host
    if "message" not in fields:
        return parse_error(event, "jsonlog record without a message")
    return _interpret(event, _PgRecord(fields), tz)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# --- meaning ---------------------------------------------------------------------------


def _interpret(event: pb.AuditEvent, record: _PgRecord, tz: dt.tzinfo | None) -> pb.AuditEvent:
    f = record.fields
    _set_time(event, f.get("log_time", ""), f.get("epoch", ""), tz)
    user = f.get("user_name", "")
    event.user.name = clean(user)
    event.session_id = clean(f.get("session_id", ""))
    event.source.user_agent = clean(f.get("application_name", ""))
    _set_remote(event, f.get("connection_from", ""))
    severity = f.get("error_severity", "")
    put(event, "db.name", f.get("database_name"))
    put(event, "db.severity", severity)
    put(event, "db.sqlstate", f.get("sql_state_code") if f.get("sql_state_code") != "00000" else "")
    put(event, "db.process_id", f.get("process_id"))
    put(event, "db.session_line", f.get("session_line_num"))
    put(event, "db.backend_type", f.get("backend_type"))
    put(event, "db.query_id", f.get("query_id") if f.get("query_id") not in ("0", "") else "")
    message = f.get("message", "")
    statement = f.get("query", "") or record.sections.get("STATEMENT", "")
    detail = f.get("detail", "") or record.sections.get("DETAIL", "")
    put(event, "db.detail", detail)
    put(event, "db.hint", f.get("hint", "") or record.sections.get("HINT", ""))
    put(event, "db.context", f.get("context", "") or record.sections.get("CONTEXT", ""))

    if severity == "LOG" and message.startswith("AUDIT: "):
        return _audit(event, message[len("AUDIT: ") :])
    if severity in ("FATAL", "PANIC") and _failed_login(event, message):
        return event
    if severity == "LOG" and _session_line(event, message):
        return event
    event.message = clean(message)
    if severity in ("ERROR", "FATAL", "PANIC"):
        if statement:
            _statement(event, statement, pb.OUTCOME_FAILURE)
            put(event, "db.error", message)
            event.message = clean(message)
        else:
            set_action(event, "db.error", pb.OUTCOME_FAILURE)
        return event
    for marker in ("statement: ", "execute "):
        at = message.find(marker)
        if severity == "LOG" and at >= 0 and (at == 0 or message.startswith("duration: ")):
            sql_text = message[at + len(marker) :]
            if marker == "execute ":
                sql_text = sql_text.split(": ", 1)[-1]
            _statement(event, sql_text, pb.OUTCOME_UNSPECIFIED)
            event.message = clean(message)
            break
    return event


def _statement(event: pb.AuditEvent, text: str, outcome: pb.Outcome.ValueType) -> None:
    info = sql.classify(text)
    _apply_sql(event, info)
    set_action(event, info.action or "db.statement", outcome)
    put(event, "db.statement", text)


def _apply_sql(event: pb.AuditEvent, info: sql.SqlInfo) -> None:
    if info.object_type and not event.object.type:
        event.object.type = info.object_type
    if info.object_name and not event.object.name:
        event.object.name = clean(info.object_name)
    for column, value in info.changes:
        change = event.changes.add(field=clean(column))
        if value is not None:
            change.new_value = clean(value)


def _audit(event: pb.AuditEvent, body: str) -> pb.AuditEvent:
    values, ok = split_csv(body)
    if not ok or len(values) < 9:
        event.message = clean(body)
        return parse_error(event, f"pgaudit record with {len(values)} fields (expected 9 or 10)")
    audit_type, stmt_id, sub_id, klass, command, obj_type, obj_name, statement, param = values[:9]
    rows = values[9] if len(values) > 9 else ""
    put(event, "db.audit_type", audit_type)
    put(event, "db.statement_id", stmt_id)
    put(event, "db.substatement_id", sub_id)
    put(event, "db.audit_class", klass)
    put(event, "db.command", command)
    if param and param != "<not logged>":
        put(event, "db.parameter", param)
    if obj_type:
        event.object.type = clean(obj_type.lower())
    if obj_name:
        event.object.name = clean(obj_name)
    logged = statement not in ("<not logged>", "<previously logged>", "")
    action = sql.action_for_command(command)
    copy = False
    if logged:
        info = sql.classify(statement)
        copy = info.verb == "COPY"
        # The statement's own reading wins when it agrees with the command pgaudit saw
        # (it knows audit-setting changes, columns and tables); pgaudit's command
        # otherwise (e.g. a statement inside a function).
        if info.action and (info.verb == command or _same_family(info.action, action)):
            action = info.action
            _apply_sql(event, info)
        event.message = clean(statement)
    # pgaudit writes the record once the statement ran (with log_rows, at executor end):
    # a statement the server refused has no AUDIT record, only an ERROR.
    set_action(event, action, pb.OUTCOME_SUCCESS)
    # ROWS is meaningful for reads and writes only; pgaudit reports 0 for COPY (which
    # bypasses the executor, or sends a query's rows elsewhere) and for DDL/ROLE
    # statements: "0 rows" would be false there.
    if len(values) > 9 and klass in ("READ", "WRITE") and command != "COPY" and not copy:
        set_count(event, rows)
    return event


def _same_family(statement_action: str, command_action: str) -> bool:
    if statement_action == command_action:
        return True
    # COPY: pgaudit says COPY; the statement tells export from import.
    if command_action == "db.copy" and statement_action in ("db.export", "db.import"):
        return True
    # `COPY (query) TO` and COPY of a table with row-level security run a query: pgaudit
    # logs its READ of each table as command SELECT, and object audit logs only that.
    # Still an export (one event per table read, as for any pgaudit READ).
    if command_action == "db.select" and statement_action == "db.export":
        return True
    # SET / ALTER ROLE SET / ALTER DATABASE SET of an audit setting.
    return statement_action == "db.audit_config_change" and command_action in (
        "db.set",
        "db.role_change",
        "db.alter.database",
        "db.reset",
        "db.create.extension",
        "db.drop.extension",
        "db.alter.extension",
    )


def _session_line(event: pb.AuditEvent, message: str) -> bool:
    if message.startswith(("connection authorized: ", "replication connection authorized: ")):
        kv = dict(_KV.findall(message))
        if kv.get("user"):
            event.user.name = clean(kv["user"])
        put(event, "db.name", kv.get("database"))
        put(event, "db.application_name", kv.get("application_name"))
        event.message = clean(message)
        set_action(event, "login", pb.OUTCOME_SUCCESS)
        return True
    if message.startswith("connection received: "):
        kv = dict(_KV.findall(message))
        if kv.get("host") and not event.source.ip:
            _set_remote(event, kv["host"] + (":" + kv["port"] if kv.get("port") else ""))
        event.message = clean(message)
        set_action(event, "connection.received", pb.OUTCOME_SUCCESS)
        return True
    if message.startswith("disconnection: "):
        kv = dict(_KV.findall(message))
        if kv.get("user"):
            event.user.name = clean(kv["user"])
        put(event, "db.name", kv.get("database"))
        if kv.get("host") and not event.source.ip:
            _set_remote(event, kv["host"] + (":" + kv["port"] if kv.get("port") else ""))
        event.message = clean(message)
        set_action(event, "logout", pb.OUTCOME_SUCCESS)
        return True
    return False


def _failed_login(event: pb.AuditEvent, message: str) -> bool:
    user = None
    match = _AUTH_FAILED.match(message)
    if match is not None:
        put(event, "db.auth_method", match.group(1))
        user = match.group(2)
    elif (hba := _NO_HBA.match(message)) is not None:
        if not event.source.ip:
            _set_remote(event, hba.group(1))
        user = hba.group(2)
        put(event, "db.name", hba.group(3))
    elif (role := _NO_ROLE.match(message)) is not None:
        user = role.group(1)
    elif _NO_DB.match(message) is None:
        return False
    if user:
        event.user.name = clean(user)
    event.message = clean(message)
    set_action(event, "login.failed", pb.OUTCOME_FAILURE)
    return True


def _set_remote(event: pb.AuditEvent, remote: str) -> None:
    """`host:port`, `[v6]:port`, `v6:port` (csvlog), `[local]` or a host name."""
    remote = remote.strip()
    if not remote or remote == "[local]":
        if remote:
            put(event, "source.address", remote)
        return
    if set_ip(event, remote):
        return
    host, _, port = remote.rpartition(":")
    if host and port.isdecimal() and set_ip(event, host):
        set_port(event, port)
        return
    put(event, "source.address", remote)


def _set_time(event: pb.AuditEvent, stamp: str, epoch: str, tz: dt.tzinfo | None) -> None:
    if not stamp and epoch:
        try:
            seconds, _, millis = epoch.partition(".")
            event.time_unix_nano = int(seconds) * 1_000_000_000 + int(
                (millis or "0")[:9].ljust(9, "0")
            )
        except ValueError:
            flag(event, "invalid_timestamp")
        return
    if not stamp:
        return
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(?: (\S+))?", stamp)
    if match is None:
        flag(event, "invalid_timestamp")
        put(event, "db.log_time", stamp)
        return
    wall, fraction, abbreviation = match.groups()
    where = zone_for_abbreviation(abbreviation or "", tz)
    if where is None:
        flag(event, "invalid_timestamp")
        put(event, "db.log_time", stamp)
        return
    try:
        # the pattern above fixed the shape; fromisoformat (C) only checks the ranges,
        # as strptime would, at a fraction of its cost
        moment = dt.datetime.fromisoformat(wall)
    except ValueError:
        flag(event, "invalid_timestamp")
        put(event, "db.log_time", stamp)
        return
    nanos = int((fraction or "0").ljust(9, "0"))
    event.time_unix_nano = local_to_nanos(moment, where, nanos, abbreviation)
