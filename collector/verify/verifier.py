"""The verifier: agents, their seals and events walked (see `collector.verify`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.checkpoints import CheckpointView
from collector.documents import parse_iso_nanos
from collector.index import Requester
from collector.integrity import chainheads_index, seals_index
from collector.lifecycle import events_index_pattern
from collector.retention_job.records import RetentionRecords
from collector.verify.anchors import CHECKPOINT_MISSING, MISSING_STREAM
from collector.verify.checks import FIRST_SEQUENCE, Walk, absent_runs
from collector.verify.reading import Peekable, Reader, SealInfo, StoredEvent, read_event, read_seal
from collector.verify.report import AgentReport, Report
from collector.verify.verdicts import ALTERED, EXPIRED, MISSING, TAIL_TRUNCATED, resolve


class Verifier:
    """Walks agents, seals and events (see the module docstring)."""

    def __init__(
        self,
        request: Requester,
        prefix: str,
        keys: Callable[[str], Mapping[str, Ed25519PublicKey]],
        *,
        checkpoints: CheckpointView | None = None,
        time_from: datetime | None = None,
        time_to: datetime | None = None,
        retention_days: float | None = None,
        retention_records: RetentionRecords | None = None,
        now: datetime | None = None,
        grace: timedelta | None = None,
        progress: Callable[[str], None] | None = None,
        expected: Collection[str] = (),
        stream_findings: Mapping[str, Sequence[tuple[str, str]]] | None = None,
        checkpoint_every_agent: bool = False,
    ) -> None:
        self.reader = Reader(request)
        self.prefix = prefix
        self.keys = keys
        self.checkpoints = checkpoints
        self.time_from = time_from
        self.time_to = time_to
        self.retention_days = retention_days
        self.retention_records = retention_records
        self.now = now or datetime.now(UTC)
        self.grace = grace
        self.progress = progress
        self.expected = frozenset(expected)
        self.stream_findings = dict(stream_findings or {})
        self.checkpoint_every_agent = checkpoint_every_agent
        self._named: frozenset[str] = frozenset()
        self._index_cache: dict[str, bool] = {}
        self._started = time.monotonic()
        self._last_progress = 0.0
        self._events_total = 0

    # -- entry -----------------------------------------------------------------

    def run(self, agents: Sequence[str] | None = None) -> Report:
        report = Report()
        if self.checkpoints is not None:
            report.problems.extend(self.checkpoints.problems)
        if self.retention_records is not None:
            report.problems.extend(self.retention_records.problems)
        names = set(agents or ())
        self._named = frozenset(names)
        if not names:
            names |= self.reader.agents(events_index_pattern(self.prefix), "agent.id")
            names |= self.reader.agents(seals_index(self.prefix), "agent.id")
            names |= self.reader.agents(chainheads_index(self.prefix), "agent.id")
            if self.checkpoints is not None:
                names |= set(self.checkpoints.heads)
            names |= self.expected | set(self.stream_findings)
        for name in sorted(names):
            out = report.agents[name] = self.verify_agent(name)
            out.stream.extend(self._stream_findings(out))
            report.events += out.events
        report.seconds = time.monotonic() - self._started
        return report

    # -- one agent ---------------------------------------------------------------

    def verify_agent(self, agent: str) -> AgentReport:
        out = AgentReport(agent)
        seals = self._seals(agent)
        seal_list_peek = Peekable(seals)
        seq_range = self._sequence_window(agent) if (self.time_from or self.time_to) else None
        query: dict[str, Any] = {"bool": {"filter": [{"term": {"agent.id": agent}}]}}
        if seq_range is not None:
            query["bool"]["filter"].append(
                {"range": {"event.sequence": {"gte": seq_range[0], "lte": seq_range[1]}}}
            )
        events = Peekable(
            read_event(hit)
            for hit in self.reader.stream(
                events_index_pattern(self.prefix),
                query,
                [{"event.sequence": "asc"}, {"_index": "asc"}, {"_doc": "asc"}],
            )
        )
        walk = Walk(self, agent, out)
        for info in seal_list_peek:
            out.seals += 1
            walk.seal(info, events)
        walk.finish(events, bounded=seq_range is not None)
        if self.time_to is None:
            self._check_tail(agent, walk, out)
        out.ranges = resolve(out.ranges + walk.breaks)
        return out

    def _stream_findings(self, out: AgentReport) -> list[tuple[str, str]]:
        """MISSING_STREAM: no event and no seal (in the window) of an agent that is
        expected (registered) or named; CHECKPOINT_MISSING: with `checkpoint_every_agent`,
        no signed checkpoint attests the agent; plus the caller's `stream_findings`."""
        found: list[tuple[str, str]] = []
        wanted = out.agent in self.expected or out.agent in self._named
        if out.events == 0 and out.seals == 0 and wanted:
            window = " in the window" if self.time_from or self.time_to else ""
            why = "registered in the keys directory" if out.agent in self.expected else "named"
            found.append((MISSING_STREAM, f"no event and no seal{window}; the agent is {why}"))
        checkpoints = self.checkpoints
        if (
            self.checkpoint_every_agent
            and checkpoints is not None
            and (out.agent not in checkpoints.heads)
        ):
            found.append((CHECKPOINT_MISSING, "no signed checkpoint attests this agent"))
        found.extend(self.stream_findings.get(out.agent, ()))
        return found

    def _sequence_window(self, agent: str) -> tuple[int, int] | None:
        low: int | None = None
        high: int | None = None
        for info in self._seals(agent):
            low = info.seal.first_sequence if low is None else min(low, info.seal.first_sequence)
            high = info.seal.last_sequence if high is None else max(high, info.seal.last_sequence)
        return (low, high) if low is not None and high is not None else (1, 0)

    def _seals(self, agent: str) -> Iterator[SealInfo]:
        filters: list[dict[str, Any]] = [{"term": {"agent.id": agent}}]
        if self.time_from or self.time_to:
            bounds: dict[str, str] = {}
            if self.time_from:
                bounds["gte"] = self.time_from.isoformat()
            if self.time_to:
                bounds["lte"] = self.time_to.isoformat()
            filters.append({"range": {"@timestamp": bounds}})
        keys = self.keys(agent)
        for hit in self.reader.stream(
            seals_index(self.prefix),
            {"bool": {"filter": filters}},
            [
                {"seal.first_sequence": "asc"},
                {"seal.last_sequence": "asc"},
                {"seal.chain_head": "asc"},
                {"@timestamp": "asc"},
            ],
        ):
            yield read_seal(hit, agent, keys)

    def _check_tail(self, agent: str, walk: Walk, out: AgentReport) -> None:
        end = walk.covered_end
        # (sequence, head, kind, detail, index of the attesting document)
        attested: list[tuple[int, str, str, str, str]] = []
        if self.checkpoints is not None and agent in self.checkpoints.heads:
            seq, head, when = self.checkpoints.heads[agent]
            if seq is not None:
                attested.append((seq, head, TAIL_TRUNCATED, f"signed checkpoint of {when}", ""))
        heads_index = chainheads_index(self.prefix)
        stored = self.reader.chain_head(heads_index, agent)
        if stored is not None and stored[0] is not None:
            attested.append(
                (stored[0], stored[1], TAIL_TRUNCATED, "chain head record", heads_index)
            )
        # A heartbeat within the covered range was compared by the walk (`Walk.heartbeat`).
        if walk.heartbeat is not None and (end is None or walk.heartbeat[0] > end):
            attested.append(
                (
                    walk.heartbeat[0],
                    walk.heartbeat[1].hex(),
                    MISSING,
                    "heartbeat seal attests it",
                    seals_index(self.prefix),
                )
            )
        for seq, head, kind, detail, index in sorted(attested, key=lambda a: -a[0]):
            where = (index,) if index else ()
            if end is None or seq > end:
                # Only the attested sequences without a document: those with one are
                # PENDING or INSERTED already (`Walk.finish`), one verdict each.
                start = (end + 1) if end is not None else FIRST_SEQUENCE
                for first, last in absent_runs(start, seq, walk.tail_present):
                    out.add(kind, first, last, detail, where)
                break
            known = walk.hashes.get(seq)
            if known is not None and known.hex() != head:
                out.add(ALTERED, seq, seq, f"chain hash differs from the {detail}", where)

    # -- helpers used by the walk --------------------------------------------------

    def index_exists(self, name: str) -> bool:
        if name not in self._index_cache:
            self._index_cache[name] = self.reader.index_exists(name)
        return self._index_cache[name]

    def absent_kind(self, agent: str, sequence: int) -> tuple[str, str]:
        """EXPIRED or MISSING for the absent event `sequence` of `agent`.

        EXPIRED only where a signed retention record (its signature checked against the
        collector keys the investigator passed) lists the sequence among those stored in
        an index deleted by retention; the unsigned ``seal.indices`` decide nothing.
        Seam: a seal's signed event-time range, checked against the retention in force,
        is meant to become a second source of such evidence here.
        """
        records = self.retention_records
        record = records.covering(agent, sequence) if records is not None else None
        if record is None:
            return MISSING, ""
        detail = f"index {record.index} deleted by {record.enforcer or '?'} ({record.where})"
        if self.retention_days is not None and record.newest_event:
            newest = datetime.fromtimestamp(parse_iso_nanos(record.newest_event) / 1e9, UTC)
            deleted = datetime.fromtimestamp(parse_iso_nanos(record.time) / 1e9, UTC)
            if newest + timedelta(days=self.retention_days) > deleted:
                return MISSING, f"{detail} before its retention ended (--retention-days)"
        return EXPIRED, detail

    @property
    def grace_text(self) -> str:
        return f"{self.grace.total_seconds():g} s" if self.grace is not None else "none"

    def fresh(self, event: StoredEvent) -> bool:
        """Ingested (``event.ingested``, unsigned) within the grace period before now."""
        if self.grace is None:
            return False
        ingested = event.source.get("event", {}).get("ingested")
        try:
            at = parse_iso_nanos(ingested) if isinstance(ingested, str) else None
        except ValueError:
            at = None
        if at is None:
            return False
        when = datetime.fromtimestamp(at / 1e9, UTC)
        return self.now - self.grace <= when <= self.now + self.grace

    def tick(self, agent: str, count: int) -> None:
        self._events_total += count
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            rate = self._events_total / max(now - self._started, 1e-6)
            self.progress(f"verify: agent {agent}: {self._events_total} events ({rate:.0f}/s)")
