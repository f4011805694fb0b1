"""The mapping language on a foreign-shaped CRM log (nested actor, op/result names,
attr/from/to changes, impersonation, tenant): every rule form, types, vocabulary."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.parsers import get_parser
from agent.parsers.mapping import MappingError, check
from agent.parsers.mapping.compile import count_failed_targets
from agent.parsers.mapping.paths import compile_path, is_expression
from agent.parsers.mapping.targets import TARGETS
from proto.v1 import audit_pb2 as pb

MAPPING: dict[str, Any] = {
    "timestamp": "ts",
    "user.id": "actor.id",
    "user.name": "actor.login",
    "user.roles": "actor.roles",
    "user.effective.name": "on_behalf_of.login",
    "user.target.name": "subject.login",
    "user.target.roles": {"path": "details.granted_role"},
    "organization.id": "tenant",
    "source.ip": "client.ip",
    "object.type": {
        "path": "entity.kind",
        "values": {"Contact": "customer", "Account": "customer"},
        "default": "record",
    },
    "object.id": "entity.id",
    "outcome": {
        "path": "result",
        "values": {"ok": "success", "denied": "failure", "error": "failure"},
    },
    "action": [
        {"when": {"op": "auth.login", "result": ["denied", "error"]}, "const": "auth.login_failed"},
        "op",
    ],
    "changes": {"path": "changes", "each": {"field": "attr", "old": "from", "new": "to"}},
    "record_count": {"path": "report.rows"},
}
ACTIONS: dict[str, Any] = {
    "auth.login": "Login",
    "auth.login_failed": "login.failed",
    "report.export": "record.export",
    "contact.update": "record.update",
    "user.role_change": "role.grant",
    "session.impersonate": "login.impersonation",
    "acme.custom.thing": {
        "audit_category": "security",
        "event_category": ["authentication"],
        "event_type": ["info"],
    },
}


def parse(record: dict[str, Any], mapping: dict[str, Any] | None = None) -> pb.AuditEvent:
    parser = get_parser("jsonlines", MAPPING if mapping is None else mapping, None, ACTIONS)
    event = parser(json.dumps(record, ensure_ascii=False).encode())
    assert event is not None
    return event


def base(**extra: Any) -> dict[str, Any]:
    return {
        "ts": "2026-03-01T09:15:00Z",
        "actor": {"id": 7, "login": "jdoe", "roles": ["advisor"]},
        "tenant": "bank-eu",
        "client": {"ip": "192.0.2.10"},
        **extra,
    }


def test_update_with_changes_keeps_types_and_translates() -> None:
    event = parse(
        base(
            op="contact.update",
            result="ok",
            entity={"kind": "Contact", "id": "C-1"},
            changes=[
                {"attr": "iban", "from": "DE00 1", "to": "DE00 2"},
                {"attr": "credit_limit", "from": 5000, "to": 7500.5},
                {"attr": "vip", "from": None, "to": True},
                {"attr": "note", "from": "", "to": {"k": ["ü"]}},
            ],
        )
    )
    assert event.action == "record.update" and event.outcome == pb.OUTCOME_SUCCESS
    assert event.audit_category == pb.AUDIT_CATEGORY_DATA_OPERATION
    assert (event.user.id, event.user.name, list(event.user.roles)) == ("7", "jdoe", ["advisor"])
    assert event.organization.id == "bank-eu" and event.object.type == "customer"
    iban, limit, vip, note = event.changes
    assert (iban.field, iban.old_value, iban.new_value) == ("iban", "DE00 1", "DE00 2")
    number = pb.FieldChange.VALUE_TYPE_NUMBER
    assert (limit.old_value, limit.old_type, limit.new_value, limit.new_type) == (
        "5000",
        number,
        "7500.5",
        number,
    )
    assert not vip.HasField("old_value") and vip.new_type == pb.FieldChange.VALUE_TYPE_BOOLEAN
    assert note.HasField("old_value") and note.old_value == ""
    assert (note.new_value, note.new_type) == ('{"k":["ü"]}', pb.FieldChange.VALUE_TYPE_JSON)
    assert dict(event.attributes) == {}
    assert list(event.flags) == []


def test_condition_derives_failed_login_and_values_translate_outcome() -> None:
    event = parse(base(op="auth.login", result="denied"))
    assert (event.action, event.outcome) == ("login.failed", pb.OUTCOME_FAILURE)
    assert list(event.event_category) == ["authentication"]
    event = parse(base(op="auth.login", result="ok"))
    assert (event.action, event.outcome) == ("login", pb.OUTCOME_SUCCESS)


def test_impersonation_target_user_and_granted_role() -> None:
    event = parse(
        base(
            op="user.role_change",
            result="ok",
            on_behalf_of={"login": "admin2"},
            subject={"login": "mmuster"},
            details={"granted_role": "branch_manager"},
        )
    )
    assert event.action == "role.grant" and event.audit_category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN
    assert event.effective_user.name == "admin2"
    assert event.target_user.name == "mmuster"
    assert list(event.target_user.roles) == ["branch_manager"]


def test_default_applies_to_absent_and_null_and_enumerated_miss() -> None:
    assert parse(base(op="x.view", entity={"id": "1"})).object.type == "record"
    assert parse(base(op="x.view", entity={"kind": None})).object.type == "record"
    # object.type is not enumerated: an unlisted value passes through
    assert parse(base(entity={"kind": "Lead"})).object.type == "Lead"
    mapping = {"outcome": {"path": "result", "values": {"ok": "success"}, "default": "failure"}}
    assert parse(base(result="weird"), mapping).outcome == pb.OUTCOME_FAILURE


def test_untranslated_outcome_is_a_mapping_error_counted_by_field() -> None:
    with count_failed_targets() as failed:
        event = parse(base(op="auth.login", result="maybe"))
    assert "mapping_error" in event.flags
    assert event.attributes["result"] == "maybe"
    assert failed == {"outcome": 1}


def test_unknown_action_kept_verbatim_and_flagged() -> None:
    event = parse(base(op="acme.mystery", result="ok"))
    assert event.action == "acme.mystery" and "unknown_action" in event.flags
    assert event.audit_category == pb.AUDIT_CATEGORY_UNSPECIFIED
    custom = parse(base(op="ACME custom_thing"))  # compared after normalization
    assert custom.action == "acme.custom.thing" and "unknown_action" not in custom.flags
    assert custom.audit_category == pb.AUDIT_CATEGORY_SECURITY
    assert list(custom.event_type) == ["info"]


def test_null_is_absent_never_the_text_null_and_empty_stays_empty() -> None:
    event = parse(base(op="contact.update", tenant=None, extra=None, comment=""))
    assert not event.organization.id
    assert "extra" not in event.attributes and "tenant" not in event.attributes
    assert event.attributes["comment"] == ""
    assert "null" not in json.dumps(dict(event.attributes))


def test_jmespath_paths_into_arrays_and_consumed_roots() -> None:
    mapping = {
        "user.name": "actors[0].login",
        "user.roles": "actors[*].role",
        "object.id": "objects[?kind=='customer'] | [0].id",
    }
    event = parse(
        {
            "event": "record.view",
            "actors": [{"login": "a", "role": "r1"}, {"login": "b", "role": "r2"}],
            "objects": [{"kind": "note", "id": "n"}, {"kind": "customer", "id": "C-9"}],
        },
        mapping,
    )
    assert event.user.name == "a" and list(event.user.roles) == ["r1", "r2"]
    assert event.object.id == "C-9"
    assert dict(event.attributes) == {}


def test_literal_dotted_key_wins_and_plain_configs_unchanged() -> None:
    plain = get_parser("jsonlines", {"user.name": "actor.username"})
    event = plain(b'{"event":"login","actor.username":"flat","actor":{"username":"nested"}}')
    assert event is not None and event.user.name == "flat"
    assert event.action == "login" and list(event.flags) == []


def test_const_and_exists_condition() -> None:
    mapping = {
        "action": [
            {"when": {"impersonator": {"exists": True}}, "const": "login.impersonation"},
            "op",
        ],
        "message": {"const": "from acme"},
    }
    assert parse({"op": "auth.login", "impersonator": "x"}, mapping).action == "login.impersonation"
    event = parse({"op": "auth.login"}, mapping)
    assert event.action == "login" and event.message == "from acme"


def test_regex_captures_use_the_same_language() -> None:
    options = {"pattern": r"(?P<ts>\S+) (?P<who>\S+) (?P<op>\S+) (?P<res>\w+)"}
    from agent.parsers.regex import RegexOptions

    parser = get_parser(
        "regex",
        {
            "timestamp": "ts",
            "user.name": "who",
            "action": "op",
            "outcome": {"path": "res", "values": {"OK": "success", "NO": "failure"}},
        },
        RegexOptions.model_validate(options),
        {"auth.login": "login"},
    )
    event = parser(b"2026-03-01T09:15:00Z jdoe auth.login NO")
    assert event is not None
    assert (event.action, event.outcome, event.user.name) == ("login", pb.OUTCOME_FAILURE, "jdoe")
    assert list(event.flags) == [] and dict(event.attributes) == {}


@pytest.mark.parametrize(
    ("mapping", "actions", "where", "message"),
    [
        ({"usr.name": "a"}, {}, ("mapping", "usr.name"), "unknown target field"),
        (
            {"outcome": {"path": "r", "values": [1]}},
            {},
            ("mapping", "outcome", "values"),
            "mapping",
        ),
        ({"action": "a["}, {}, ("mapping", "action"), "invalid JMESPath"),
        (
            {"user.id": {"path": "a", "each": {"field": "x"}}},
            {},
            ("mapping", "user.id", "each"),
            "list",
        ),
        ({"user.id": {"path": "a", "const": "b"}}, {}, ("mapping", "user.id"), "exactly one"),
        ({"user.id": {"pth": "a"}}, {}, ("mapping", "user.id", "pth"), "unknown key"),
        (
            {"action": [{"when": {"a": {"exists": 1}}, "const": "x"}]},
            {},
            ("mapping", "action", 0, "when", "a"),
            "exists",
        ),
        (
            {"changes": {"path": "c", "each": {"old": "o"}}},
            {},
            ("mapping", "changes", "each"),
            "field",
        ),
        ({}, {"x": "not.a.thing"}, ("actions", "x"), "built-in vocabulary"),
        (
            {},
            {"x": {"audit_category": "bad", "event_category": "iam", "event_type": "change"}},
            ("actions", "x", "audit_category"),
            "security",
        ),
        (
            {},
            {
                "x": {
                    "audit_category": "security",
                    "event_category": "authn",
                    "event_type": "change",
                }
            },
            ("actions", "x", "event_category"),
            "authn",
        ),
    ],
)
def test_config_problems_name_their_key_path(
    mapping: dict[str, Any], actions: dict[str, Any], where: tuple[Any, ...], message: str
) -> None:
    problems = check(mapping, actions, TARGETS)
    assert any(loc == where and message in text for loc, text in problems), problems
    with pytest.raises(MappingError):
        get_parser("jsonlines", mapping, None, actions)


def test_every_problem_at_once() -> None:
    problems = check(
        {"a": "x", "b": "y", "outcome": {"path": "r", "values": "z"}}, {"q": "w"}, TARGETS
    )
    assert len(problems) == 4


def test_path_kinds() -> None:
    assert not is_expression("actor.login") and not is_expression("user-agent")
    assert not is_expression("@timestamp") and not is_expression("x@OData.Display.Value")
    assert is_expression("@") and is_expression("@.a")
    assert is_expression("changes[*].attr") and is_expression("a | b")
    assert compile_path("changes[*].attr").roots == ("changes",)
    assert compile_path("@").roots == ()
    assert compile_path("join('.', [a, b.c, d[0].e])").roots == ("a", "b.c", "d")
    assert compile_path("[{field: f, old: o}]").roots == ("f", "o")
    assert compile_path("objects[?kind=='c'] | [0].id").roots == ("objects",)
    assert compile_path("a.b[0].c").roots == ("a.b",)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["ts", "actor", "op", "result", "changes", "entity", "tenant", "x"]), JSON
    )
)
def test_never_raises_and_types_are_honest(record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str).encode()
    event = get_parser("jsonlines", MAPPING, None, ACTIONS)(line)
    assert event is not None
    assert "parse_error" not in event.flags  # a JSON object always maps (flags at worst)
    event.SerializeToString()
    if '"null"' not in line.decode():  # the text "null" itself is kept as it is
        for value in event.attributes.values():
            assert value != "null"


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON.filter(lambda v: v is not None), min_size=1, max_size=4))
def test_change_values_keep_their_type(values: list[Any]) -> None:
    changes = [{"attr": f"f{i}", "to": v} for i, v in enumerate(values)]
    event = parse({"op": "contact.update", "changes": changes})
    assert len(event.changes) == len(values)
    for change, value in zip(event.changes, values, strict=True):
        kind = change.new_type
        if isinstance(value, bool):
            assert kind == pb.FieldChange.VALUE_TYPE_BOOLEAN
        elif isinstance(value, int | float):
            assert kind == pb.FieldChange.VALUE_TYPE_NUMBER
            assert Decimal(change.new_value) == Decimal(json.dumps(value))
        elif isinstance(value, str):
            assert (kind, change.new_value) == (pb.FieldChange.VALUE_TYPE_STRING, value)
        else:
            assert kind == pb.FieldChange.VALUE_TYPE_JSON
            assert json.loads(change.new_value) is not None


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["path", "const", "values", "default", "when", "each", "exists", "x"])
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(TARGETS)) | st.text(max_size=6), YAMLISH, max_size=4),
    st.dictionaries(st.text(max_size=8), YAMLISH, max_size=3),
)
def test_any_config_is_checked_without_raising(
    mapping: dict[str, Any], actions: dict[str, Any]
) -> None:
    problems = check(mapping, actions, TARGETS)
    if problems:
        with pytest.raises(MappingError):
            get_parser("jsonlines", mapping, None, actions)
    else:  # a config that checks clean compiles and parses a line
        parser = get_parser("jsonlines", mapping, None, actions)
        assert parser(b'{"a": 1}') is not None


def test_paths_read_by_an_applied_when_count_as_used() -> None:
    """The failed-login idiom maps `op` through its condition: nothing left unmapped."""
    from agent.parsers.mapping.rules import compile_rule, evaluate

    rules, problems = compile_rule(
        [
            {"when": {"op": "auth.login", "result": ["denied", "error"]}, "const": "x.failed"},
            "op",
        ],
        ("mapping", "action"),
    )
    assert problems == []
    value, used = evaluate(rules, {"op": "auth.login", "result": "denied"})
    assert (value, set(used)) == ("x.failed", {"op", "result"})
    value, used = evaluate(rules, {"op": "auth.login", "result": "ok"})
    assert (value, set(used)) == ("auth.login", {"op"})
