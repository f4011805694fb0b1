"""Integrity: `collector.verify` run as a library over the period, plus checkpoint status."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.checkpoints import CheckpointView
from collector.index import Requester
from collector.report.errors import ReportDataError
from collector.retention_job.records import RetentionRecords
from collector.verify import Report, Verifier, VerifyError


@dataclass(frozen=True)
class CheckpointRow:
    """Per chain (``agent`` for format 1, ``agent:stream`` for format 2, as verify
    labels them): the highest sequence a signed checkpoint attests, and when."""

    agent: str
    sequence: int | None
    time: str


def checkpoint_rows(view: CheckpointView | None) -> list[CheckpointRow]:
    if view is None:
        return []
    rows = [CheckpointRow(agent, seq, when) for agent, (seq, _head, when) in view.heads.items()]
    rows += [
        CheckpointRow(f"{agent}:{stream}", seq, when)
        for (agent, stream), (seq, _head, when) in view.streams.items()
    ]
    return sorted(rows, key=lambda r: r.agent)


@dataclass
class Integrity:
    """Everything the integrity section shows; `summary` is what gets signed."""

    report: Report | None  # None: not run (no keys given)
    skipped: str
    checkpoints: CheckpointView | None
    checkpoint_rows: list[CheckpointRow] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The verify result without timing, so the same data gives the same digest."""
        out: dict[str, Any]
        if self.report is None:
            out = {"verified": False, "reason": self.skipped}
        else:
            out = {"verified": True, **self.report.to_json()}
            out.pop("seconds", None)
        if self.checkpoints is not None:
            out["checkpoints"] = {
                "lines": self.checkpoints.lines,
                "problems": list(self.checkpoints.problems),
                "heads": {
                    row.agent: {"sequence": row.sequence, "time": row.time}
                    for row in checkpoint_rows(self.checkpoints)
                },
            }
        return out


def run_integrity(
    request: Requester,
    prefix: str,
    keys: Callable[[str], Mapping[str, Ed25519PublicKey]] | None,
    *,
    checkpoints: CheckpointView | None,
    time_from: datetime,
    time_to: datetime,
    now: datetime,
    retention_records: RetentionRecords | None = None,
    expected: Collection[str] = (),
) -> Integrity:
    """Verify the period as `crm-audit verify --from --to` does. `expected`: the agents
    registered in the keys directory, each expected to have events or seals in the
    period (MISSING_STREAM otherwise), as verify expects them."""
    rows = checkpoint_rows(checkpoints)
    if keys is None:
        return Integrity(
            None, "no agent keys given (--keys): the trail was NOT verified", checkpoints, rows
        )
    verifier = Verifier(
        request,
        prefix,
        keys,
        checkpoints=checkpoints,
        time_from=time_from,
        time_to=time_to,
        now=now,
        # EXPIRED (not MISSING) for what a verified retention record says was deleted
        retention_records=retention_records,
        expected=expected,
    )
    try:
        result = verifier.run()
    except VerifyError as exc:
        raise ReportDataError(f"verify: {exc}") from exc
    return Integrity(result, "", checkpoints, rows)
