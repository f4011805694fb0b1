"""What `crm-audit verify` found: per agent ranges and stream findings, as text or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.verify.verdicts import NOT_FINDINGS, VALID, Range, joined
from proto.continuation import Continuation


@dataclass
class AgentReport:
    """Everything found for one agent, ranges in sequence order."""

    agent: str
    ranges: list[Range] = field(default_factory=list)
    events: int = 0
    seals: int = 0
    # Findings about the stream as a whole, (kind, detail): MISSING_STREAM,
    # AGENT_RESTARTED, RECEIPT_AHEAD, CHAIN_HEAD_ALTERED and the checkpoint findings of
    # `anchors`.
    stream: list[tuple[str, str]] = field(default_factory=list)
    # The stream id (format 2); "" for an agent's format 1 history (one chain per agent).
    stream_id: str = ""
    started: int | None = None  # signed time the stream's first seal was made (format 2)
    # What is said without being a finding, e.g. a stream continuing format 1 history.
    notes: list[str] = field(default_factory=list)
    # Format 2: the claim of its signed first event to continue format 1 history (None:
    # no such event; `claim_problem` says why a continuation event states no valid one).
    continues: Continuation | None = None
    claim_problem: str = ""
    # Format 1: the last sequence a valid seal covered and the signed head there.
    signed_end: tuple[int, bytes] | None = None

    @property
    def label(self) -> str:
        """How the report names it: ``agent`` (format 1) or ``agent:stream``."""
        return f"{self.agent}:{self.stream_id}" if self.stream_id else self.agent

    def add(
        self, kind: str, first: int, last: int, detail: str = "", indices: Sequence[str] = ()
    ) -> None:
        named = tuple(sorted(set(indices))) if kind != VALID else ()
        if self.ranges:
            tail = self.ranges[-1]
            if tail.kind == kind and tail.detail == detail and tail.last + 1 == first:
                self.ranges[-1] = joined(tail, last, named)
                return
        self.ranges.append(Range(kind, first, last, detail, named))

    @property
    def valid(self) -> bool:
        return not self.stream and all(r.kind in NOT_FINDINGS for r in self.ranges)


@dataclass
class Report:
    """The whole verification: per agent ranges plus problems outside any agent."""

    agents: dict[str, AgentReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.problems and all(a.valid for a in self.agents.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "events_checked": self.events,
            "seconds": round(self.seconds, 3),
            "problems": self.problems,
            "agents": {
                name: {
                    "agent": report.agent,
                    "stream_id": report.stream_id,
                    "valid": report.valid,
                    "events": report.events,
                    "seals": report.seals,
                    "stream": [{"kind": k, "detail": d} for k, d in report.stream],
                    "notes": report.notes,
                    "ranges": [r.to_json() for r in report.ranges],
                }
                for name, report in sorted(self.agents.items())
            },
        }

    def to_text(self) -> str:
        lines = []
        for _name, report in sorted(self.agents.items()):
            state = "VALID" if report.valid else "FINDINGS"
            what = f"agent {report.agent}" + (
                f" stream {report.stream_id}" if report.stream_id else ""
            )
            lines.append(f"{what}: {state} ({report.events} events, {report.seals} seals)")
            for kind, detail in report.stream:
                lines.append(f"  {kind:<14} {detail}")
            for note in report.notes:
                lines.append(f"  {'note':<14} {note}")
            for r in report.ranges:
                span = f"{r.first}" if r.first == r.last else f"{r.first}-{r.last}"
                where = f"  [{', '.join(r.indices)}]" if r.indices else ""
                lines.append(
                    f"  {r.kind:<14} {span}" + (f"  {r.detail}" if r.detail else "") + where
                )
        for problem in self.problems:
            lines.append(f"problem: {problem}")
        verdict = "VALID" if self.valid else "FINDINGS"
        lines.append(
            f"{verdict}: {len(self.agents)} stream{'' if len(self.agents) == 1 else 's'}, "
            f"{self.events} events in {self.seconds:.1f} s"
        )
        return "\n".join(lines)
