"""Action name → ECS event.category / event.type and audit.category. Pure, table driven.

Actions are compared after normalization ("Login Failed", "login_failed" and
"login.failed" are the same action). Unknown actions get no categories rather than a
guess; the collector's detections key on these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proto.v1 import audit_pb2 as pb


@dataclass(frozen=True, slots=True)
class Category:
    """What an action means for ECS and for the audit-class split."""

    event_category: tuple[str, ...]
    event_type: tuple[str, ...]
    audit_category: pb.AuditCategory.ValueType
    implied_outcome: pb.Outcome.ValueType = pb.OUTCOME_UNSPECIFIED


_SECURITY = pb.AUDIT_CATEGORY_SECURITY
_DATA = pb.AUDIT_CATEGORY_DATA_OPERATION
_ADMIN = pb.AUDIT_CATEGORY_SYSTEM_ADMIN

_EXACT: dict[str, Category] = {
    "login": Category(("authentication",), ("start",), _SECURITY),
    "logout": Category(("authentication",), ("end",), _SECURITY),
    "login.failed": Category(("authentication",), ("start",), _SECURITY, pb.OUTCOME_FAILURE),
    # ECS allows only access/change/info/error as types of the database category.
    "record.view": Category(("database",), ("access",), _DATA),
    "record.export": Category(("database",), ("access",), _DATA),
    "record.update": Category(("database",), ("change",), _DATA),
    "record.create": Category(("database",), ("change",), _DATA),
    "record.delete": Category(("database",), ("change",), _DATA),
    # Impersonation (Salesforce "Login As", MySQL proxy users): an admin acting as a user.
    "login.impersonation": Category(("authentication",), ("start",), _SECURITY),
    "connection.received": Category(("network",), ("connection", "start"), _SECURITY),
    # Database statements (pgaudit, server_audit, MySQL/Percona audit).
    "db.select": Category(("database",), ("access",), _DATA),
    "db.export": Category(("database",), ("access",), _DATA),
    "db.insert": Category(("database",), ("change",), _DATA),
    "db.update": Category(("database",), ("change",), _DATA),
    "db.delete": Category(("database",), ("change",), _DATA),
    "db.merge": Category(("database",), ("change",), _DATA),
    "db.truncate": Category(("database",), ("change",), _DATA),
    "db.import": Category(("database",), ("change",), _DATA),
    "db.table.read": Category(("database",), ("access",), _DATA),
    "db.table.write": Category(("database",), ("change",), _DATA),
    "db.grant": Category(("iam",), ("change", "group"), _ADMIN),
    "db.revoke": Category(("iam",), ("change", "group"), _ADMIN),
    "db.role.change": Category(("iam",), ("change", "user"), _ADMIN),
    "db.set.role": Category(("iam",), ("change", "user"), _SECURITY),
    "db.audit.config.change": Category(("configuration",), ("change",), _ADMIN),
    "db.error": Category(("database",), ("error",), _DATA, pb.OUTCOME_FAILURE),
}

# Prefix families: (prefix, category, audit category); the type comes from the verb.
_PREFIXES: tuple[tuple[str, str, pb.AuditCategory.ValueType], ...] = (
    ("role.", "iam", _ADMIN),
    ("permission.", "iam", _ADMIN),
    ("settings.", "configuration", _ADMIN),
    ("user.", "iam", _ADMIN),
    # Schema changes (DDL) and table-level audit events of other kinds.
    ("db.create.", "database", _ADMIN),
    ("db.alter.", "database", _ADMIN),
    ("db.drop.", "database", _ADMIN),
    ("db.table.", "database", _ADMIN),
)
_VERB_TYPES = {"create": "creation", "delete": "deletion", "view": "info", "list": "info"}


AUDIT_CATEGORY_NAMES: dict[str, pb.AuditCategory.ValueType] = {
    "security": _SECURITY,
    "data_operation": _DATA,
    "system_admin": _ADMIN,
}
# ECS 8 allowed values (a per-source action may only use these).
ECS_CATEGORIES = frozenset(
    [
        "api",
        "authentication",
        "configuration",
        "database",
        "driver",
        "email",
        "file",
        "host",
        "iam",
        "intrusion_detection",
        "library",
        "malware",
        "network",
        "package",
        "process",
        "registry",
        "session",
        "threat",
        "vulnerability",
        "web",
    ]
)
ECS_TYPES = frozenset(
    [
        "access",
        "admin",
        "allowed",
        "change",
        "connection",
        "creation",
        "deletion",
        "denied",
        "end",
        "error",
        "group",
        "indicator",
        "info",
        "installation",
        "protocol",
        "start",
        "user",
    ]
)


@dataclass(frozen=True, slots=True)
class VocabularyRow:
    """One line of the documented vocabulary: an exact action or a prefix family."""

    action: str  # "role.*" for a family
    event_category: tuple[str, ...]
    event_type: tuple[str, ...]
    audit_category: str
    implied_outcome: str


def vocabulary() -> list[VocabularyRow]:
    """The built-in vocabulary as documented (docs/mapping.md is generated from this)."""
    audit = {value: name for name, value in AUDIT_CATEGORY_NAMES.items()}
    outcome = {pb.OUTCOME_FAILURE: "failure", pb.OUTCOME_SUCCESS: "success"}
    rows = [
        VocabularyRow(
            name,
            c.event_category,
            c.event_type,
            audit[c.audit_category],
            outcome.get(c.implied_outcome, ""),
        )
        for name, c in _EXACT.items()
    ]
    for prefix, category, audit_category in _PREFIXES:
        types = ("change",) if category == "database" else _family_types()
        rows.append(VocabularyRow(f"{prefix}*", (category,), types, audit[audit_category], ""))
    return rows


def _family_types() -> tuple[str, ...]:
    return ("change", *sorted(set(_VERB_TYPES.values())))


def is_known(action: str) -> bool:
    """Whether `action` is in the built-in vocabulary (exactly or by family)."""
    return categorize(action) is not None


def normalize_action(action: str) -> str:
    """Lower-case, with runs of spaces, dashes and underscores turned into dots."""
    return re.sub(r"[\s_\-]+", ".", action.strip().lower())


def categorize(action: str) -> Category | None:
    """The categories of `action`, or None when the table does not know it."""
    key = normalize_action(action)
    if key in _EXACT:
        return _EXACT[key]
    for prefix, category, audit in _PREFIXES:
        if key.startswith(prefix):
            if category == "database":
                return Category((category,), ("change",), audit)
            verb = key.rsplit(".", 1)[-1]
            return Category((category,), (_VERB_TYPES.get(verb, "change"),), audit)
    return None
