"""A source's action vocabulary (`actions:`): its own action names → canonical actions.

The mapped action (after `mapping.action`) is looked up here first, then in the built-in
vocabulary (agent.parsers.categorize). An entry either names a canonical action of the
built-in vocabulary (`report.export: record.export`) or defines a new one with its
categories (`{action:, audit_category:, event_category:, event_type:, outcome:}`).
Names are compared after the same normalization the built-in table uses ("Login
Failed" = "login_failed" = "login.failed"). An action found nowhere is kept verbatim
and the event is flagged `unknown_action`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.parsers.categorize import (
    AUDIT_CATEGORY_NAMES,
    ECS_CATEGORIES,
    ECS_TYPES,
    Category,
    categorize,
    normalize_action,
)
from agent.parsers.mapping.rules import Problem
from proto.v1 import audit_pb2 as pb

_DEFINITION_KEYS = frozenset(
    {"action", "audit_category", "event_category", "event_type", "outcome"}
)
_OUTCOMES = {"success": pb.OUTCOME_SUCCESS, "failure": pb.OUTCOME_FAILURE}


@dataclass(frozen=True, slots=True)
class Resolved:
    """What an action becomes: its canonical name and categories (None: unknown)."""

    action: str
    category: Category | None


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A source's table (normalized source name → resolution), then the built-in one."""

    table: Mapping[str, Resolved]
    # Resolutions already made: a source writes few distinct action names, and
    # normalizing one costs a regular expression. Bounded against a log that writes
    # unbounded ones (ids in the action).
    _seen: dict[str, Resolved] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, action: str) -> Resolved:
        found = self._seen.get(action)
        if found is None:
            found = self._resolve(action)
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[action] = found
        return found

    def _resolve(self, action: str) -> Resolved:
        if self.table:
            found = self.table.get(normalize_action(action))
            if found is not None:
                return found
        return Resolved(action, categorize(action))


_SEEN_MAX = 1024


BUILT_IN = Vocabulary({})


def compile_actions(raw: Any, loc: tuple[str | int, ...]) -> tuple[Vocabulary, list[Problem]]:
    """The source's vocabulary and every problem of its `actions:` block."""
    problems: list[Problem] = []
    if raw is None or raw == {}:
        return BUILT_IN, problems
    if not isinstance(raw, dict):
        return BUILT_IN, [(loc, "expected a mapping of source action → canonical action")]
    table: dict[str, Resolved] = {}
    for name, entry in raw.items():
        where = (*loc, str(name))
        if not isinstance(name, str) or not name.strip():
            problems.append((where, "an action name must be non-empty text"))
            continue
        if isinstance(entry, str):
            category = categorize(entry)
            if category is None:
                problems.append(
                    (
                        where,
                        f"{entry!r} is not in the built-in vocabulary (see docs/mapping.md); "
                        "define it as {action:, audit_category:, event_category:, event_type:}",
                    )
                )
                continue
            # The canonical spelling, whatever the admin wrote ("Login_Failed"): detections
            # compare event.action with the vocabulary's names.
            table[normalize_action(name)] = Resolved(normalize_action(entry), category)
        elif isinstance(entry, dict):
            resolved = _definition(entry, name, where, problems)
            if resolved is not None:
                table[normalize_action(name)] = resolved
        else:
            problems.append((where, "expected a canonical action name or a definition mapping"))
    return Vocabulary(table), problems


def _definition(
    entry: dict[Any, Any], name: str, loc: tuple[str | int, ...], problems: list[Problem]
) -> Resolved | None:
    before = len(problems)
    for key in entry:
        if key not in _DEFINITION_KEYS:
            known = ", ".join(sorted(_DEFINITION_KEYS))
            problems.append(((*loc, str(key)), f"unknown key (keys: {known})"))
    action = entry.get("action", name)
    if not isinstance(action, str) or not action.strip():
        problems.append(((*loc, "action"), "expected the canonical action name"))
    audit = entry.get("audit_category")
    if audit not in AUDIT_CATEGORY_NAMES:
        known = ", ".join(AUDIT_CATEGORY_NAMES)
        problems.append(((*loc, "audit_category"), f"expected one of {known}, got {audit!r}"))
    categories = _names(entry, "event_category", ECS_CATEGORIES, loc, problems)
    types = _names(entry, "event_type", ECS_TYPES, loc, problems)
    outcome = entry.get("outcome")
    if outcome is not None and outcome not in _OUTCOMES:
        problems.append(((*loc, "outcome"), f"expected success or failure, got {outcome!r}"))
    if len(problems) > before:
        return None
    category = Category(
        categories,
        types,
        AUDIT_CATEGORY_NAMES[str(audit)],
        _OUTCOMES.get(str(outcome), pb.OUTCOME_UNSPECIFIED),
    )
    return Resolved(str(action), category)


def _names(
    entry: dict[Any, Any],
    key: str,
    allowed: frozenset[str],
    loc: tuple[str | int, ...],
    problems: list[Problem],
) -> tuple[str, ...]:
    raw = entry.get(key)
    items = raw if isinstance(raw, list) else [raw]
    if raw is None or not items or not all(isinstance(item, str) for item in items):
        problems.append(((*loc, key), "expected one or a list of ECS values"))
        return ()
    unknown = sorted(set(items) - allowed)
    if unknown:
        problems.append(
            (
                (*loc, key),
                f"not ECS {key} values: {', '.join(unknown)} ({', '.join(sorted(allowed))})",
            )
        )
    return tuple(items)
