"""The mapping language: how a structured record (a JSON object, a regex's captures)
becomes an AuditEvent, configured per source with `mapping:` and `actions:`.

paths (dotted names, JMESPath), values (typed text), rules (path/const/values/default/
when/each, alternatives), targets (the schema fields and their setters), vocabulary (a
source's action names → canonical actions), compile (the per-source plan and applying it).
See docs/mapping.md for the language reference.
"""

from agent.parsers.mapping.compile import MappingError, Plan, apply_mapping, check, compile_plan
from agent.parsers.mapping.targets import TARGETS

__all__ = ["TARGETS", "MappingError", "Plan", "apply_mapping", "check", "compile_plan"]
