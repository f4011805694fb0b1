"""The generic kinds (match, threshold): validation, the query each condition becomes, the
same conditions in Python, and the order-free suppression that makes late data alert once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.detect import fields, inline
from collector.detect.alerts import Event, key_of
from collector.detect.conditions import Condition, matches, query_clauses
from collector.detect.errors import RulesError
from collector.detect.rules import Rule, RuleSet, load_rules, referenced
from collector.detect.search import rule_query
from collector.detect.windowed import Prior, Scope, evaluate_key
from collector.documents import iso_nanos
from tests.helpers import nest

NS = 1_000_000_000
T0 = 1_793_601_000 * NS
ALL = Scope(0, 2**62)


def ev(n: int, seconds: float, lag_s: float = 1, **doc: Any) -> Event:
    source = {
        "@timestamp": iso_nanos(T0 + int(seconds * NS)),
        "event": {"ingested": iso_nanos(T0 + int((seconds + lag_s) * NS))},
    }
    return Event.from_source(f"a:{n}", nest(source, doc))


def cond(**data: Any) -> Condition:
    return Condition.model_validate(data)


def test_every_problem_of_generic_rules_at_once_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """rules:
  - id: a
    kind: threshold
    where:
      - {field: user.nmae, equals: x}
      - {field: crm.record_count, equals: many}
      - {field: user.name, gte: 3}
      - {field: source.ip, in: [not-an-ip]}
      - {field: user.name}
      - {field: user.name, equals: a, prefix: b}
      - {field: user.name, not_equal_field: crm.changes.old}
    key: [crm.changes.field]
    window: 1h
  - id: b
    kind: match
    where: []
    window: 1h
  - id: c
    kind: bulk_export
    where: [{field: user.name, exists: true}]
  - id: d
    kind: threshold
    where: [{field: event.action, equals: login}]
    key: [user.name]
    window: 1h
    aggregate: sum
    field: user.name
    threshold: 3
""",
        encoding="utf-8",
    )
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    problems = "\n".join(caught.value.problems)
    expected = [
        f"{path}:5: rules.0.where.0.field: unknown field 'user.nmae': not in the events template",
        "did you mean user.name",
        f"{path}:6: rules.0.where.1: equals: field crm.record_count is unsigned_long, got 'many'",
        f"{path}:7: rules.0.where.2: gte: field user.name is keyword, not a number",
        f"{path}:8: rules.0.where.3: in: field source.ip is an IP address; 'not-an-ip'",
        f"{path}:9: rules.0.where.4: give exactly one operator besides field",
        "got equals, prefix",
        f"{path}:11: rules.0.where.6: not_equal_field: user.name and crm.changes.old must both",
        f"{path}:12: rules.0.key: key field crm.changes.field is inside the nested crm.changes",
        f"{path}:2: rules.0.threshold: kind threshold needs a threshold (e.g. 3)",
        f"{path}:14: rules.1.key: kind match needs a key (e.g. [user.name])",
        f"{path}:16: rules.1.where: kind match needs at least one condition",
        f"{path}:17: rules.1.window: kind match alerts per event; no window",
        f"{path}:20: rules.2.where: only kinds match and threshold take where",
        f"{path}:27: rules.3.field: sum needs a number field, user.name is keyword",
    ]
    for text in expected:
        assert text in problems, text
    assert "Traceback" not in problems


def test_spec_examples_validate_and_name_what_they_read() -> None:
    rules = load_rules(Path(__file__).resolve().parents[3] / "config" / "rules.yaml")
    imp = next(r for r in rules.rules if r.id == "impersonation")
    iban = next(r for r in rules.rules if r.id == "iban-changes")
    assert imp.inline and not iban.inline
    assert iban.aggregation == "count" and iban.window == 3600 and iban.limit == 3
    assert referenced(imp) == (["user.name", "user.effective.name"], [])
    assert referenced(iban) == (["crm.object.id", "event.action", "crm.changes.field"],
                                ["record.update"])  # fmt: skip


def test_query_of_each_operator() -> None:
    conditions = [
        cond(field="event.action", **{"in": ["record.update"]}),
        cond(field="crm.changes.field", **{"in": ["iban", "bic"]}),
        cond(field="crm.changes.new", exists=True),
        cond(field="user.effective.name", exists=True),
        cond(field="user.effective.name", not_equal_field="user.name"),
        cond(field="organization.id", exists=False),
        cond(field="crm.record_count", gte=1000),
        cond(field="source.ip", equals="10.0.0.0/8"),
        cond(field="user.email", prefix="admin@"),
        cond(field="crm.object.type", equals="customer"),
    ]
    must, must_not = query_clauses(conditions)
    ci = "case_insensitive"
    assert must == [
        {"term": {"event.action": {"value": "record.update", ci: True}}},
        {"exists": {"field": "user.effective.name"}},
        # not_equal_field: the query keeps documents that have the field; Python decides
        {"exists": {"field": "user.effective.name"}},
        {"range": {"crm.record_count": {"gte": 1000}}},
        {"term": {"source.ip": "10.0.0.0/8"}},
        {"prefix": {"user.email": {"value": "admin@", ci: True}}},
        {"term": {"crm.object.type": {"value": "customer", ci: True}}},
        # both crm.changes conditions hold for one change entry
        {"nested": {"path": "crm.changes", "query": {"bool": {
            "filter": [{"bool": {"should": [
                           {"term": {"crm.changes.field": {"value": "iban", ci: True}}},
                           {"term": {"crm.changes.field": {"value": "bic", ci: True}}}],
                           "minimum_should_match": 1}},
                       {"exists": {"field": "crm.changes.new"}}],
            "must_not": []}}}},
    ]  # fmt: skip
    assert must_not == [{"exists": {"field": "organization.id"}}]
    rule = Rule.model_validate(
        {"id": "r", "kind": "match", "key": ["user.name"], "where": [c.model_dump(by_alias=True,
         exclude_none=True) for c in conditions], "allow": {"users": ["svc"]}}
    )  # fmt: skip
    query = rule_query(rule)["bool"]
    assert query["filter"][0] == {
        "term": {"event.action": {"value": "record.update", "case_insensitive": True}}
    }
    assert {"exists": {"field": "user.name"}} in query["filter"]  # the key must exist
    assert query["must_not"] == [{"terms": {"user.name": ["svc"]}},
                                 {"exists": {"field": "organization.id"}}]  # fmt: skip


def test_conditions_in_python_mean_what_the_query_means() -> None:
    impersonation = [
        cond(field="user.effective.name", exists=True),
        cond(field="user.effective.name", not_equal_field="user.name"),
    ]
    doc = {"user": {"name": "alice", "effective": {"name": "bob"}}}
    assert matches(impersonation, doc)
    assert not matches(impersonation, {"user": {"name": "alice", "effective": {"name": "alice"}}})
    assert not matches(impersonation, {"user": {"name": "alice"}})
    same_entry = [
        cond(field="crm.changes.field", equals="iban"),
        cond(field="crm.changes.new", exists=True),
    ]
    split = {"crm": {"changes": [{"field": "iban"}, {"field": "email", "new": "x@y"}]}}
    assert not matches(same_entry, split)  # iban without a new value; new value of email
    assert matches(same_entry, {"crm": {"changes": [{"field": "iban", "new": "DE02"}]}})
    # typed change values: a number stays a number in _source, the keyword compares text
    assert matches([cond(field="crm.changes.new", equals=5000)],
                   {"crm": {"changes": [{"field": "limit", "new": 5000}]}})  # fmt: skip
    assert matches([cond(field="source.ip", equals="10.0.0.0/8")], {"source": {"ip": "10.2.3.4"}})
    assert not matches([cond(field="source.ip", equals="10.0.0.0/8")],
                       {"source": {"ip": "192.0.2.1"}})  # fmt: skip
    assert matches([cond(field="crm.record_count", gt=10)], {"crm": {"record_count": 11}})
    assert not matches([cond(field="crm.record_count", gt=10)], {"crm": {"record_count": 10}})
    assert matches([cond(field="user.roles", **{"in": ["admin", "dba"]})],
                   {"user": {"roles": ["advisor", "dba"]}})  # fmt: skip
    assert matches([cond(field="user.email", prefix="adm")], {"user": {"email": "adm@x"}})
    # user.email compares case-insensitively; a case-sensitive field's prefix does not
    assert matches([cond(field="user.email", prefix="Adm")], {"user": {"email": "adm@x"}})
    assert not matches([cond(field="crm.object.id", prefix="C-")],
                       {"crm": {"object": {"id": "c-17"}}})  # fmt: skip
    assert matches([cond(field="organization.id", exists=False)], {"user": {"name": "a"}})
    assert matches([cond(field="crm.attributes.tenant", equals="t1")],
                   {"crm": {"attributes": {"tenant": "t1"}}})  # fmt: skip


def test_names_and_types_compare_case_insensitively() -> None:
    # The schema marks user names, roles, actions, object types and change fields as
    # case-insensitive (documents keep the case they were written in).
    assert matches([cond(field="user.name", equals="Alice")], {"user": {"name": "aLiCe"}})
    must, _ = query_clauses([cond(field="user.name", **{"in": ["Alice", "BOB"]})])
    assert must == [{"bool": {"should": [
        {"term": {"user.name": {"value": "alice", "case_insensitive": True}}},
        {"term": {"user.name": {"value": "bob", "case_insensitive": True}}}],
        "minimum_should_match": 1}}]  # fmt: skip
    same = [cond(field="user.effective.name", not_equal_field="user.name")]
    assert not matches(same, {"user": {"name": "Alice", "effective": {"name": "alice"}}})
    # keys group case-insensitively: Alice and alice are one user
    assert key_of(ev(1, 0, user__name="Alice"), ["user.name"]) == "alice"
    assert matches([cond(field="crm.object.type", equals="Customer")],
                   {"crm": {"object": {"type": "customer"}}})  # fmt: skip
    # ids and values compare exactly
    assert not matches([cond(field="crm.object.id", equals="C-1")],
                       {"crm": {"object": {"id": "c-1"}}})  # fmt: skip
    assert fields.term("crm.object.id", "C-1") == {"term": {"crm.object.id": "C-1"}}


def _threshold(**extra: Any) -> Rule:
    return Rule.model_validate(
        {"id": "t", "kind": "threshold", "key": ["crm.object.id"], "window": "1h",
         "where": [{"field": "event.action", "equals": "record.update"}], **extra}
    )  # fmt: skip


def test_threshold_count_sum_and_distinct_count() -> None:
    count = _threshold(threshold=3)
    updates = [
        ev(i, i * 600, event__action="record.update", crm__object__id="C1") for i in range(5)
    ]
    (alert,) = evaluate_key(count, "C1", updates, (), ALL)
    assert alert.event_ids == ("a:0", "a:1", "a:2") and alert.evidence["count"] == 3
    assert "events = 3 for C1 within 1h" in alert.reason
    slow = [ev(i, i * 1900, event__action="record.update") for i in range(5)]
    assert evaluate_key(count, "C1", slow, (), ALL) == []
    total = _threshold(threshold=1000, aggregate="sum", field="crm.record_count")
    sizes = [ev(i, i * 60, crm__record_count=n) for i, n in enumerate((400, 300, 200, 150))]
    (alert,) = evaluate_key(total, "C1", sizes, (), ALL)
    assert alert.trigger_id == "a:3" and alert.evidence["sum_crm.record_count"] == 1050
    distinct = _threshold(threshold=3, aggregate="distinct_count", field="crm.changes.field")
    changes = [
        ev(1, 0, crm__changes=[{"field": "iban"}, {"field": "bic"}]),
        ev(2, 10, crm__changes=[{"field": "iban"}]),
        ev(3, 20, crm__changes=[{"field": "email"}]),
    ]
    (alert,) = evaluate_key(distinct, "C1", changes, (), ALL)
    assert alert.trigger_id == "a:3"
    assert alert.evidence["distinct_crm.changes.field"] == ["bic", "email", "iban"]


def test_late_data_alerts_once_and_says_it_is_late() -> None:
    rule = _threshold(threshold=3, suppression="1h")
    live = [ev(i, 600 + i * 60, event__action="record.update") for i in range(3)]
    (first,) = evaluate_key(rule, "C1", live, (), ALL)
    assert not first.lag > 600 * NS and first.trigger_id == "a:2"
    stored = [Prior(first.trigger, first.start)]
    # A late event just before the burst: the burst would now trigger earlier (at a:1),
    # inside the incident already alerted: nothing new.
    late = ev(9, 590, lag_s=2 * 86400, event__action="record.update")
    assert evaluate_key(rule, "C1", [late, *live], stored, ALL) == []
    # A day-old burst, received now, long before the stored alert: its own alert, late.
    old = [ev(20 + i, -86400 + i * 60, lag_s=86400, event__action="x") for i in range(3)]
    (backlog,) = evaluate_key(rule, "C1", [*old, late, *live], stored, ALL)
    assert backlog.trigger_id == "a:22" and backlog.lag >= 86400 * NS
    # Found again (a restart re-reading, another collector): same trigger, same id.
    stored.append(Prior(backlog.trigger, backlog.start))
    assert evaluate_key(rule, "C1", [*old, late, *live], stored, ALL) == []
    # Suppression works both ways: a late burst 30 minutes before an alert is the same
    # incident as far as the analyst is concerned.
    near = [ev(30 + i, -1200 + i * 10, lag_s=3600, event__action="x") for i in range(3)]
    assert evaluate_key(rule, "C1", [*near, *live], [Prior(first.trigger, first.start)], ALL) == []


def test_match_rule_inline_on_event_time_with_stored_alerts() -> None:
    rules = RuleSet.model_validate({"rules": [{
        "id": "imp", "kind": "match", "key": ["user.name"], "suppression": "1h",
        "where": [{"field": "user.effective.name", "exists": True},
                  {"field": "user.effective.name", "not_equal_field": "user.name"}],
    }]})  # fmt: skip
    events = [
        ev(1, 0, user__name="a", user__effective__name="b"),
        ev(2, 60, user__name="a", user__effective__name="b"),  # suppressed (1 min later)
        ev(3, 7200, user__name="a", user__effective__name="a"),  # not impersonation
        ev(4, -3 * 86400, lag_s=3 * 86400, user__name="a", user__effective__name="c"),
    ]
    asked: list[tuple[str, list[str], int, int]] = []

    def history(rule_id: str, keys: Any, gte: int, lte: int) -> dict[str, list[Prior]]:
        asked.append((rule_id, list(keys), gte, lte))
        return {}

    alerts = inline.evaluate(rules, events, history)
    assert [a.trigger_id for a in alerts] == ["a:4", "a:1"]
    assert alerts[0].lag == 3 * 86400 * NS
    assert alerts[1].evidence["fields"] == {"user.name": "a", "user.effective.name": "b"}
    # the stored alerts are asked for around the events' own times
    assert asked == [("imp", ["a"], T0 - 3 * 86400 * NS - 3600 * NS, T0 + 60 * NS + 3600 * NS)]
    # An alert stored for a:1 (another collector saw it first) keeps a:1 and a:2 quiet,
    # but not the backlog event three days earlier.
    stored = {"a": [Prior(T0, T0)]}
    again = inline.evaluate(rules, events, lambda *_: stored)
    assert [a.trigger_id for a in again] == ["a:4"]


def test_off_hours_is_judged_on_the_login_time_not_the_receipt_time() -> None:
    rules = RuleSet.model_validate({
        "calendars": {"c": {"timezone": "Europe/Berlin", "start": "07:00", "end": "19:00"}},
        "rules": [{"id": "n", "kind": "off_hours_login", "calendar": "c"}],
    })  # fmt: skip
    login = {"event__action": "login", "event__outcome": "success", "user__name": "u"}
    # T0 = Monday 07:30 Berlin. A 03:30 login received at 07:30, and a 07:30 login
    # received at 21:30 (the host was offline).
    night = ev(1, -4 * 3600, lag_s=4 * 3600, **login)
    day = ev(2, 0, lag_s=14 * 3600, **login)
    (alert,) = inline.evaluate(rules, [night, day], lambda *_: {})
    assert alert.trigger_id == "a:1" and alert.lag == 4 * 3600 * NS
