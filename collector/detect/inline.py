"""Per-event rules, evaluated on each indexed batch. Pure: documents + small state in.

Kinds: ``bulk_export`` (one export of at least `threshold` records), ``off_hours_login``
(a successful login outside the business hours of the user's group), ``privilege_change``
(role/permission grants, ``db.grant``, ``db.role_change``) and ``audit_tampering``
(CRM audit settings turned off, or changed with ``mode: any``; every
``db.audit_config_change``), and the generic ``match`` (every event meeting all of the
rule's ``where`` conditions). Rules see the event's own time (``@timestamp``: business
hours are those of the moment the user logged in, however late the record arrives).
Each matching event is a candidate alert keyed by the rule's key; the alerts already
raised for that key around the event's time (the caller's `History`) drop those within
the rule's suppression period of one of them, before or after (a backlog arriving
after newer alerts is judged by its own time), and so does another candidate of the
same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from collector.detect.alerts import Alert, Event, key_of
from collector.detect.conditions import fields_named, matches, values_at
from collector.detect.rules import Rule, RuleSet
from collector.detect.windowed import Prior, Suppressor

# Values that switch an audit setting off.
DISABLING = frozenset({"disabled", "disable", "off", "false", "no", "none", "0", ""})

#: (rule id, keys, gte, lte) -> {key: alerts of that rule and key triggered in [gte, lte]}
History = Callable[[str, Sequence[str], int, int], Mapping[str, Sequence[Prior]]]


def _changes(event: Event) -> list[Mapping[str, Any]]:
    value = event.get("crm.changes")
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def _generic(rule: Rule, event: Event) -> tuple[str, dict[str, Any]] | None:
    if rule.allow.allows_event(event) or not matches(rule.conditions, event.doc):
        return None
    user = event.text("user.name") or event.text("user.id") or "?"
    action = event.text("event.action") or "event"
    named = fields_named(rule.conditions)
    evidence = {name: values[0] if len(values) == 1 else values
                for name in named if (values := values_at(event.doc, name))}  # fmt: skip
    return f"{action} by {user} matched {rule.id}", {"fields": evidence}


def _match(rules: RuleSet, rule: Rule, event: Event) -> tuple[str, dict[str, Any]] | None:
    """(reason, evidence) when `event` matches `rule`, else None."""
    if rule.kind == "match":
        return _generic(rule, event)
    action = event.text("event.action") or ""
    if action not in (rule.actions or ()) or rule.allow.allows_event(event):
        return None
    user = event.text("user.name") or event.text("user.id") or "?"
    if rule.kind == "bulk_export":
        count = event.get("crm.record_count")
        if not isinstance(count, int) or count < rule.limit:
            return None
        return (
            f"{user} exported {count} records in one export (threshold {rule.limit:g})",
            {"record_count": count, "object_id": event.text("crm.object.id")},
        )
    if rule.kind == "off_hours_login":
        if event.text("event.outcome") != "success":
            return None
        roles = [str(r) for r in (event.get("user.roles") or [])]
        calendar = rules.calendar_for(rule, roles)
        if calendar is None or calendar.is_business_time(event.ts):
            return None
        return (
            f"{user} logged in outside business hours ({calendar.timezone}, "
            f"{','.join(calendar.days)} {calendar.start}-{calendar.end})",
            {"source_ip": event.text("source.ip"), "roles": roles, "timezone": calendar.timezone},
        )
    if rule.kind == "privilege_change":
        if event.text("event.outcome") == "failure":
            return None
        target = event.text("crm.object.name") or event.text("crm.object.id") or ""
        changes = [dict(c) for c in _changes(event)]
        if rule.privileged_roles and not action.startswith("db."):
            granted = {
                part.strip()
                for c in changes
                for part in str(c.get("new", "")).replace(";", ",").split(",")
            }
            if not granted & set(rule.privileged_roles):
                return None
        return (
            f"{user}: {action}" + (f" on {target}" if target else ""),
            {"action": action, "target": target, "changes": changes},
        )
    if rule.kind == "audit_tampering":
        if action.startswith("db."):
            return (
                f"{user} changed the database audit configuration ({action})",
                {"action": action, "message": event.text("message")},
            )
        prefixes = tuple(rule.field_list)
        touched = [
            dict(c)
            for c in _changes(event)
            if str(c.get("field", "")).startswith(prefixes)
            and (rule.mode == "any" or str(c.get("new", "")).strip().lower() in DISABLING)
        ]
        if not touched:
            return None
        names = ", ".join(str(c.get("field")) for c in touched)
        verb = "changed" if rule.mode == "any" else "disabled"
        return f"{user} {verb} audit setting(s) {names}", {"changes": touched}
    return None


def evaluate(rules: RuleSet, events: Iterable[Event], history: History) -> list[Alert]:
    """Alerts of the inline rules for `events`, suppression applied (module docstring)."""
    ordered = sorted(events, key=lambda e: (e.ts, e.id))
    # Every kind but `match` looks only at events of its actions: read each event's
    # action once, and give such a rule only those events (in the same order).
    actions = [event.text("event.action") or "" for event in ordered]
    alerts: list[Alert] = []
    for rule in rules.enabled():
        if not rule.inline:
            continue
        found: list[tuple[str, Event, str, dict[str, Any]]] = []
        key_fields = rule.key_fields
        if rule.kind == "match":
            candidates = ordered
        else:
            wanted = frozenset(rule.actions or ())
            candidates = [e for e, action in zip(ordered, actions, strict=True) if action in wanted]
        for event in candidates:
            hit = _match(rules, rule, event)
            if hit is None:
                continue
            key = key_of(event, key_fields)
            if key is not None:
                found.append((key, event, *hit))
        if not found:
            continue
        keys = sorted({k for k, *_ in found})
        reach = rule.suppression_ns
        stored = history(rule.id, keys, found[0][1].ts - reach, found[-1][1].ts + reach)
        seen = {k: Suppressor(rule, stored.get(k, ()), spans=False) for k in keys}
        for key, event, reason, evidence in found:
            # Suppression 0: every event alerts (its own id keeps repeats out).
            if seen[key].blocks(event.ts):
                continue
            seen[key].add(event.ts, event.ts)
            alerts.append(
                Alert(
                    rule_id=rule.id,
                    rule_kind=rule.kind,
                    description=rule.description,
                    severity=rule.severity,
                    key=key,
                    key_fields=tuple(rule.key_fields),
                    start=event.ts,
                    trigger=event.ts,
                    trigger_id=event.id,
                    event_ids=(event.id,),
                    reason=reason,
                    evidence=evidence,
                    agent_id=event.text("agent.id") or "",
                    lag=event.lag,
                )
            )
    return alerts
