"""What a scenario returns, and what scenarios hand each other."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.procstat import CpuMark
from bench.stats import median_of_runs

Run = dict[str, float]

ORDER = (
    "ceiling",
    "e2e",
    "agent",
    "latency",
    "peer",
    "syslog-ng",
    "scaling",
    "parsers",
    "integrity",
    "verify",
    "detection",
)
TITLES = {
    "ceiling": "Ceiling: opensearch-py bulk, same documents",
    "e2e": "End-to-end: file -> agent -> collector -> searchable",
    "agent": "Agent alone: file -> agent -> null collector (acks, no indexing)",
    "latency": "Latency: write -> searchable at a steady rate",
    "peer": "Peer: rsyslog imfile -> omelasticsearch, same files",
    "syslog-ng": "Peer: syslog-ng wildcard-file -> elasticsearch-http, same files",
    "scaling": "Scaling: agent alone over files x line length",
    "parsers": "Parsers: framing + parsing per format, in-process",
    "integrity": "Integrity: hashing, sealing, batch verification; crm-audit verify",
    "verify": "Verify at scale: crm-audit verify vs a raw read of the same documents",
    "detection": "Detection: line written -> alert document, under background load",
}


@dataclass
class ScenarioResult:
    """Runs of one scenario, their medians, and scenario-specific details (`info`)."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    runs: list[Run] = field(default_factory=list)
    median: Run = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def finish(self) -> ScenarioResult:
        self.median = median_of_runs(self.runs)
        return self

    def as_json(self) -> dict[str, Any]:
        return {
            "title": TITLES.get(self.name, self.name),
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
            "median": self.median,
            "runs": self.runs,
            **self.info,
        }


@dataclass
class Exported:
    """Documents of one end-to-end run, as the collector wrote them, for the ceiling."""

    prefix: str
    indices: dict[str, dict[str, Any]]  # index -> {"settings", "mappings"} to create it again
    docs: list[tuple[str, str, dict[str, Any]]]  # (index, _id, _source)


@dataclass
class Shared:
    """Hand-over between scenarios of one benchmark run."""

    exported: Exported | None = None


@contextmanager
def timed(result: ScenarioResult) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        result.seconds = time.monotonic() - started


Say = Callable[[str], None]


def per_million(seconds: float, events: int) -> float:
    return seconds / events * 1_000_000 if events else float("nan")


class NodeCpu:
    """The OpenSearch node's CPU over one measured stretch, when the node runs on this
    machine (`Bench.node_pid`); nothing is reported otherwise."""

    def __init__(self, pid: int | None) -> None:
        self._mark = CpuMark.now(pid) if pid is not None else None

    def per_million(self, events: int) -> Run:
        if self._mark is None:
            return {}
        return {"opensearch_cpu_s_per_m": per_million(self._mark.since(), events)}


def rounded(run: dict[str, float], digits: int = 3) -> Run:
    return {key: round(value, digits) for key, value in run.items()}
