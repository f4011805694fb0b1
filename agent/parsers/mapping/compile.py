"""A source's mapping compiled into a plan, and the plan applied to a record. Pure.

The plan is built once per source: a plain dotted path stays a direct dict lookup (the
common case, and the cost of every default mapping), any other rule is evaluated
through `rules.Rule`. Applying a plan never raises: an unusable value flags the event
(`mapping_error`, `invalid_timestamp`) and stays in `attributes`, like every record key
no rule used. The action is then resolved through the source's vocabulary; an action
known nowhere is kept verbatim and flagged `unknown_action`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agent.parsers._common import clean
from agent.parsers.mapping.paths import is_expression, lookup
from agent.parsers.mapping.rules import ABSENT, Problem, Rule, compile_rule, evaluate
from agent.parsers.mapping.targets import ENUMERATED, LIST_TARGETS, SETTERS, Setter
from agent.parsers.mapping.values import UnusableValue, json_text
from agent.parsers.mapping.vocabulary import BUILT_IN, Vocabulary, compile_actions
from agent.parsers.timestamps import TimestampError
from proto.v1 import audit_pb2 as pb

# Where `crm-audit-agent parse` counts which target failed on which events; unset while
# the agent runs, so the hot path pays nothing (it is read only when a value fails).
_FAILED_TARGETS: ContextVar[Counter[str] | None] = ContextVar("failed_targets", default=None)


@contextmanager
def count_failed_targets() -> Iterator[Counter[str]]:
    """Count, per target field, the values that could not be used while in this block."""
    counter: Counter[str] = Counter()
    token = _FAILED_TARGETS.set(counter)
    try:
        yield counter
    finally:
        _FAILED_TARGETS.reset(token)


def _failed(spec: _Field, flags: list[str]) -> None:
    if spec.flag not in flags:
        flags.append(spec.flag)
    counter = _FAILED_TARGETS.get()
    if counter is not None:
        counter[spec.target] += 1


class MappingError(ValueError):
    """A mapping or action table that does not compile; `problems` name each key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


@dataclass(frozen=True, slots=True)
class _Field:
    target: str
    path: str  # plain dotted path (fast lookup) when `rules` is None
    nested: bool
    rules: tuple[Rule, ...] | None
    setter: Setter
    flag: str


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled mapping: fields in application order, then the action vocabulary."""

    fields: tuple[_Field, ...]
    vocabulary: Vocabulary = BUILT_IN


def check(mapping: Mapping[str, Any], actions: Any, targets: frozenset[str]) -> list[Problem]:
    """Every problem of a source's `mapping` and `actions` (key paths relative to the
    source: ("mapping", "outcome", "values"), …)."""
    problems: list[Problem] = []
    for target, raw in mapping.items():
        if target not in targets:
            known = ", ".join(sorted(targets)) or "none: this format takes no mapping"
            problems.append((("mapping", str(target)), f"unknown target field (fields: {known})"))
            continue
        _rules, found = _compile_target(target, raw)
        problems.extend(found)
    if actions and not targets:
        problems.append(
            (("actions",), "this format sets its own actions; `actions` needs a mapped format")
        )
    else:
        problems.extend(compile_actions(actions, ("actions",))[1])
    return problems


def compile_plan(
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any],
    actions: Any = None,
    targets: frozenset[str] | None = None,
) -> Plan:
    """The plan for `defaults` with `overrides` applied; MappingError when invalid."""
    allowed = targets if targets is not None else frozenset(name for name, *_ in SETTERS)
    problems = check(overrides, actions, allowed)
    if problems:
        raise MappingError(problems)
    merged = {**defaults, **overrides}
    fields = []
    for target, setter, flag in SETTERS:
        if target not in merged:
            continue
        raw = merged[target]
        if isinstance(raw, str) and not _needs_rule(raw):
            path = raw.strip()
            fields.append(_Field(target, path, "." in path, None, setter, flag))
            continue
        rules, found = _compile_target(target, raw)
        if found:
            raise MappingError(found)
        fields.append(_Field(target, "", False, rules, setter, flag))
    vocabulary, found = compile_actions(actions, ("actions",))
    if found:
        raise MappingError(found)
    return Plan(tuple(fields), vocabulary)


def _needs_rule(path: str) -> bool:
    return is_expression(path.strip())


def _compile_target(target: str, raw: Any) -> tuple[tuple[Rule, ...], list[Problem]]:
    return compile_rule(
        raw,
        ("mapping", target),
        enumerated=target in ENUMERATED,
        list_target=target in LIST_TARGETS,
    )


def apply_mapping(event: pb.AuditEvent, record: dict[str, Any], plan: Plan) -> None:
    """Fill `event` from a record dict through a compiled plan (jsonlines and regex)."""
    consumed: set[str] = set()
    flags: list[str] = []
    for spec in plan.fields:
        rules = spec.rules
        if rules is None:
            path = spec.path
            # the common case first: the path is a key of the record itself
            if path in record:
                value = record[path]
            elif not spec.nested:
                continue
            else:
                found, value = lookup(record, path)
                if not found:
                    continue
            if value is None:  # explicit null: nothing to record, nothing to keep
                consumed.add(path)
                continue
            roots: tuple[str, ...] = (path,)
        else:
            try:
                value, roots = evaluate(rules, record)
            except UnusableValue:
                _failed(spec, flags)
                continue
            if value is ABSENT:
                consumed.update(roots)
                continue
        try:
            spec.setter(event, value)
        except (UnusableValue, TimestampError):
            _failed(spec, flags)
            continue
        consumed.update(roots)

    if event.action:
        resolved = plan.vocabulary.resolve(event.action)
        category = resolved.category
        if category is None:
            flags.append("unknown_action")
        else:
            event.action = clean(resolved.action)
            event.event_category.extend(category.event_category)
            event.event_type.extend(category.event_type)
            event.audit_category = category.audit_category
            if event.outcome == pb.OUTCOME_UNSPECIFIED:
                event.outcome = category.implied_outcome

    for key, value in _flatten(record, ""):
        # null is absent: an unmapped null is not kept as the text "null"
        if value is not None and not _is_consumed(key, consumed):
            event.attributes[clean(key)] = clean(json_text(value))
    event.flags.extend(flags)


def _flatten(value: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            yield from _flatten(item, f"{path}.")
        else:
            yield path, item


def _is_consumed(key: str, consumed: set[str]) -> bool:
    if key in consumed:
        return True
    return any(key.startswith(f"{path}.") for path in consumed)
