"""A source's mapping compiled into a plan, and the plan applied to a record. Pure.

The plan is built once per source and generated into one function
(agent.parsers.mapping.codegen): a plain dotted path becomes direct dict lookups and a
text field an inline assignment (the common case, and the cost of every default
mapping); any other rule is evaluated through `rules.Rule`. Applying a plan never
raises: an unusable value flags the event (`mapping_error`, `invalid_timestamp`) and
stays in `attributes`, like every record key no rule used. The action is then resolved
through the source's vocabulary; an action known nowhere is kept verbatim and flagged
`unknown_action`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agent.parsers.mapping.codegen import Apply, generate
from agent.parsers.mapping.paths import is_expression
from agent.parsers.mapping.rules import Problem, Rule, compile_rule
from agent.parsers.mapping.targets import ENUMERATED, LIST_TARGETS, SETTERS, Setter
from agent.parsers.mapping.vocabulary import BUILT_IN, Vocabulary, compile_actions
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


def counting_failed_targets() -> bool:
    """Whether a `count_failed_targets` block is open (the compiled kernel, which does
    not count, then leaves the lines to the Python mapping)."""
    return _FAILED_TARGETS.get() is not None


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
    """A compiled mapping: fields in application order, then the action vocabulary;
    `apply` is both, generated once as one function (agent.parsers.mapping.codegen)."""

    fields: tuple[_Field, ...]
    vocabulary: Vocabulary = BUILT_IN
    apply: Apply = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "apply", generate(self.fields, self.vocabulary, _failed))


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
    plan.apply(event, record)
