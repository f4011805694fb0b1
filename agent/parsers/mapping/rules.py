"""Mapping rules: how one schema field gets its value from a record. Pure.

A rule, as written in a source's `mapping:`, is
- a string: a path (`actor.login`, or a JMESPath expression such as `roles[0]`);
- a mapping with exactly one of `path` / `const`, and optionally `values` (a translation
  table, keys compared as text), `default` (when the path is absent or null, or when
  `values` has no entry and the target is enumerated), `when` (conditions that must all
  hold) and, for `changes` only, `each` (a sub-mapping field/old/new applied to every
  item of the list the path gives);
- a list of rules: alternatives, the first that yields a value wins.

`compile_rule` turns the YAML into `Rule`s once per source and reports every problem
with its key path; evaluation never raises except UnusableValue (the value is unusable
for its target) so a bad record cannot stop the parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent.parsers.mapping.paths import EvaluationError, Path, PathError, compile_path
from agent.parsers.mapping.values import UnusableValue, key_text

KeyPath = tuple[str | int, ...]
Problem = tuple[KeyPath, str]


class _Absent:
    """No value (distinct from every value a record or YAML can hold, None included)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()

_RULE_KEYS = frozenset({"path", "const", "values", "default", "when", "each"})
EACH_KEYS = ("field", "old", "new")


@dataclass(frozen=True, slots=True)
class Condition:
    """`path: value | [values] | {exists: bool}`: holds when the path's value (as text)
    is one of `expected`, or when its presence is `exists`."""

    path: Path
    expected: frozenset[str] | None
    exists: bool

    def holds(self, record: Any) -> bool:
        try:
            found, value = self.path.get(record)
        except EvaluationError:
            return False
        present = found and value is not None
        if self.expected is None:
            return present == self.exists
        return present and key_text(value) in self.expected


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule (alternatives are a tuple of these)."""

    path: Path | None
    const: Any
    values: Mapping[str, Any] | None
    default: Any
    when: tuple[Condition, ...]
    each: Mapping[str, tuple[Rule, ...]] | None
    enumerated: bool

    def evaluate(self, record: Any) -> tuple[Any, tuple[str, ...]]:
        """(value or ABSENT, the record paths to consume once the value is used).

        The paths a rule's conditions read are used by it too when it yields the value
        (`{when: {op: auth.login, result: denied}, const: login.failed}` maps `op`)."""
        for condition in self.when:
            if not condition.holds(record):
                return ABSENT, ()
        read = tuple(root for condition in self.when for root in condition.path.roots)
        path = self.path
        if path is None:
            return self.const, read
        try:
            found, value = path.get(record)
        except EvaluationError as exc:
            raise UnusableValue(str(exc)) from None
        if not found:
            return self.default, ()
        if value is None:  # null is absent; the key itself is used up
            return self.default, path.roots
        if self.values is not None:
            key = key_text(value)
            if key is not None and key in self.values:
                value = self.values[key]
            elif self.enumerated and self.default is not ABSENT:
                value = self.default
        if self.each is not None:
            value = _each(value, self.each)
        return value, path.roots + read


def evaluate(rules: tuple[Rule, ...], record: Any) -> tuple[Any, tuple[str, ...]]:
    """The first alternative yielding a value; (ABSENT, the null paths to consume).

    An alternative whose expression fails on this record (UnusableValue) gives way to
    the next one; the failure counts only when no alternative yields a value."""
    consumed: tuple[str, ...] = ()
    failure: UnusableValue | None = None
    for rule in rules:
        try:
            value, roots = rule.evaluate(record)
        except UnusableValue as exc:
            failure = failure or exc
            continue
        if value is not ABSENT:
            return value, roots
        consumed += roots
    if failure is not None:
        raise failure
    return ABSENT, consumed


def _each(value: Any, each: Mapping[str, tuple[Rule, ...]]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise UnusableValue("`each` needs a list")
    out = []
    for item in value:
        mapped: dict[str, Any] = {}
        for key, rules in each.items():
            result, _roots = evaluate(rules, item)
            if result is not ABSENT and result is not None:
                mapped[key] = result
        out.append(mapped)
    return out


def compile_rule(
    raw: Any, loc: KeyPath, *, enumerated: bool = False, list_target: bool = False
) -> tuple[tuple[Rule, ...], list[Problem]]:
    """A target's rules (one, or several alternatives) and every problem found."""
    problems: list[Problem] = []
    if isinstance(raw, list):
        if not raw:
            return (), [(loc, "an empty list of alternatives")]
        rules = []
        for index, item in enumerate(raw):
            if isinstance(item, list):
                problems.append(((*loc, index), "alternatives cannot be nested"))
                continue
            rule = _compile_one(item, (*loc, index), enumerated, list_target, problems)
            if rule is not None:
                rules.append(rule)
        return tuple(rules), problems
    rule = _compile_one(raw, loc, enumerated, list_target, problems)
    return ((rule,) if rule is not None else ()), problems


def _compile_one(
    raw: Any, loc: KeyPath, enumerated: bool, list_target: bool, problems: list[Problem]
) -> Rule | None:
    if isinstance(raw, str):
        path = _path(raw, loc, problems)
        return None if path is None else Rule(path, ABSENT, None, ABSENT, (), None, enumerated)
    if not isinstance(raw, dict):
        problems.append((loc, f"expected a path, a rule mapping or a list, got {_kind(raw)}"))
        return None
    before = len(problems)
    for key in raw:
        if key not in _RULE_KEYS:
            known = ", ".join(sorted(_RULE_KEYS))
            problems.append(((*loc, str(key)), f"unknown key (rule keys: {known})"))
    if ("path" in raw) == ("const" in raw):
        problems.append((loc, "give exactly one of `path` or `const`"))
    path = None
    if "path" in raw:
        if isinstance(raw["path"], str):
            path = _path(raw["path"], (*loc, "path"), problems)
        else:
            problems.append(((*loc, "path"), f"expected a string, got {_kind(raw['path'])}"))
    const = raw.get("const", ABSENT)
    if const is None:
        problems.append(((*loc, "const"), "a constant cannot be null"))
    values = _values(raw.get("values"), (*loc, "values"), problems)
    if values is not None and "const" in raw:
        problems.append(((*loc, "values"), "`values` needs `path` (a constant needs no table)"))
    default = raw.get("default", ABSENT)
    if "default" in raw and (default is None or isinstance(default, dict | list)):
        problems.append(((*loc, "default"), "expected a scalar"))
    when = _conditions(raw.get("when"), (*loc, "when"), problems)
    each = None
    if "each" in raw:
        if not list_target:
            problems.append(((*loc, "each"), "`each` applies only to a list target (changes)"))
        elif "const" in raw:
            problems.append(((*loc, "each"), "`each` needs `path`"))
        else:
            each = _each_rules(raw["each"], (*loc, "each"), problems)
    if len(problems) > before:
        return None
    return Rule(path, const, values, default, when, each, enumerated)


def _path(text: str, loc: KeyPath, problems: list[Problem]) -> Path | None:
    try:
        return compile_path(text)
    except PathError as exc:
        problems.append((loc, str(exc)))
        return None


def _values(raw: Any, loc: KeyPath, problems: list[Problem]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        problems.append((loc, "expected a mapping of source value → value"))
        return None
    table: dict[str, Any] = {}
    for key, value in raw.items():
        text = key_text(key)
        if text is None:
            problems.append(((*loc, str(key)), "a key must be a scalar"))
        elif value is None or isinstance(value, dict | list):
            problems.append(((*loc, text), "expected a scalar value"))
        else:
            table[text] = value
    return table


def _conditions(raw: Any, loc: KeyPath, problems: list[Problem]) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        problems.append((loc, "expected a mapping of path → value, [values] or {exists: bool}"))
        return ()
    out = []
    for key, spec in raw.items():
        where = (*loc, str(key))
        path = _path(str(key), where, problems)
        if isinstance(spec, dict):
            if set(spec) != {"exists"} or not isinstance(spec["exists"], bool):
                problems.append((where, "expected {exists: true|false}"))
            elif path is not None:
                out.append(Condition(path, None, spec["exists"]))
            continue
        items = spec if isinstance(spec, list) else [spec]
        texts = [key_text(item) for item in items]
        if not items or any(text is None for text in texts):
            problems.append((where, "expected a scalar, a list of scalars or {exists: bool}"))
        elif path is not None:
            out.append(Condition(path, frozenset(t for t in texts if t is not None), True))
    return tuple(out)


def _each_rules(
    raw: Any, loc: KeyPath, problems: list[Problem]
) -> dict[str, tuple[Rule, ...]] | None:
    if not isinstance(raw, dict):
        problems.append((loc, f"expected a mapping with keys {', '.join(EACH_KEYS)}"))
        return None
    out = {}
    for key, item in raw.items():
        if key not in EACH_KEYS:
            problems.append(((*loc, str(key)), f"unknown key (keys: {', '.join(EACH_KEYS)})"))
            continue
        rules, found = compile_rule(item, (*loc, key))
        problems.extend(found)
        out[key] = rules
    if "field" not in raw:
        problems.append((loc, "`each` needs `field` (the name of the changed field)"))
    return out


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)
