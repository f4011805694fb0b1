"""Windowed rules over one key's events. Pure: sorted events + earlier alerts in, alerts out.

An incident is anchored at its *trigger*: the first event at which the rule's condition
holds over the window ending there (``(t - window, t]``). The alert ``_id`` derives from
the trigger event, so evaluating the same data again (another collector, a restart, an
overlapping evaluation) gives the same id.

Events may arrive late (a host catching up a backlog), so a key can be evaluated again
after it alerted, with more events than before. The alerts already raised for the key
(`Prior`, read from the alerts index around the evaluated times) decide, order-free:

- after an alert with trigger ``T``, events up to ``T`` never count again;
- a trigger inside an alerted incident (``start <= t <= T``) is the same incident;
- no two alerts of a rule and key lie closer than its suppression period, whichever was
  found first (a late burst just before an existing alert does not alert again).

Only triggers in the evaluated scope are reported (earlier ones were evaluated before).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.detect.alerts import Alert, Event
from collector.detect.conditions import values_at
from collector.detect.fields import lookup, normalize
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

    def __contains__(self, ts: object) -> bool:
        return isinstance(ts, int) and self.range_from <= ts <= self.range_to


@dataclass(frozen=True, order=True)
class Prior:
    """An alert already raised for a rule and key: its first and triggering event times."""

    trigger: int
    start: int


class Suppressor:
    """The alerts of one rule and key (stored ones and those found now), see module doc."""

    def __init__(self, rule: Rule, prior: Iterable[Prior] = (), *, spans: bool = True) -> None:
        self.suppression = rule.suppression_ns
        self.spans = spans  # single-event alerts (inline) have no incident span
        # an incident spans at most one window: alerts triggered later cannot cover `ts`
        self.reach = self.suppression + (rule.window_ns if spans else 0)
        self.alerts: list[Prior] = sorted(prior)

    def floor(self, ts: int) -> int | None:
        """Trigger of the latest alert at or before `ts` (its events are used up)."""
        index = bisect.bisect_right(self.alerts, Prior(ts, 2**63))
        return self.alerts[index - 1].trigger if index else None

    def blocks(self, ts: int) -> bool:
        """Whether a trigger at `ts` would repeat an alert (span or suppression)."""
        low = bisect.bisect_left(self.alerts, Prior(ts - self.suppression, -(2**63)))
        for alert in self.alerts[low:]:
            if alert.trigger == ts:
                return True
            if abs(alert.trigger - ts) < self.suppression:
                return True
            if self.spans and alert.start <= ts <= alert.trigger:
                return True
            if alert.trigger > ts + self.reach:
                break
        return False

    def add(self, start: int, trigger: int) -> None:
        bisect.insort(self.alerts, Prior(trigger, start))


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
        lag=max(e.lag for e in events),
    )


def evaluate_key(
    rule: Rule, key: str, events: Sequence[Event], prior: Iterable[Prior], scope: Scope
) -> list[Alert]:
    """Alerts of `rule` for one key; `events` sorted by time, `prior` = earlier alerts."""
    seen = Suppressor(rule, prior)
    if rule.kind == "success_after_failures":
        return _success_after_failures(rule, key, events, seen, scope)
    if rule.kind == "bank_change_then_export":
        return _change_then_export(rule, key, events, seen, scope)
    measure = measure_of(rule)
    alerts: list[Alert] = []
    window: deque[Event] = deque()
    for event in events:
        floor = seen.floor(event.ts)
        if floor is not None and event.ts <= floor:
            continue
        window.append(event)
        oldest = max(floor if floor is not None else -(2**63), event.ts - rule.window_ns)
        while window and window[0].ts <= oldest:
            window.popleft()
        if event.ts not in scope or seen.blocks(event.ts):
            continue
        value, evidence = measure(list(window))
        if value >= rule.limit:
            reason = reason_of(rule, key, value)
            evidence["threshold"] = rule.limit
            alert = _alert(rule, key, list(window), reason, evidence)
            alerts.append(alert)
            seen.add(alert.start, alert.trigger)
            window.clear()
    return alerts


Measure = Callable[[Sequence[Event]], tuple[float, dict[str, Any]]]


def _generic_measure(rule: Rule) -> Measure:
    """count / sum / distinct_count of `rule.field` over a window (kind threshold)."""
    aggregate = rule.aggregation
    if aggregate == "count":
        return _count
    name = str(rule.field)
    info = lookup(name)

    def values(window: Sequence[Event]) -> list[Any]:
        return [v for e in window for v in values_at(e.doc, name)]

    if aggregate == "sum":

        def total(window: Sequence[Event]) -> tuple[float, dict[str, Any]]:
            numbers = [
                float(v)
                for v in values(window)
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            value = sum(numbers)
            return value, {f"sum_{name}": value, "count": len(window)}

        return total

    def distinct(window: Sequence[Event]) -> tuple[float, dict[str, Any]]:
        found = {str(normalize(info, v)) if info is not None else str(v) for v in values(window)}
        return len(found), {f"distinct_{name}": sorted(found)[:100], "count": len(window)}

    return distinct


def measure_of(rule: Rule) -> Measure:
    if rule.kind == "threshold":
        return _generic_measure(rule)
    return _MEASURES[rule.kind]


def reason_of(rule: Rule, key: str, value: float) -> str:
    window = _human(rule.window or 0)
    if rule.kind != "threshold":
        return _REASONS[rule.kind].format(n=value, key=key, w=window)
    what = "events" if rule.aggregation == "count" else f"{rule.aggregation} of {rule.field}"
    return f"{rule.id}: {what} = {value:g} for {key} within {window} (threshold {rule.limit:g})"


def _success_after_failures(
    rule: Rule, key: str, events: Sequence[Event], seen: Suppressor, scope: Scope
) -> list[Alert]:
    alerts: list[Alert] = []
    failures: deque[Event] = deque()
    for event in events:
        floor = seen.floor(event.ts)
        if floor is not None and event.ts <= floor:
            continue
        while failures and floor is not None and failures[0].ts <= floor:
            failures.popleft()
        if is_failure(event):
            failures.append(event)
            continue
        if event.text("event.outcome") != "success":
            continue
        while failures and failures[0].ts <= event.ts - rule.window_ns:
            failures.popleft()
        if event.ts in scope and not seen.blocks(event.ts) and len(failures) >= rule.limit:
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
            alert = _alert(rule, key, [*failures, event], reason, evidence)
            alerts.append(alert)
            seen.add(alert.start, alert.trigger)
        failures.clear()  # a success ends the streak
    return alerts


def _change_then_export(
    rule: Rule, key: str, events: Sequence[Event], seen: Suppressor, scope: Scope
) -> list[Alert]:
    alerts: list[Alert] = []
    changes: deque[Event] = deque()
    types = set(rule.object_types or [])
    for event in events:
        floor = seen.floor(event.ts)
        if floor is not None and event.ts <= floor:
            continue
        while changes and floor is not None and changes[0].ts <= floor:
            changes.popleft()
        action = event.text("event.action") or ""
        fields = changed_fields(event, rule.field_list)
        if fields and (not types or event.text("crm.object.type") in types):
            changes.append(event)
            continue
        if action not in rule.action_list:
            continue
        while changes and changes[0].ts <= event.ts - rule.window_ns:
            changes.popleft()
        if changes and event.ts in scope and not seen.blocks(event.ts):
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
            alert = _alert(rule, key, [*changes, event], reason, evidence)
            alerts.append(alert)
            seen.add(alert.start, alert.trigger)
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
    prior: Iterable[Prior],
    scope: Scope,
) -> list[Alert]:
    """Successful logins from a network (/24, /48) not seen for `key` in the look-back.

    `history` = (logins in the look-back before this evaluation, their networks). Users
    with fewer than ``min_history`` logins are still being learned and never alert.
    """
    seen_count, known = history[0], set(history[1])
    seen = Suppressor(rule, prior)
    alerts: list[Alert] = []
    for event in logins:
        ip = event.text("source.ip")
        net = network_of(ip, rule) if ip else None
        if net is None:
            continue
        fresh = net not in known
        if (
            fresh
            and seen_count >= rule.min_history
            and event.ts in scope
            and not seen.blocks(event.ts)
        ):
            reason = f"{key} logged in from network {net}, not seen for this user before"
            evidence = {"network": net, "source_ip": ip, "known_networks": sorted(known)[:50]}
            alert = _alert(rule, key, [event], reason, evidence)
            alerts.append(alert)
            seen.add(alert.start, alert.trigger)
        known.add(net)
        seen_count += 1
    return alerts
