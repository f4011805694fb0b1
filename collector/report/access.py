"""Access review: privileged changes, impersonated actions, exporters and export
volumes, failed logins.

Privileged changes are everything the agents classify as ``audit.category:
system_admin`` (CRM role and permission changes, settings, user management, schema
changes) plus the database actions that change who may do what or what is audited,
whatever their category: ``db.grant``, ``db.revoke``, ``db.role_change``,
``db.audit_config_change``. Each shows the user acted upon and the role granted
(``user.target.*``) and the tenant (``organization.*``) where the source gives them.

Impersonated actions are those done as another user (ECS ``user.effective.*`` present:
sources map it only when someone acts on behalf of someone else) and the starts of
impersonation sessions (``login.impersonation``). The Dashboards saved search
"Impersonation / acting on behalf" applies the same definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from collector.lifecycle import events_index_pattern
from collector.report.query import Period, Queries, bool_filter, time_range

PRIVILEGED_DB_ACTIONS = ("db.grant", "db.revoke", "db.role_change", "db.audit_config_change")
EXPORT_ACTIONS = ("record.export", "db.export")
TOP = 10
# Counting documents needs no field: the doc_count of a match_all filter bucket.
# (value_count on ``_id`` needs fielddata on ``_id``, deprecated in OpenSearch.)
_DOCUMENTS: dict[str, Any] = {"filter": {"match_all": {}}}


def privileged_query() -> dict[str, Any]:
    return {
        "bool": {
            "should": [
                {"term": {"audit.category": "system_admin"}},
                {"terms": {"event.action": list(PRIVILEGED_DB_ACTIONS)}},
            ],
            "minimum_should_match": 1,
        }
    }


IMPERSONATION_ACTIONS = ("login.impersonation",)


def impersonation_query() -> dict[str, Any]:
    # Presence, not comparison: comparing two fields needs a script, which clusters
    # without the painless module (or with scripting disabled) refuse. A source maps
    # user.effective only when the user acted as someone else.
    return {
        "bool": {
            "should": [
                {"exists": {"field": "user.effective.name"}},
                {"exists": {"field": "user.effective.id"}},
                {"terms": {"event.action": list(IMPERSONATION_ACTIONS)}},
            ],
            "minimum_should_match": 1,
        }
    }


def export_query() -> dict[str, Any]:
    return {"terms": {"event.action": list(EXPORT_ACTIONS)}}


def failed_login_query() -> dict[str, Any]:
    return bool_filter(
        {"term": {"event.category": "authentication"}}, {"term": {"event.outcome": "failure"}}
    )


@dataclass(frozen=True)
class Change:
    """One privileged change as shown in the table."""

    id: str
    time: str
    user: str
    action: str
    outcome: str
    target: str
    changes: str
    where: str
    target_user: str = ""  # user.target: the user acted upon
    granted: str = ""  # user.target.roles: the role(s) granted or set
    organization: str = ""


@dataclass(frozen=True)
class Impersonation:
    """One action done as another user, or the start of an impersonation session."""

    id: str
    time: str
    user: str  # who really acted
    acting_as: str  # user.effective
    action: str
    outcome: str
    target: str
    organization: str


@dataclass
class Access:
    """Everything the access-review section shows."""

    changes: list[Change]
    changes_total: int
    changes_by_action: list[tuple[str, int]]
    exporters: list[tuple[str, int, int]]  # user, exports, records
    exports_total: int
    records_total: int
    export_days: list[int]  # records exported per day
    failed_days: list[int]
    failed_total: int
    failed_users: list[tuple[str, int]]
    failed_ips: list[tuple[str, int]]
    days: list[datetime] = field(default_factory=list)
    impersonations: list[Impersonation] = field(default_factory=list)
    impersonations_total: int = 0


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _who(user: Any) -> str:
    """A user object's name, else its id, else its email ("" when none)."""
    if not isinstance(user, dict):
        return ""
    return _text(user.get("name") or user.get("id") or user.get("email"))


def _actor(user: dict[str, Any]) -> str:
    """Who acted, and as whom when acting on behalf of someone else."""
    who = _who(user) or "(unknown)"
    effective = _who(user.get("effective"))
    return f"{who} as {effective}" if effective and effective.lower() != who.lower() else who


def _organization(src: dict[str, Any]) -> str:
    org = src.get("organization", {})
    ident, name = _text(org.get("id")), _text(org.get("name"))
    return f"{name} ({ident})" if name and ident and name != ident else name or ident


def _object(src: dict[str, Any]) -> str:
    obj = src.get("crm", {}).get("object", {})
    return " ".join(
        part
        for part in (_text(obj.get("type")), _text(obj.get("id")), _text(obj.get("name")))
        if part
    )


def _impersonation(hit: dict[str, Any]) -> Impersonation:
    src = hit["_source"]
    user = src.get("user", {})
    return Impersonation(
        id=str(hit["_id"]),
        time=str(src.get("@timestamp", "")),
        user=_who(user) or "(unknown)",
        acting_as=_who(user.get("effective")),
        action=_text(src.get("event", {}).get("action")),
        outcome=_text(src.get("event", {}).get("outcome")),
        target=_object(src) or _text(src.get("message"))[:120],
        organization=_organization(src),
    )


def _change(hit: dict[str, Any]) -> Change:
    src = hit["_source"]
    target = _object(src)
    changes = "; ".join(
        f"{c.get('field', '?')}: {c.get('old', '')} \u2192 {c.get('new', '')}"
        for c in src.get("crm", {}).get("changes", []) or []
    )
    user = src.get("user", {})
    acted_on = user.get("target", {})
    where = "/".join(
        p
        for p in (
            _text(src.get("agent", {}).get("id")),
            _text(src.get("crm", {}).get("source", {}).get("name")),
        )
        if p
    )
    return Change(
        id=str(hit["_id"]),
        time=str(src.get("@timestamp", "")),
        user=_actor(user),
        action=_text(src.get("event", {}).get("action")),
        outcome=_text(src.get("event", {}).get("outcome")),
        target=target or _text(src.get("message"))[:120],
        changes=changes,
        where=where,
        target_user=_who(acted_on),
        granted=_text(acted_on.get("roles")) if isinstance(acted_on, dict) else "",
        organization=_organization(src),
    )


class AccessReader:
    """Builds `Access` from OpenSearch."""

    def __init__(self, queries: Queries, prefix: str, period: Period, *, max_rows: int) -> None:
        self.q = queries
        self.events = events_index_pattern(prefix)
        self.period = period
        self.max_rows = max_rows

    def _in_period(self, query: dict[str, Any]) -> dict[str, Any]:
        return bool_filter(query, time_range(self.period.start, self.period.end))

    def _per_day(self, aggs: dict[str, Any], metric: str | None) -> list[int]:
        index = {int(day.timestamp() * 1000): i for i, day in enumerate(self.period.days)}
        out = [0] * len(index)
        for bucket in aggs.get("days", {}).get("buckets", []):
            i = index.get(int(bucket["key"]))
            if i is not None:
                out[i] = int(bucket[metric]["value"] or 0) if metric else int(bucket["doc_count"])
        return out

    @staticmethod
    def _days(sub: dict[str, Any] | None = None) -> dict[str, Any]:
        hist: dict[str, Any] = {
            "date_histogram": {
                "field": "@timestamp",
                "calendar_interval": "day",
                "time_zone": "UTC",
                "min_doc_count": 0,
            }
        }
        if sub:
            hist["aggs"] = sub
        return hist

    def read(self) -> Access:
        priv = self._in_period(privileged_query())
        found = self.q.search(
            self.events,
            {
                "size": self.max_rows,
                "track_total_hits": True,
                "query": priv,
                "sort": [{"@timestamp": "asc"}, {"agent.id": "asc"}, {"event.sequence": "asc"}],
                "aggs": {"actions": {"terms": {"field": "event.action", "size": 50}}},
            },
        )
        changes = [_change(h) for h in found["hits"]["hits"]]
        by_action = [
            (str(b["key"]), int(b["doc_count"]))
            for b in found.get("aggregations", {}).get("actions", {}).get("buckets", [])
        ]
        acting = self.q.search(
            self.events,
            {
                "size": self.max_rows,
                "track_total_hits": True,
                "query": self._in_period(impersonation_query()),
                "sort": [{"@timestamp": "asc"}, {"agent.id": "asc"}, {"event.sequence": "asc"}],
            },
        )
        records = {"records": {"sum": {"field": "crm.record_count"}}}
        exp = self.q.aggs(
            self.events,
            self._in_period(export_query()),
            {
                "users": {
                    "terms": {
                        "field": "user.name",
                        "size": TOP,
                        "missing": "(unknown)",
                        "order": {"records": "desc"},
                    },
                    "aggs": records,
                },
                "records": records["records"],
                "count": _DOCUMENTS,
                "days": self._days(records),
            },
        )
        exporters = [
            (str(b["key"]), int(b["doc_count"]), int(b["records"]["value"] or 0))
            for b in exp.get("users", {}).get("buckets", [])
        ]
        fail = self.q.aggs(
            self.events,
            self._in_period(failed_login_query()),
            {
                "count": _DOCUMENTS,
                "users": {"terms": {"field": "user.name", "size": TOP, "missing": "(unknown)"}},
                "ips": {"terms": {"field": "source.ip", "size": TOP}},
                "days": self._days(),
            },
        )
        return Access(
            changes=changes,
            changes_total=int(found["hits"]["total"]["value"]),
            changes_by_action=by_action,
            exporters=exporters,
            exports_total=int(exp.get("count", {}).get("doc_count", 0)),
            records_total=int(exp.get("records", {}).get("value") or 0),
            export_days=self._per_day(exp, "records"),
            failed_days=self._per_day(fail, None),
            failed_total=int(fail.get("count", {}).get("doc_count", 0)),
            failed_users=[
                (str(b["key"]), int(b["doc_count"]))
                for b in fail.get("users", {}).get("buckets", [])
            ],
            failed_ips=[
                (str(b.get("key_as_string", b["key"])), int(b["doc_count"]))
                for b in fail.get("ips", {}).get("buckets", [])
            ],
            days=self.period.days,
            impersonations=[_impersonation(h) for h in acting["hits"]["hits"]],
            impersonations_total=int(acting["hits"]["total"]["value"]),
        )
