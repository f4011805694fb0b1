"""The agent's compiled kernel (``native/``, module ``crm_audit_native``), when installed.

A JSON-lines source whose mapping is plain paths (the default mapping, and any override
naming a path of one or two keys) has each line mapped in Rust, from the line's bytes
to its serialized AuditEvent, instead of through msgspec objects and the generated
Python mapping. `agent.parsers.jsonlines` stays the reference: the kernel declines
(None) every line it would not map exactly as Python does (see native/src/mapping.rs),
and that line is parsed in Python. A source with any other rule (JMESPath, values,
conditions, alternatives) is parsed in Python whole. The source's action vocabulary
and Python's address check are asked from Rust, so both stay defined in one place.

Optional: ``make venv`` / ``make install`` build it where cargo is installed; without
it, or with ``CRM_AUDIT_NATIVE=off`` in the agent's environment, every line is parsed
in Python. The agent logs which at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agent.parsers._common import clean, is_ip
from agent.parsers.mapping import Plan
from agent.parsers.mapping.vocabulary import Vocabulary
from proto.native import MODULE, import_kernel

# The kernel's agent interface version this agent speaks (AGENT_KERNEL_VERSION in native/).
AGENT_KERNEL_VERSION = 1


class Mapper(Protocol):
    """crm_audit_native.JsonLinesMapper: a line → its serialized event, or None (declined)."""

    def __call__(self, line: bytes, /) -> bytes | None: ...

    def stamped(
        self, line: bytes, stamp: bytes, observed_unix_nano: int, offset: int, /
    ) -> tuple[bytes, int] | None:
        """The stamped event's deterministic bytes (no sequence, no stream id) and its
        effective time, or None (declined)."""
        ...


# (canonical action or None when unknown, ECS categories, ECS types, audit category,
# implied outcome): how the kernel receives a vocabulary's answer.
Resolution = tuple[str | None, list[str], list[str], int, int]


class _MapperClass(Protocol):
    def __call__(
        self,
        fields: list[tuple[str, str, str]],
        resolve: Callable[[str], Resolution],
        is_ip: Callable[[str], bool],
        /,
    ) -> Mapper: ...


def _load() -> tuple[_MapperClass | None, str]:
    module, why = import_kernel("AGENT_KERNEL_VERSION", AGENT_KERNEL_VERSION)
    if module is None:
        return None, f"JSON lines mapped in Python ({why})"
    return module.JsonLinesMapper, f"JSON lines with plain-path mappings mapped by {MODULE}"


_MAPPER_CLASS, DESCRIPTION = _load()
USABLE = _MAPPER_CLASS is not None


def resolver(vocabulary: Vocabulary) -> Callable[[str], Resolution]:
    """`vocabulary` answering the kernel (as codegen's `_Actions` answers the Python
    mapping): an unknown action keeps its name and gets no categories."""

    def resolve(action: str) -> Resolution:
        resolved = vocabulary.resolve(action)
        category = resolved.category
        if category is None:
            return None, [], [], 0, 0
        return (
            clean(resolved.action),
            list(category.event_category),
            list(category.event_type),
            category.audit_category,
            category.implied_outcome,
        )

    return resolve


def jsonlines_mapper(plan: Plan) -> Mapper | None:
    """The kernel for `plan`, or None when it is not installed or the plan has a rule
    other than a plain path of one or two keys (Python maps that source)."""
    if _MAPPER_CLASS is None or any(spec.rules is not None for spec in plan.fields):
        return None
    fields = [(spec.target, spec.path, spec.flag) for spec in plan.fields]
    try:
        return _MAPPER_CLASS(fields, resolver(plan.vocabulary), is_ip)
    except ValueError:  # a path of three keys or more: Python's lookup
        return None
