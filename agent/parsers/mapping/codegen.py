"""A compiled plan turned into one generated Python function per source. Pure.

Applying a mapping runs for every event, so its per-field function calls (step, getter,
setter, text conversion) cost more than the work they do. Once per source, the plan is
written out as straight-line code instead: one block per field with its dotted lookup
and, for text fields, the assignment to the event inline; other setters and the
mapping-language rules are called as the functions they are. Nothing from the
configuration is pasted into the code: paths and keys are constants bound by name
(`K0`, `H0`, …), attribute names come from the schema table (STRING_ATTRS).

The unused keys of the record go to `attributes` as `_flatten` + `_is_consumed` define
(every non-null leaf under its dotted path, in record order), but a record path a field
consumes is always one of the plan's roots, known now: a top-level key no root can touch
is copied without checks, and a consumed subtree is skipped whole (its leaves all start
with `path.`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Final, Protocol

from agent.parsers._common import clean
from agent.parsers.mapping.paths import lookup
from agent.parsers.mapping.rules import ABSENT, Rule, evaluate
from agent.parsers.mapping.targets import STRING_ATTRS, Setter
from agent.parsers.mapping.values import UnusableValue, json_text, scalar_text
from agent.parsers.mapping.vocabulary import Vocabulary
from agent.parsers.timestamps import TimestampError
from proto.v1 import audit_pb2 as pb

Apply = Callable[[pb.AuditEvent, dict[str, Any]], None]
_MISSING: Final = object()
_TOUCHED_MAX = 4096  # top-level keys remembered per source (keys named by data are not)
_ACTIONS_MAX = 1024  # action names remembered per source


class FieldSpec(Protocol):
    """One field of a plan (agent.parsers.mapping.compile._Field)."""

    @property
    def target(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def rules(self) -> tuple[Rule, ...] | None: ...
    @property
    def setter(self) -> Setter: ...
    @property
    def flag(self) -> str: ...


Failed = Callable[[Any, list[str]], None]


def generate(fields: tuple[FieldSpec, ...], vocabulary: Vocabulary, failed: Failed) -> Apply:
    """The plan as one function (event, record) → None that never raises for a value."""
    actions = _Actions(vocabulary)
    names: dict[str, Any] = {
        "MISSING": _MISSING,
        "UNUSABLE": (UnusableValue, TimestampError),
        "clean": clean,
        "scalar_text": scalar_text,
        "failed": failed,
        "actions_get": actions.cache.get,
        "learn": actions,
        "UNSPECIFIED": pb.OUTCOME_UNSPECIFIED,
        "touch": _toucher(fields),
        "copy": _copy,
        "copy_unconsumed": _copy_unconsumed,
    }
    lines = [
        "def apply(event, record):",
        "    record_get = record.get",
        "    consumed = set()",
        "    consumed_add = consumed.add",
        "    flags = []",
    ]
    for index, spec in enumerate(fields):
        lines += _field_block(index, spec, names, failed)
    lines += _TAIL.splitlines()
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<mapping>", "exec"), names, namespace)  # noqa: S102 - code written above from the schema table, config values bound by name
    apply: Apply = namespace["apply"]
    return apply


_TAIL = """\
    action = event.action
    if action:
        known = actions_get(action)
        if known is None:
            known = learn(action)
        name, categories, implied = known
        if name is None:
            flags.append("unknown_action")
        else:
            event.action = name
            event.MergeFrom(categories)
            if implied and event.outcome == UNSPECIFIED:
                event.outcome = implied
    attributes = event.attributes
    touched_get = touch.cache.get
    prefixes = None
    for key, item in record.items():
        if item is None:
            continue
        touched = touched_get(key)
        if touched is None:
            touched = touch(key)
        if not touched:
            if item.__class__ is str:
                attributes[key if key.isascii() else clean(key)] = (
                    item if item.isascii() else clean(item)
                )
            else:
                copy(attributes, key, item)
            continue
        if prefixes is None:
            prefixes = tuple([path + "." for path in consumed])
        if not (key in consumed or key.startswith(prefixes)):
            copy_unconsumed(attributes, key, item, consumed, prefixes)
    if flags:
        event.flags.extend(flags)
"""


def _field_block(index: int, spec: FieldSpec, names: dict[str, Any], failed: Failed) -> list[str]:
    names[f"F{index}"] = spec
    rules = spec.rules
    if rules is not None:
        names[f"R{index}"] = _rule_step(spec, rules, failed)
        return [f"    R{index}(event, record, consumed, flags)"]
    key = f"K{index}"
    names[key] = spec.path
    parts = spec.path.split(".")
    lines = [f"    v = record_get({key}, MISSING)"]
    if len(parts) == 2:  # a literal "a.b" key first, then a → b (as paths.lookup does)
        names[f"H{index}"], names[f"T{index}"] = parts
        lines += [
            "    if v is MISSING:",
            f"        n = record_get(H{index})",
            "        if isinstance(n, dict):",
            f"            v = n.get(T{index}, MISSING)",
        ]
    elif len(parts) > 2:
        names[f"G{index}"] = _deep_getter(spec.path)
        lines = [f"    v = G{index}(record)"]
    lines += [
        "    if v is not MISSING:",
        "        if v is None:",  # explicit null: nothing to record, nothing to keep
        f"            consumed_add({key})",
    ]
    attrs = STRING_ATTRS.get(spec.target)
    if attrs is not None and all(attr.isidentifier() for attr in attrs):
        target = "event." + ".".join(attrs)
        lines += [
            "        elif v.__class__ is str:",
            f"            {target} = v if v.isascii() else clean(v)",
            f"            consumed_add({key})",
            "        else:",
            "            try:",
            f"                {target} = clean(scalar_text(v))",
        ]
    else:
        names[f"S{index}"] = spec.setter
        lines += [
            "        else:",
            "            try:",
            f"                S{index}(event, v)",
        ]
    return [
        *lines,
        "            except UNUSABLE:",
        f"                failed(F{index}, flags)",
        "            else:",
        f"                consumed_add({key})",
    ]


def _rule_step(
    spec: FieldSpec, rules: tuple[Rule, ...], failed: Failed
) -> Callable[[pb.AuditEvent, dict[str, Any], set[str], list[str]], None]:
    setter = spec.setter

    def step(
        event: pb.AuditEvent, record: dict[str, Any], consumed: set[str], flags: list[str]
    ) -> None:
        try:
            value, roots = evaluate(rules, record)
        except UnusableValue:
            failed(spec, flags)
            return
        if value is ABSENT:
            consumed.update(roots)
            return
        try:
            setter(event, value)
        except (UnusableValue, TimestampError):
            failed(spec, flags)
            return
        consumed.update(roots)

    return step


def _deep_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    def get(record: dict[str, Any]) -> Any:
        if path in record:
            return record[path]
        found, value = lookup(record, path)
        return value if found else _MISSING

    return get


class _Actions:
    """A source's action names resolved once each: (canonical name or None when unknown,
    an event holding just its categories — merged in one call —, the implied outcome)."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.cache: dict[str, tuple[str | None, pb.AuditEvent, int]] = {}

    def __call__(self, action: str) -> tuple[str | None, pb.AuditEvent, int]:
        resolved = self.vocabulary.resolve(action)
        category = resolved.category
        if category is None:
            known: tuple[str | None, pb.AuditEvent, int] = (None, pb.AuditEvent(), 0)
        else:
            # A default audit_category (0) set by merging is the same as one left unset:
            # the field has no presence.
            categories = pb.AuditEvent(
                event_category=category.event_category,
                event_type=category.event_type,
                audit_category=category.audit_category,
            )
            known = (clean(resolved.action), categories, category.implied_outcome)
        if len(self.cache) < _ACTIONS_MAX:  # a log naming unbounded actions is not kept
            self.cache[action] = known
        return known


class _Toucher:
    """Whether a top-level key can hold anything a field consumes (remembered per key)."""

    def __init__(self, roots: frozenset[str]) -> None:
        self.roots = roots
        self.cache: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        below = f"{key}."
        found = any(
            root == key or key.startswith(f"{root}.") or root.startswith(below)
            for root in self.roots
        )
        if len(self.cache) < _TOUCHED_MAX:
            self.cache[key] = found
        return found


def _toucher(fields: tuple[FieldSpec, ...]) -> _Toucher:
    return _Toucher(frozenset(root for spec in fields for root in _possible_roots(spec)))


def _possible_roots(spec: FieldSpec) -> Iterator[str]:
    if spec.rules is None:
        yield spec.path
        return
    for rule in spec.rules:
        if rule.path is not None:
            yield from rule.path.roots
        for condition in rule.when:
            yield from condition.path.roots


def _copy(attributes: MutableMapping[str, str], path: str, value: Any) -> None:
    """Every non-null leaf of `value` under `path`."""
    if type(value) is str:
        attributes[clean(path)] = clean(value)
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            if item is not None:
                _copy(attributes, f"{path}.{key}", item)
    else:
        attributes[clean(path)] = clean(json_text(value))


def _copy_unconsumed(
    attributes: MutableMapping[str, str],
    path: str,
    value: Any,
    consumed: set[str],
    prefixes: tuple[str, ...],
) -> None:
    """Every non-null leaf of `value` (at the unconsumed `path`) not under a consumed path."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            child = f"{path}.{key}"
            if item is not None and not (child in consumed or child.startswith(prefixes)):
                _copy_unconsumed(attributes, child, item, consumed, prefixes)
    else:
        attributes[clean(path)] = clean(json_text(value))
