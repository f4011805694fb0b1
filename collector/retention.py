"""Which retention class an event belongs to (``retention.rules`` in collector.yaml).

Rules are tried in order; the first whose conditions all hold names the class, and an
event no rule matches goes to ``retention.default_class``. Conditions look at the
indexed document (what analysts and ISM see), not at the raw protobuf:

    audit_category   ``audit.category``       exact, one of the listed values
    source           ``crm.source.name``      shell-style globs
    format           ``crm.source.format``    shell-style globs
    action           ``event.action``         shell-style globs (``record.*``)

The class is part of the index name, so a rule change moves *new* events only: a batch
re-sent after a routing change lands in the new class's index (its first copy stays in
the old one). Change rules between deliveries, not during an outage backlog, if exact
once-per-index matters.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.config import RetentionConfig, RetentionRule


def _get(doc: Mapping[str, Any], dotted: str) -> str:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class _Compiled:
    retention_class: str
    categories: frozenset[str] | None
    source: re.Pattern[str] | None
    format: re.Pattern[str] | None
    action: re.Pattern[str] | None


def _globs(patterns: Sequence[str] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")


class RetentionRouter:
    """Maps an event document to its retention class (first matching rule wins)."""

    def __init__(self, rules: Sequence[RetentionRule], default_class: str) -> None:
        self.default_class = default_class
        self._rules = [
            _Compiled(
                rule.retention_class,
                frozenset(rule.audit_category) if rule.audit_category is not None else None,
                _globs(rule.source),
                _globs(rule.format),
                _globs(rule.action),
            )
            for rule in rules
        ]

    @property
    def has_rules(self) -> bool:
        """Whether any rule reads the document (otherwise: the default class)."""
        return bool(self._rules)

    @classmethod
    def from_config(cls, config: RetentionConfig) -> RetentionRouter:
        return cls(config.rules, config.default_class)

    def classify(self, doc: Mapping[str, Any]) -> str:
        """The retention class of the document `doc` (as built by `to_document`)."""
        if not self._rules:  # the common set-up: one class for everything
            return self.default_class
        category = _get(doc, "audit.category")
        source = _get(doc, "crm.source.name")
        fmt = _get(doc, "crm.source.format")
        action = _get(doc, "event.action")
        for rule in self._rules:
            if rule.categories is not None and category not in rule.categories:
                continue
            if rule.source is not None and not rule.source.fullmatch(source):
                continue
            if rule.format is not None and not rule.format.fullmatch(fmt):
                continue
            if rule.action is not None and not rule.action.fullmatch(action):
                continue
            return rule.retention_class
        return self.default_class
