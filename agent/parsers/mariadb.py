"""MariaDB server_audit plugin log → AuditEvent. Pure.

File records: `timestamp,serverhost,username,host,connectionid,queryid,operation,
database,object,retcode`, e.g. `20170914 17:31:24,db1,root,localhost,11,114,QUERY,
loans,'SELECT 1',0`. QUERY objects are single-quoted with `\\'` (and `\\\\`, `\\n`,
`\\r`) escapes and may contain commas; TABLE events (READ/WRITE/CREATE/ALTER/DROP/
RENAME) end with an empty retcode; from 12.0.1 `host` is `host:port` and CONNECT's
object holds the TLS version. Syslog-wrapped records (`server_audit_output_type=
syslog`) carry no timestamp of their own: `<syslog header> ident: [info ]serverhost,
username,…`; a BSD syslog time has no year, so only its text is kept (the collector
then uses the time the agent read it) unless it is an RFC 3339 time.

Options: see `MariadbOptions` (timezone, required: the log has none), documented in
docs/config-reference.md.

Object names are `database.table`: a table the statement does not qualify is in the
record's database (the session's default), as in the TABLE events.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from pydantic import Field, field_validator

from agent.parsers import sql
from agent.parsers._common import (
    ParseFn,
    clean,
    local_to_nanos,
    parse_error,
    put,
    set_action,
    set_ip,
    set_port,
    start_event,
    zone,
)
from agent.parsers.options import FormatOptions
from agent.parsers.timestamps import TimestampError, parse_iso8601
from proto.v1 import audit_pb2 as pb

NAME = "mariadb_audit"
FIELDS: frozenset[str] = frozenset()

_STAMP = re.compile(r"(\d{8} \d\d:\d\d:\d\d)")
_SYSLOG = re.compile(
    r"(?:<\d{1,3}>\d?\s*)?"
    r"(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\S+))"
    r" (?P<host>\S+) (?P<ident>[^:\[\s]+)(?:\[\d+\])?: ?(?P<rest>.*)",
    re.DOTALL,
)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "0": "\0"}
_TABLE_OPS = {
    "READ": "db.table.read",
    "WRITE": "db.table.write",
    "CREATE": "db.table.create",
    "ALTER": "db.table.alter",
    "DROP": "db.table.drop",
    "RENAME": "db.table.rename",
}


class MariadbOptions(FormatOptions):
    """How to read the server_audit log. Its timestamps carry no zone, so the zone the
    MariaDB server runs in must be named; there is no default (a guessed zone would shift
    every event silently)."""

    timezone: str = Field(
        description="IANA zone of the MariaDB server's clock (its system zone or TZ, "
        "e.g. Europe/Berlin; UTC and numeric offsets like +01:00 are accepted).",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value


def make_parser(_mapping: Mapping[str, str], options: MariadbOptions) -> ParseFn:
    tz = zone(options.timezone)
    return lambda data: parse(data, tz)


def parse(data: bytes, tz: dt.tzinfo) -> pb.AuditEvent | None:
    """One server_audit record (file or syslog form)."""
    if not data.strip():
        return None
    event, text = start_event(data)
    text = text.rstrip("\r")
    stamp = _STAMP.match(text)
    if stamp is not None and text[stamp.end() : stamp.end() + 1] == ",":
        _set_time(event, stamp.group(1), tz)
        body = text[stamp.end() + 1 :]
    else:
        wrapped = _SYSLOG.match(text)
        if wrapped is None:
            return parse_error(event, "neither a server_audit record nor a syslog-wrapped one")
        if wrapped.group("iso"):
            try:
                event.time_unix_nano = parse_iso8601(wrapped.group("iso"))
            except TimestampError:
                put(event, "syslog.timestamp", wrapped.group("iso"))
        else:
            put(event, "syslog.timestamp", wrapped.group("bsd"))
        put(event, "syslog.hostname", wrapped.group("host"))
        put(event, "syslog.ident", wrapped.group("ident"))
        body = wrapped.group("rest")
        first_comma = body.find(",")
        head = body[:first_comma] if first_comma >= 0 else body
        if " " in head:  # server_audit_syslog_info precedes serverhost
            info, _, _ = head.rpartition(" ")
            put(event, "syslog.info", info.strip())
            body = body[len(info) + 1 :].lstrip(" ")
    return _fields(event, body)


def _fields(event: pb.AuditEvent, body: str) -> pb.AuditEvent:
    head = body.split(",", 7)
    if len(head) < 8:
        return parse_error(event, f"expected 10 comma-separated fields, got {len(head) + 1}")
    serverhost, username, host, connection_id, query_id, operation, database, rest = head
    obj, retcode, quoted = _object_and_retcode(rest)
    event.user.name = clean(username)
    event.session_id = clean(connection_id)
    put(event, "db.server_host", serverhost)
    put(event, "db.query_id", query_id)
    put(event, "db.name", database)
    put(event, "db.operation", operation)
    put(event, "db.retcode", retcode)
    _set_host(event, host)
    if retcode.strip() == "":
        outcome = pb.OUTCOME_UNSPECIFIED
    elif retcode.strip() == "0":
        outcome = pb.OUTCOME_SUCCESS
    else:
        outcome = pb.OUTCOME_FAILURE
    op = operation.upper()
    if op == "CONNECT":
        set_action(event, "login" if outcome != pb.OUTCOME_FAILURE else "login.failed", outcome)
        put(event, "tls.version", obj)
    elif op == "FAILED_CONNECT":
        set_action(event, "login.failed", pb.OUTCOME_FAILURE)
        put(event, "tls.version", obj)
    elif op == "DISCONNECT":
        set_action(event, "logout", pb.OUTCOME_SUCCESS if outcome else outcome)
    elif op == "CHANGEUSER":
        set_action(event, "login" if outcome != pb.OUTCOME_FAILURE else "login.failed", outcome)
    elif op in _TABLE_OPS:
        event.object.type = "table"
        event.object.name = clean(f"{database}.{obj}" if database and "." not in obj else obj)
        set_action(event, _TABLE_OPS[op], outcome)
    elif op.startswith("QUERY") or quoted:
        info = sql.classify(obj, mysql=True)
        set_action(event, info.action or "db.statement", outcome)
        if info.object_type:
            event.object.type = info.object_type
            event.object.name = clean(sql.qualified(info, database))
        for column, value in info.changes:
            change = event.changes.add(field=clean(column))
            if value is not None:
                change.new_value = clean(value)
        event.message = clean(obj)
    else:
        set_action(event, f"db.{op.lower()}" if op else "", outcome)
        put(event, "db.object", obj)
    return event


def _object_and_retcode(rest: str) -> tuple[str, str, bool]:
    """Split `object,retcode`; a quoted object may hold commas and `\\'` escapes."""
    if rest.startswith("'"):
        out: list[str] = []
        i = 1
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                out.append(_UNESCAPE.get(rest[i + 1], "\\" + rest[i + 1]))
                i += 2
                continue
            if ch == "'":
                tail = rest[i + 1 :]
                if tail.startswith(",") and re.fullmatch(r"-?\d*", tail[1:].strip()):
                    return "".join(out), tail[1:].strip(), True
                if tail == "":
                    return "".join(out), "", True
            out.append(ch)
            i += 1
        # Unterminated (cut by server_audit_query_log_limit): retcode after the last comma.
        obj, _, retcode = rest[1:].rpartition(",")
        return obj, retcode.strip(), True
    obj, _, retcode = rest.rpartition(",")
    return obj, retcode.strip(), False


def _set_host(event: pb.AuditEvent, host: str) -> None:
    host = host.strip()
    if not host:
        return
    if set_ip(event, host):
        return
    name, _, port = host.rpartition(":")
    if name and port.isdecimal():  # 12.x host:port
        set_port(event, port)
        if set_ip(event, name):
            return
        host = name
    put(event, "source.address", host)


def _set_time(event: pb.AuditEvent, stamp: str, tz: dt.tzinfo) -> None:
    try:
        moment = dt.datetime.strptime(stamp, "%Y%m%d %H:%M:%S")
    except ValueError:
        put(event, "db.log_time", stamp)
        if "invalid_timestamp" not in event.flags:
            event.flags.append("invalid_timestamp")
        return
    event.time_unix_nano = local_to_nanos(moment, tz)
