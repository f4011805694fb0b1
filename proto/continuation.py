"""The continuation claim: the first event of a stream that took over a stream format 1
state (an agent upgraded in place with its state) names where its format 1 history
ended, so the collector and `crm-audit verify` can tell an upgrade from a restart
without state. The agent writes it (agent.notices.stream_continued); both readers check
it against the format 1 history they hold. The event is signed like every event, so the
claim is only as good as the seal that covers sequence 1 of the stream.

Attributes: ``previous_format`` "1"; ``previous_sequence`` the format 1 history's last
acked sequence (decimal); ``previous_head`` (optional) the format 1 chain head there,
64 hex characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proto import integrity
from proto.v1 import audit_pb2

STREAM_CONTINUED = "agent.stream_continued"
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Continuation:
    """What the first event of a stream claims about the format 1 history before it."""

    previous_sequence: int
    previous_head: bytes | None  # None: the agent could not state it

    def describe(self) -> str:
        head = f" (head {self.previous_head.hex()[:16]})" if self.previous_head else ""
        return f"format 1 history ended at {self.previous_sequence}{head}"

    def mismatch(self, sequence: int | None, head: bytes | None) -> str:
        """ "" when the format 1 history ends at `sequence` with `head` as claimed, else
        why not (`head` None: not known; a stated head must then not be trusted)."""
        ended = sequence or 0
        if ended != self.previous_sequence:
            return (
                f"its first event claims the format 1 history ended at sequence "
                f"{self.previous_sequence}, it ends at {ended}"
            )
        if self.previous_head is not None and head != self.previous_head:
            found = head.hex()[:16] if head is not None else "unknown"
            return (
                f"its first event claims the format 1 head {self.previous_head.hex()[:16]} at "
                f"sequence {ended}, the head there is {found}"
            )
        return ""


class MalformedClaim(ValueError):
    """A continuation event whose attributes do not state a valid claim."""


def claim(event: audit_pb2.AuditEvent) -> Continuation | None:
    """The claim of `event` if it is the continuation event at sequence 1; None if it is
    not one; MalformedClaim when it is one but its attributes are not valid."""
    if event.action != STREAM_CONTINUED or event.sequence != 1:
        return None
    attributes = event.attributes
    previous = attributes.get("previous_sequence", "")
    head = attributes.get("previous_head")
    if attributes.get("previous_format") != "1" or not previous.isdigit():
        raise MalformedClaim("previous_format must be 1 and previous_sequence a number")
    if head is not None and (len(head) != 2 * integrity.HASH_LEN or not _HEX.fullmatch(head)):
        raise MalformedClaim("previous_head must be 64 lowercase hex characters")
    return Continuation(int(previous), bytes.fromhex(head) if head is not None else None)


__all__ = ["STREAM_CONTINUED", "Continuation", "MalformedClaim", "claim"]
