"""The options every format accepts, and the wrapper applying them to a parser.

A format's own options model subclasses `FormatOptions`, so `privacy:` is accepted in
every source's `options:` block and applied the same way whatever the format.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agent.parsers._common import ParseFn, guarded
from agent.parsers.privacy import PrivacyOptions, apply
from proto.v1 import audit_pb2 as pb


class FormatOptions(BaseModel):
    """Options common to all formats (`privacy`); formats add their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    privacy: PrivacyOptions | None = None


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
