"""Salesforce audit data → AuditEvent. Pure.

`salesforce_elf`: Event Monitoring EventLogFile CSV. The column order is the file's own
(its header line; see `HeaderCsvFramer`, which hands the parser `header\\nrow`;
`original` is the row alone). `TIMESTAMP` is `yyyyMMddHHmmss.SSS` in UTC
(`TIMESTAMP_DERIVED`, ISO 8601, wins when present); `CLIENT_IP` may be the text
`Salesforce.com IP` (kept as `source.address`; `SOURCE_IP` then gives the address).

`salesforce_json`: one JSON object per line — an ELF row converted to JSON (same
meaning as above), a SetupAuditTrail record (`Action`, `Section`, `Display`,
`DelegateUser`), or a field history record (`AccountHistory`, `ContactHistory`, … with
`Field`, `OldValue`, `NewValue`).

Event types: Login (`LOGIN_STATUS` ≠ LOGIN_NO_ERROR → login.failed), LoginAs
(login.impersonation; `DELEGATED_USER_*` is the admin doing it, kept as
`impersonator.*` attributes), Logout, Report / ReportExport (record.view /
record.export of a report), API / RestApi (by method: record.view / create / update /
delete, `ROWS_PROCESSED` → record_count), BulkApi (query → record.export, otherwise
the write), any other type → `salesforce.<type>`. No options beyond `privacy`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

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
    start_event,
)
from agent.parsers.csvtext import split_csv
from agent.parsers.framing import Framer, HeaderCsvFramer
from agent.parsers.options import FormatOptions
from agent.parsers.timestamps import TimestampError, parse_iso8601
from proto.v1 import audit_pb2 as pb

ELF = "salesforce_elf"
JSON = "salesforce_json"
FIELDS: frozenset[str] = frozenset()

_COLUMN = re.compile(r"[A-Z][A-Z0-9_]*")
_READ_METHODS = {"query", "queryall", "querymore", "retrieve", "search", "get", "describe"}
_CREATE_METHODS = {"create", "post", "insert"}
_UPDATE_METHODS = {"update", "upsert", "patch", "put", "merge"}
_DELETE_METHODS = {"delete", "harddelete", "undelete"}
_FAILED_STATUS = {"F", "U", "A", "N"}  # failure, unauthorized, authorization error, not found
_PERMISSION = re.compile(r"perm|profile|role|sharing|access|grant", re.IGNORECASE)
_USERS = re.compile(r"user|password|login|freez", re.IGNORECASE)


def is_header(data: bytes) -> bool:
    """A header record: only column names, one of them EVENT_TYPE."""
    if b"\n" in data or b"EVENT_TYPE" not in data:
        return False
    try:
        values, ok = split_csv(data.decode("ascii"))
    except UnicodeDecodeError:
        return False
    return ok and "EVENT_TYPE" in values and all(_COLUMN.fullmatch(v) for v in values)


def make_elf_parser(_mapping: Mapping[str, str], _options: FormatOptions) -> ParseFn:
    return parse_elf


def make_elf_framer(_options: FormatOptions) -> Framer:
    return HeaderCsvFramer(is_header)


def make_json_parser(_mapping: Mapping[str, str], _options: FormatOptions) -> ParseFn:
    return parse_json


def parse_elf(data: bytes) -> pb.AuditEvent | None:
    """`header\\nrow` (or a bare row, which can only be reported) → one event."""
    if not data.strip():
        return None
    head, sep, row = data.partition(b"\n")
    if not sep or not is_header(head):
        event, _ = start_event(data)
        if is_header(data):
            return None  # a header alone: no event
        return parse_error(event, "EventLogFile row without a header line before it")
    event, _ = start_event(data, original=row)
    columns, _ = split_csv(head.decode("ascii"))
    values, ok = split_csv(row.decode("utf-8", "replace").rstrip("\r"))
    if not ok:
        flag(event, "unbalanced_quotes")
    if len(values) != len(columns):
        return parse_error(event, f"{len(values)} fields for {len(columns)} header columns")
    return _elf(event, dict(zip(columns, values, strict=True)))


def parse_json(data: bytes) -> pb.AuditEvent | None:
    """An ELF row as JSON, a SetupAuditTrail record or a field history record."""
    if not data.strip():
        return None
    event, text = start_event(data)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return parse_error(event, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return parse_error(event, "expected a JSON object")
    kind = _str(_nested(obj, "attributes", "type"))
    if "EVENT_TYPE" in obj:
        return _elf(event, {k: _str(v) for k, v in obj.items()})
    if kind == "SetupAuditTrail" or ("Section" in obj and "Action" in obj):
        return _setup_audit(event, obj)
    if kind.endswith("History") or ("Field" in obj and ("OldValue" in obj or "NewValue" in obj)):
        return _field_history(event, obj, kind)
    return parse_error(event, "not an EventLogFile row, SetupAuditTrail or history record")


def _str(value: Any) -> str:
    if value is None:
        return ""
    return clean(value if isinstance(value, str) else json.dumps(value))


def _nested(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _sf_time(event: pb.AuditEvent, derived: str, stamp: str) -> None:
    if derived:
        try:
            event.time_unix_nano = parse_iso8601(derived)
            return
        except TimestampError:
            pass
    match = re.fullmatch(r"(\d{14})(?:\.(\d{1,9}))?", stamp.strip())
    if match is None:
        if stamp or derived:
            flag(event, "invalid_timestamp")
            put(event, "salesforce.timestamp", stamp or derived)
        return
    try:
        moment = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        flag(event, "invalid_timestamp")
        put(event, "salesforce.timestamp", stamp)
        return
    # "20211019050707.13" means .13 s, i.e. 130 ms.
    nanos = int((match.group(2) or "0").ljust(9, "0"))
    event.time_unix_nano = local_to_nanos(moment, dt.UTC, nanos)


def _elf(event: pb.AuditEvent, row: dict[str, str]) -> pb.AuditEvent:
    consumed = {"EVENT_TYPE", "TIMESTAMP", "TIMESTAMP_DERIVED", "USER_ID", "USER_ID_DERIVED"}
    consumed |= {"USER_NAME", "CLIENT_IP", "SOURCE_IP", "BROWSER_TYPE", "USER_AGENT"}
    consumed |= {"SESSION_KEY"}

    def take(key: str) -> str:
        consumed.add(key)
        return row.get(key, "")

    kind = row.get("EVENT_TYPE", "")
    _sf_time(event, row.get("TIMESTAMP_DERIVED", ""), row.get("TIMESTAMP", ""))
    event.user.id = clean(row.get("USER_ID_DERIVED") or row.get("USER_ID", ""))
    event.user.name = clean(row.get("USER_NAME", ""))
    event.session_id = clean(row.get("SESSION_KEY", ""))
    event.source.user_agent = clean(row.get("BROWSER_TYPE") or row.get("USER_AGENT", ""))
    client, source_ip = row.get("CLIENT_IP", ""), row.get("SOURCE_IP", "")
    if not (source_ip and set_ip(event, source_ip)) and not (client and set_ip(event, client)):
        put(event, "source.address", client or source_ip)
    elif client and client != event.source.ip:
        put(event, "source.address", client)
    status = row.get("REQUEST_STATUS", "")
    outcome = pb.OUTCOME_UNSPECIFIED
    if status == "S":
        outcome = pb.OUTCOME_SUCCESS
    elif status in _FAILED_STATUS:
        outcome = pb.OUTCOME_FAILURE
    rows = ""
    if kind == "Login":
        login_status = take("LOGIN_STATUS")
        ok = login_status in ("LOGIN_NO_ERROR", "")
        set_action(event, "login" if ok else "login.failed")
        event.outcome = pb.OUTCOME_SUCCESS if ok else pb.OUTCOME_FAILURE
        put(event, "salesforce.login_status", login_status)
    elif kind == "LoginAs":
        set_action(event, "login.impersonation", outcome)
        put(
            event, "impersonator.id", take("DELEGATED_USER_ID_DERIVED") or take("DELEGATED_USER_ID")
        )
        put(event, "impersonator.name", take("DELEGATED_USER_NAME"))
    elif kind == "Logout":
        set_action(event, "logout", pb.OUTCOME_SUCCESS)
    elif kind in ("ReportExport", "Report"):
        set_action(event, "record.export" if kind == "ReportExport" else "record.view", outcome)
        event.object.type = "report"
        event.object.id = clean(take("REPORT_ID_DERIVED") or take("REPORT_ID") or take("URI"))
        event.object.name = clean(take("REPORT_DESCRIPTION"))
        rows = take("ROW_COUNT")
    elif kind in ("API", "RestApi", "ApexSoap", "ApexRestApi"):
        method = take("METHOD_NAME") or take("METHOD")
        set_action(event, _method_action(method), outcome)
        entity = take("ENTITY_NAME") or take("ENTITY")
        if entity:
            event.object.type = clean(entity)
        rows = take("ROWS_PROCESSED")
        status_code = take("STATUS_CODE")
        if status_code.isdecimal() and outcome == pb.OUTCOME_UNSPECIFIED:
            event.outcome = pb.OUTCOME_SUCCESS if int(status_code) < 400 else pb.OUTCOME_FAILURE
        put(event, "salesforce.method", method)
        put(event, "salesforce.status_code", status_code)
    elif kind in ("BulkApi", "BulkApi2"):
        operation = take("OPERATION_TYPE")
        op = operation.lower()
        action = "record.export" if op.startswith("query") else _method_action(op)
        failures = take("NUMBER_FAILURES")
        if outcome == pb.OUTCOME_UNSPECIFIED and failures.isdecimal():
            outcome = pb.OUTCOME_FAILURE if int(failures) > 0 else pb.OUTCOME_SUCCESS
        set_action(event, action, outcome)
        event.object.type = clean(take("ENTITY_TYPE"))
        event.object.id = clean(take("JOB_ID"))
        rows = take("ROWS_PROCESSED")
        put(event, "salesforce.operation", operation)
        put(event, "salesforce.number_failures", failures)
    else:
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", kind).lower()
        set_action(event, f"salesforce.{name}" if name else "", outcome)
    if rows:
        set_count(event, rows.split(".")[0])
    put(event, "salesforce.event_type", kind)
    for key, value in row.items():
        if key not in consumed and value:
            put(event, f"salesforce.{key.lower()}", value)
    return event


def _method_action(method: str) -> str:
    m = method.lower()
    if m in _READ_METHODS:
        return "record.view"
    if m in _CREATE_METHODS:
        return "record.create"
    if m in _UPDATE_METHODS:
        return "record.update"
    if m in _DELETE_METHODS:
        return "record.delete"
    return "api.call"


def _setup_audit(event: pb.AuditEvent, obj: dict[str, Any]) -> pb.AuditEvent:
    action, section = _str(obj.get("Action")), _str(obj.get("Section"))
    _sf_time(event, _str(obj.get("CreatedDate")), "")
    event.user.id = _str(obj.get("CreatedById"))
    event.user.name = _str(
        _nested(obj, "CreatedBy", "Username") or _nested(obj, "CreatedBy", "Name")
    )
    if _PERMISSION.search(action) or _PERMISSION.search(section):
        kind = "permission.change"
    elif _USERS.search(action) or "user" in section.lower():
        kind = "user.change"
    else:
        kind = "settings.change"
    set_action(event, kind, pb.OUTCOME_SUCCESS)
    event.object.type = "setup"
    event.object.id = _str(obj.get("Id"))
    event.object.name = section
    event.message = _str(obj.get("Display"))
    put(event, "salesforce.action", action)
    put(event, "impersonator.name", _str(obj.get("DelegateUser")))
    for key in ("CreatedByContext", "CreatedByIssuer", "ResponsibleNamespacePrefix"):
        put(event, f"salesforce.{key}", _str(obj.get(key)))
    return event


def _field_history(event: pb.AuditEvent, obj: dict[str, Any], kind: str) -> pb.AuditEvent:
    entity = kind.removesuffix("History") or "record"
    _sf_time(event, _str(obj.get("CreatedDate")), "")
    event.user.id = _str(obj.get("CreatedById"))
    event.user.name = _str(
        _nested(obj, "CreatedBy", "Username") or _nested(obj, "CreatedBy", "Name")
    )
    event.object.type = clean(entity.removesuffix("__").lower())
    event.object.id = _str(obj.get("ParentId") or obj.get(f"{entity}Id"))
    field = _str(obj.get("Field"))
    if field.lower() == "created":
        set_action(event, "record.create", pb.OUTCOME_SUCCESS)
    elif field.lower() == "deleted":
        set_action(event, "record.delete", pb.OUTCOME_SUCCESS)
    else:
        set_action(event, "record.update", pb.OUTCOME_SUCCESS)
        change = event.changes.add(field=field)
        if "OldValue" in obj:
            change.old_value = _str(obj.get("OldValue"))
        if "NewValue" in obj:
            change.new_value = _str(obj.get("NewValue"))
    put(event, "salesforce.history_id", _str(obj.get("Id")))
    put(event, "salesforce.data_type", _str(obj.get("DataType")))
    return event
