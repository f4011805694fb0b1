"""MySQL Enterprise Audit (JSON format) and Percona Server audit_log → AuditEvent. Pure.

MySQL Enterprise Audit (`audit_log_format=JSON`) writes one JSON array; the
`JsonArrayFramer` hands each object over as one record. Times are UTC
(`"2019-10-03 14:23:41"`). Classes: connection (connect / disconnect / change_user,
`connection_data.status` ≠ 0 = failed), general and query (SQL in `general_data.query`),
table_access (insert / read / update / delete of `table_access_data.db.table`).
`login.user` is who authenticated, `account.user` the account used, `login.proxy` the
proxied user (impersonation).

Percona audit_log (`audit_log_format=JSON`, one `{"audit_record": {...}}` per line, or
`CSV`): `name` Connect / Query / Quit / Change user / …, `status` the MySQL error code,
`user` as `priv_user[user] @ host [ip]`, timestamps `2021-06-30T15:07:58 UTC`.
Neither format has options beyond `privacy`. Object names are `database.table`: Percona
qualifies a table the statement does not with the record's `db`; MySQL Enterprise query
records name no current database, so only table_access records and qualified statements
give the database there.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from agent.parsers import sql
from agent.parsers._common import (
    ParseFn,
    clean,
    local_to_nanos,
    parse_error,
    put,
    set_action,
    set_count,
    set_ip,
    start_event,
)
from agent.parsers.csvtext import split_csv
from agent.parsers.framing import Framer, JsonArrayFramer
from agent.parsers.options import FormatOptions
from agent.parsers.timestamps import TimestampError, parse_iso8601
from proto.v1 import audit_pb2 as pb

ENTERPRISE = "mysql_enterprise_audit"
PERCONA = "percona_audit"
FIELDS: frozenset[str] = frozenset()

_TABLE_EVENTS = {
    "insert": "db.insert",
    "read": "db.select",
    "update": "db.update",
    "delete": "db.delete",
}
_PERCONA_USER = re.compile(r"\s*([^\[]*)\[([^\]]*)\]\s*@\s*(\S*)\s*\[([^\]]*)\]")
_PERCONA_QUERY_CSV = [
    "name",
    "record",
    "timestamp",
    "command_class",
    "connection_id",
    "status",
    "sqltext",
    "user",
    "host",
    "os_user",
    "ip",
    "db",
]
_PERCONA_CONNECT_CSV = [
    "name",
    "record",
    "timestamp",
    "connection_id",
    "status",
    "user",
    "priv_user",
    "os_login",
    "proxy_user",
    "host",
    "ip",
    "db",
]


def make_enterprise_parser(_mapping: Mapping[str, str], _options: FormatOptions) -> ParseFn:
    return parse_enterprise


def make_enterprise_framer(_options: FormatOptions) -> Framer:
    return JsonArrayFramer()


def make_percona_parser(_mapping: Mapping[str, str], _options: FormatOptions) -> ParseFn:
    return parse_percona


def _load(data: bytes) -> tuple[pb.AuditEvent, dict[str, Any] | None]:
    event, text = start_event(data)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        parse_error(event, f"invalid JSON: {exc}")
        return event, None
    if not isinstance(obj, dict):
        parse_error(event, "expected a JSON object")
        return event, None
    return event, obj


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str:
    if value is None:
        return ""
    return clean(value if isinstance(value, str) else json.dumps(value))


def _status_outcome(status: Any) -> pb.Outcome.ValueType:
    text = _str(status).strip()
    if text == "":
        return pb.OUTCOME_UNSPECIFIED
    return pb.OUTCOME_SUCCESS if text == "0" else pb.OUTCOME_FAILURE


def _apply_sql(
    event: pb.AuditEvent, query: str, outcome: pb.Outcome.ValueType, database: str = ""
) -> None:
    info = sql.classify(query, mysql=True)
    set_action(event, info.action or "db.statement", outcome)
    if info.object_type and not event.object.name:
        event.object.type = info.object_type
        event.object.name = clean(sql.qualified(info, database))
    for column, value in info.changes:
        change = event.changes.add(field=clean(column))
        if value is not None:
            change.new_value = clean(value)
    event.message = clean(query)


def parse_enterprise(data: bytes) -> pb.AuditEvent | None:
    """One object of a MySQL Enterprise Audit JSON file."""
    if not data.strip():
        return None
    event, obj = _load(data)
    if obj is None:
        return event
    stamp = _str(obj.get("timestamp"))
    try:
        moment = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        event.time_unix_nano = local_to_nanos(moment, dt.UTC)
    except ValueError:
        event.flags.append("invalid_timestamp")
        put(event, "mysql.timestamp", stamp)
    klass, name = _str(obj.get("class")), _str(obj.get("event"))
    login_user = _str(_get(obj, "login", "user"))
    account = _str(_get(obj, "account", "user"))
    event.user.name = login_user or account
    if account and account != event.user.name:
        put(event, "db.account", f"{account}@{_str(_get(obj, 'account', 'host'))}")
    put(event, "user.proxy", _str(_get(obj, "login", "proxy")))
    put(event, "user.os", _str(_get(obj, "login", "os")))
    ip = _str(_get(obj, "login", "ip"))
    if ip and not set_ip(event, ip):
        put(event, "source.address", ip)
    event.session_id = _str(obj.get("connection_id"))
    put(event, "mysql.class", klass)
    put(event, "mysql.event", name)
    put(event, "mysql.id", _str(obj.get("id")))
    if klass == "connection":
        status = _status_outcome(_get(obj, "connection_data", "status"))
        put(event, "db.name", _str(_get(obj, "connection_data", "db")))
        put(event, "db.status", _str(_get(obj, "connection_data", "status")))
        if name in ("connect", "change_user"):
            failed = status == pb.OUTCOME_FAILURE
            set_action(event, "login.failed" if failed else "login", status)
        elif name == "disconnect":
            set_action(event, "logout", pb.OUTCOME_SUCCESS)
        else:
            set_action(event, f"db.connection.{name}", status)
        return event
    if klass == "table_access":
        db, table = (_str(_get(obj, "table_access_data", k)) for k in ("db", "table"))
        event.object.type = "table"
        event.object.name = f"{db}.{table}" if db else table
        query = _str(_get(obj, "table_access_data", "query"))
        if query:
            _apply_sql(event, query, pb.OUTCOME_SUCCESS)
        set_action(event, _TABLE_EVENTS.get(name, f"db.table.{name}"), pb.OUTCOME_SUCCESS)
        return event
    for section in ("general_data", "query_data"):
        query = _str(_get(obj, section, "query"))
        if query or isinstance(obj.get(section), dict):
            status = _status_outcome(_get(obj, section, "status"))
            put(event, "db.status", _str(_get(obj, section, "status")))
            put(event, "db.command", _str(_get(obj, section, "sql_command")))
            if query:
                _apply_sql(event, query, status)
            else:
                set_action(event, f"db.{_str(_get(obj, section, 'command')).lower()}", status)
            rows = _get(obj, "query_statistics", "rows_sent")
            if rows is not None and event.action in ("db.select", "db.export"):
                set_count(event, _str(rows))
            return event
    set_action(event, f"db.{klass}.{name}".strip("."), pb.OUTCOME_UNSPECIFIED)
    return event


def parse_percona(data: bytes) -> pb.AuditEvent | None:
    """One Percona audit_log record, JSON or CSV."""
    if not data.strip():
        return None
    if data.lstrip().startswith(b"{"):
        event, obj = _load(data)
        if obj is None:
            return event
        record = obj.get("audit_record")
        if not isinstance(record, dict):
            return parse_error(event, "JSON without an audit_record object")
        fields = {k: _str(v) for k, v in record.items()}
    else:
        event, text = start_event(data)
        values, ok = split_csv(text.rstrip("\r"), backslash=True)
        if not ok or len(values) < 12:
            return parse_error(event, f"expected 12 CSV fields, got {len(values)}")
        columns = _PERCONA_QUERY_CSV if values[0] == "Query" else _PERCONA_CONNECT_CSV
        fields = dict(zip(columns, values, strict=False))
    return _percona(event, fields)


def _percona(event: pb.AuditEvent, f: dict[str, str]) -> pb.AuditEvent:
    stamp = f.get("timestamp", "")
    try:
        event.time_unix_nano = parse_iso8601(re.sub(r"\s*UTC$", "Z", stamp))
    except TimestampError:
        event.flags.append("invalid_timestamp")
        put(event, "mysql.timestamp", stamp)
    user_field = f.get("user", "")
    match = _PERCONA_USER.match(user_field)
    if match is not None:
        priv, login, host, ip = (g.strip() for g in match.groups())
        event.user.name = clean(login or priv)
        if priv and priv != event.user.name:
            put(event, "db.account", priv)
        ip = f.get("ip", "") or ip
        host = f.get("host", "") or host
    else:
        event.user.name = clean(user_field)
        put(event, "db.account", f.get("priv_user"))
        ip, host = f.get("ip", ""), f.get("host", "")
    if not (ip and set_ip(event, ip)):
        put(event, "source.address", host or ip)
    put(event, "user.os", f.get("os_user") or f.get("os_login"))
    put(event, "user.proxy", f.get("proxy_user"))
    event.session_id = clean(f.get("connection_id", ""))
    put(event, "db.name", f.get("db"))
    put(event, "db.status", f.get("status"))
    put(event, "db.command", f.get("command_class"))
    put(event, "percona.record", f.get("record"))
    name = f.get("name", "")
    put(event, "percona.name", name)
    outcome = _status_outcome(f.get("status", ""))
    if name in ("Connect", "Change user"):
        failed = outcome == pb.OUTCOME_FAILURE
        set_action(event, "login.failed" if failed else "login", outcome)
    elif name == "Quit":
        set_action(event, "logout", pb.OUTCOME_SUCCESS)
    elif f.get("sqltext"):
        _apply_sql(event, f["sqltext"], outcome, f.get("db", ""))
    else:
        set_action(event, "db." + "_".join(name.lower().split()) if name else "", outcome)
    return event
