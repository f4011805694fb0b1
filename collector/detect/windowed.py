"""Windowed rules over one key's events. Pure: sorted events + the last alert in, alerts out.

An incident is anchored at its *trigger*: the first event at which the rule's condition
holds over the window ending there (``(t - window, t]``). After an alert with trigger
``T`` for a key, events up to ``T`` never count again and the next trigger must be at or
after ``T + suppression``: one alert per incident, however often the overlapping
evaluations run, and the same trigger (hence the same alert ``_id``) on every collector.
Only triggers at or after ``range_from`` are reported (earlier ones were evaluated before).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.detect.alerts import Alert, Event
from collector.detect.rules import Rule


def is_failure(event: Event) -> bool:
    return event.text("event.outcome") == "failure"


def changed_fields(event: Event, wanted: Iterable[str]) -> list[str]:
    names = set(wanted)
    changes = event.get("crm.changes")
    if not isinstance(changes, list):
        return []
    return [
        str(c.get("field")) for c in changes if isinstance(c, Mapping) and c.get("field") in names
    ]


def _distinct(field: str) -> Callable[[Sequence[Event]], tuple[float, dict[str, Any]]]:
    def measure(window: Sequence[Event]) -> tuple[float, dict[str, Any]]:
        values = sorted({v for e in window if (v := e.text(field))})
        return len(values), {f"distinct_{field}": values}

    return measure


def _count(window: Sequence[Event]) -> tuple[float, dict[str, Any]]:
    return len(window), {"count": len(window)}


def _sum_records(window: Sequence[Event]) -> tuple[float, dict[str, Any]]:
    total = sum(int(e.get("crm.record_count") or 0) for e in window)
    return total, {"records": total, "exports": len(window)}


_MEASURES: dict[str, Callable[[Sequence[Event]], tuple[float, dict[str, Any]]]] = {
    "failed_login_burst": _count,
    "failed_login_distinct_ips": _distinct("source.ip"),
    "password_spray": _distinct("user.name"),
    "export_volume": _sum_records,
    "rapid_customer_changes": _count,
}

_REASONS = {
    "failed_login_burst": "{n:g} failed logins for {key} within {w}",
    "failed_login_distinct_ips": (
        "failed logins for {key} from {n:g} different source IPs within {w}"
    ),
    "password_spray": "source {key} failed to log in as {n:g} different users within {w}",
    "export_volume": "{key} exported {n:g} records within {w}",
    "rapid_customer_changes": "{n:g} changes of contact/bank fields of customer {key} within {w}",
}


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Scope:
    """What one evaluation covers: triggers in [range_from, range_to]."""

    range_from: int
    range_to: int


def _alert(
    rule: Rule, key: str, events: Sequence[Event], reason: str, evidence: dict[str, Any]
) -> Alert:
    trigger = events[-1]
    return Alert(
        rule_id=rule.id,
        rule_kind=rule.kind,
        description=rule.description,
        severity=rule.severity,
        key=key,
        key_fields=tuple(rule.key_fields),
        start=events[0].ts,
        trigger=trigger.ts,
        trigger_id=trigger.id,
        event_ids=tuple(e.id for e in events),
        reason=reason,
        evidence=evidence,
        agent_id=trigger.text("agent.id") or "",
    )


def evaluate_key(
    rule: Rule, key: str, events: Sequence[Event], last: int | None, scope: Scope
) -> list[Alert]:
    """Alerts of `rule` for one key; `events` sorted by time, `last` = last trigger."""
    if rule.kind == "success_after_failures":
        return _success_after_failures(rule, key, events, last, scope)
    if rule.kind == "bank_change_then_export":
        return _change_then_export(rule, key, events, last, scope)
    measure = _MEASURES[rule.kind]
    alerts: list[Alert] = []
    window: deque[Event] = deque()
    floor = last
    for event in events:
        if floor is not None and event.ts <= floor:
            continue
        window.append(event)
        while window and window[0].ts <= event.ts - rule.window_ns:
            window.popleft()
        if event.ts < scope.range_from or event.ts > scope.range_to:
            continue
        if floor is not None and event.ts < floor + rule.suppression_ns:
            continue
        value, evidence = measure(list(window))
        if value >= rule.limit:
            reason = _REASONS[rule.kind].format(n=value, key=key, w=_human(rule.window or 0))
            evidence["threshold"] = rule.limit
            alerts.append(_alert(rule, key, list(window), reason, evidence))
            floor = event.ts
            window.clear()
    return alerts


def _success_after_failures(
    rule: Rule, key: str, events: Sequence[Event], last: int | None, scope: Scope
) -> list[Alert]:
    alerts: list[Alert] = []
    failures: deque[Event] = deque()
    floor = last
    for event in events:
        if floor is not None and event.ts <= floor:
            continue
        if is_failure(event):
            failures.append(event)
            continue
        if event.text("event.outcome") != "success":
            continue
        while failures and failures[0].ts <= event.ts - rule.window_ns:
            failures.popleft()
        in_scope = scope.range_from <= event.ts <= scope.range_to
        allowed_again = floor is None or event.ts >= floor + rule.suppression_ns
        if in_scope and allowed_again and len(failures) >= rule.limit:
            ips = sorted({ip for e in failures if (ip := e.text("source.ip"))})
            reason = (
                f"{key} logged in successfully after {len(failures)} failed logins "
                f"within {_human(rule.window or 0)}"
            )
            evidence = {
                "failures": len(failures),
                "failure_ips": ips,
                "success_ip": event.text("source.ip"),
                "threshold": rule.limit,
            }
            alerts.append(_alert(rule, key, [*failures, event], reason, evidence))
            floor = event.ts
        failures.clear()  # a success ends the streak
    return alerts


def _change_then_export(
    rule: Rule, key: str, events: Sequence[Event], last: int | None, scope: Scope
) -> list[Alert]:
    alerts: list[Alert] = []
    changes: deque[Event] = deque()
    floor = last
    types = set(rule.object_types or [])
    for event in events:
        if floor is not None and event.ts <= floor:
            continue
        action = event.text("event.action") or ""
        fields = changed_fields(event, rule.field_list)
        if fields and (not types or event.text("crm.object.type") in types):
            changes.append(event)
            continue
        if action not in rule.action_list:
            continue
        while changes and changes[0].ts <= event.ts - rule.window_ns:
            changes.popleft()
        in_scope = scope.range_from <= event.ts <= scope.range_to
        allowed_again = floor is None or event.ts >= floor + rule.suppression_ns
        if changes and in_scope and allowed_again:
            customers = sorted({c for e in changes if (c := e.text("crm.object.id"))})
            reason = (
                f"{key} changed bank details of {', '.join(customers)} and then ran "
                f"{action} within {_human(rule.window or 0)}"
            )
            evidence = {
                "customers": customers,
                "fields": sorted({f for e in changes for f in changed_fields(e, rule.field_list)}),
                "followed_by": action,
                "record_count": event.get("crm.record_count"),
            }
            alerts.append(_alert(rule, key, [*changes, event], reason, evidence))
            floor = event.ts
            changes.clear()
    return alerts


def network_of(ip: str, rule: Rule) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    bits = rule.prefix_v4 if addr.version == 4 else rule.prefix_v6
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def new_networks(
    rule: Rule,
    key: str,
    logins: Sequence[Event],
    history: tuple[int, set[str]],
    last: int | None,
    scope: Scope,
) -> list[Alert]:
    """Successful logins from a network (/24, /48) not seen for `key` in the look-back.

    `history` = (logins in the look-back before this evaluation, their networks). Users
    with fewer than ``min_history`` logins are still being learned and never alert.
    """
    seen_count, known = history[0], set(history[1])
    alerts: list[Alert] = []
    floor = last
    for event in logins:
        ip = event.text("source.ip")
        net = network_of(ip, rule) if ip else None
        if net is None:
            continue
        fresh = net not in known
        if (
            fresh
            and seen_count >= rule.min_history
            and scope.range_from <= event.ts <= scope.range_to
            and (floor is None or (event.ts > floor and event.ts >= floor + rule.suppression_ns))
        ):
            reason = f"{key} logged in from network {net}, not seen for this user before"
            evidence = {"network": net, "source_ip": ip, "known_networks": sorted(known)[:50]}
            alerts.append(_alert(rule, key, [event], reason, evidence))
            floor = event.ts
        known.add(net)
        seen_count += 1
    return alerts
