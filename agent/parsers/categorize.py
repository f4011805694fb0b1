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
