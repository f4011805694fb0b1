"""The Helvetia CRM source and rules files, made concrete for one generated log, and what
the normalized document of each log line must say (an oracle written from the log's
own documentation, independent of the mapping implementation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.foreign_crm.generator import ForeignLog

HERE = Path(__file__).resolve().parent
SOURCE_FILE = HERE / "agent-source.yaml"
RULES_FILE = HERE / "rules.yaml"

# The source's `actions:` table, as the oracle reads it.
CANONICAL = {
    "auth.login": "login",
    "auth.login_failed": "login.failed",
    "auth.logout": "logout",
    "record.read": "record.view",
    "contact.create": "record.create",
    "contact.update": "record.update",
    "account.update": "record.update",
    "report.export": "record.export",
    "user.role_change": "role.grant",
    "admin.audit_settings": "settings.update",
    "session.impersonate": "login.impersonation",
}
OBJECT_TYPES = {
    "Contact": "customer",
    "Account": "customer",
    "Report": "report",
    "User": "user",
    "Setting": "settings",
}


def source_section(paths: list[str]) -> dict[str, Any]:
    """The `sources:` entry of agent-source.yaml reading `paths`."""
    loaded = yaml.safe_load(SOURCE_FILE.read_text(encoding="utf-8"))
    source: dict[str, Any] = loaded["sources"][0]
    source["paths"] = paths
    return source


def agent_yaml(head: str, paths: list[str], start_at: str = "beginning") -> str:
    """An agent.yaml: `head` (agent id, collector, TLS) plus the Helvetia source."""
    source = source_section(paths) | {"start_at": start_at, "poll_interval_s": 0.1}
    return head + yaml.safe_dump({"sources": [source]}, allow_unicode=True, sort_keys=False)


def rules_yaml(log: ForeignLog) -> str:
    """rules.yaml with the calendars in the zones where `log` is business time at the head
    office and 03:xx for the branch login."""
    rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    rules["calendars"]["head-office"]["timezone"] = log.office_tz
    rules["calendars"]["apac-branch"]["timezone"] = log.branch_tz
    return yaml.safe_dump(rules, allow_unicode=True, sort_keys=False)


def expected_document(record: dict[str, Any]) -> dict[str, Any]:
    """Document fields (dotted) the log record must give, nulls left out."""
    op, result = record["op"], record["result"]
    if op == "auth.login" and result in ("denied", "error"):
        op = "auth.login_failed"
    out: dict[str, Any] = {
        "event.action": CANONICAL[op],
        "event.outcome": "success" if result == "ok" else "failure",
        "organization.id": record["tenant"]["id"],
        "organization.name": record["tenant"]["name"],
        "user.id": record["actor"]["id"],
        "user.name": record["actor"]["login"],
        "user.roles": record["actor"]["roles"],
        "source.ip": record["actor"]["ip"],
        "crm.device.id": record["client"]["device"],
        "user_agent.original": record["client"]["ua"],
        "crm.session.id": record["session"],
    }
    entity = record.get("entity")
    if entity:
        out["crm.object.type"] = OBJECT_TYPES[entity["kind"]]
        out["crm.object.id"] = entity["id"]
        out["crm.object.name"] = entity["label"]
    if "changes" in record:
        out["crm.changes"] = [
            {"field": c["attr"]}
            | ({"old": c["from"]} if c["from"] is not None else {})
            | ({"new": c["to"]} if c["to"] is not None else {})
            for c in record["changes"]
        ]
    if "report" in record:
        out["crm.record_count"] = record["report"]["rows"]
    if "on_behalf_of" in record:
        out["user.effective.id"] = record["on_behalf_of"]["id"]
        out["user.effective.name"] = record["on_behalf_of"]["login"]
    if "subject" in record:
        out["user.target.id"] = record["subject"]["id"]
        out["user.target.name"] = record["subject"]["login"]
        out["user.target.roles"] = [record["details"]["granted_role"]]
    if "reason" in record:
        out["message"] = record["reason"]
    return out


def dotted(document: dict[str, Any], name: str) -> Any:
    """The value at dotted `name` of a nested document (None when absent)."""
    value: Any = document
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def differences(document: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """How `document` differs from what `record` must give (empty: faithful)."""
    problems = []
    for name, want in expected_document(record).items():
        got = dotted(document, name)
        # Roles and target roles may be a scalar when there is one.
        if isinstance(want, list) and not isinstance(got, list) and got is not None:
            got = [got]
        if got != want:
            problems.append(f"{name}: {got!r} != {want!r}")
    return problems
