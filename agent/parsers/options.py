"""The options every format accepts, and the wrapper applying them to a parser.

A format's own options model subclasses `FormatOptions`, so `privacy:` is accepted in
every source's `options:` block and applied the same way whatever the format.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationInfo, model_validator

from agent.parsers._common import ParseFn, guarded
from agent.parsers.privacy import PrivacyOptions, apply
from proto.v1 import audit_pb2 as pb


class FormatOptions(BaseModel):
    """Options common to all formats (`privacy`); formats add their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Redaction and keyed pseudonymization of event fields on the agent, before an
    # event leaves the host (agent/parsers/privacy.py).
    privacy: PrivacyOptions | None = None
    # The source these options belong to (validation context `source_name`), so that a
    # parser's warnings can name it.
    _source_name: str = PrivateAttr("")

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> FormatOptions:
        if info.context and isinstance(info.context.get("source_name"), str):
            self._source_name = info.context["source_name"]
        return self

    @property
    def source_name(self) -> str:
        return self._source_name


def finish(parse: ParseFn, name: str, options: BaseModel) -> ParseFn:
    """`parse` made crash-proof, with the source's privacy rules applied to each event."""
    safe = guarded(parse, name)
    policy = getattr(options, "privacy", None)
    if not isinstance(policy, PrivacyOptions):
        return safe

    def private(data: bytes) -> pb.AuditEvent | None:
        event = safe(data)
        return None if event is None else apply(event, policy)

    return private
