"""Coverage: enrolled agents, sources, events per day and silent sources (PCI DSS 10.7).

A *chain* is what the agent hash-chains and seals: its stream format 1 history (one
per agent, labelled ``agent``) or one stream format 2 stream (one per incarnation,
labelled ``agent:stream`` as verify labels it). An agent that lost its state starts a
new stream; the collector records the stream before it in the new chain head and
raises a restart alert unless it was an upgrade from format 1, so the report lists
every chain with its predecessor and says which began with a restart.

A *source* is one log an agent reads: (``agent.id``, ``crm.source.name``). It is
*silent* over a stretch longer than the gap where it delivered no event and its agent
sent no heartbeat seal either: nothing proves the source was being read, so it is a
possible failure of audit logging. Each silent period also says whether the agent was
otherwise alive (seals for other sources), which separates a dead agent or a cut
network from a source whose own logging stopped.

Silence is found in two steps so a quarter of data costs a few requests per source:
activity is bucketed (a quarter of the gap wide) with a date histogram, and only where
two active buckets are far enough apart are the exact last and first times looked up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.gate import (
    RESTARTED,
    V1_CHAIN,
    alerts_index,
    chainheads_index,
    head_id,
    seals_index,
)
from collector.lifecycle import events_index_pattern
from collector.report.query import Period, Queries, bool_filter, from_millis, time_range

UNNAMED = "(unnamed)"
TOP_SOURCES = 8
_MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class SilentPeriod:
    """No event of the source and no heartbeat of its agent from `start` to `end`."""

    agent: str
    source: str
    start: datetime | None  # None: no activity ever before
    end: datetime
    ongoing: bool  # still silent at the end of the period
    agent_seals: int  # seals of the same agent inside the silence (other sources)

    @property
    def duration(self) -> timedelta:
        return self.end - (self.start or self.end)


@dataclass
class SourceRow:
    """One source: events in the period and first/last ever seen."""

    agent: str
    source: str
    events: int = 0
    first: datetime | None = None
    last: datetime | None = None
    last_before: datetime | None = None  # last event before the period


@dataclass
class StreamRow:
    """One chain of an agent: its format 1 history (``stream`` "") or a format 2 stream."""

    agent: str
    stream: str
    events: int = 0
    seals: int = 0
    heartbeats: int = 0
    last_seal: datetime | None = None
    head_sequence: int | None = None  # None: no chain head stored
    first_seen: datetime | None = None  # format 2: when a collector first saw it
    previous: str = ""  # label of the agent's chain before this stream ("": none recorded)
    previous_sequence: int | None = None  # that chain's last sequence
    restarted: bool = False  # the collector alerted a restart without state

    @property
    def label(self) -> str:
        """``agent`` (format 1) or ``agent:stream``, as verify names it."""
        return head_id(self.agent, self.stream)


@dataclass
class AgentRow:
    """One enrolled agent; its chains are in `streams` (oldest first)."""

    agent: str
    registered: bool | None = None  # None: no keys directory given
    events: int = 0
    seals: int = 0
    heartbeats: int = 0
    last_seal: datetime | None = None
    last_heartbeat: datetime | None = None
    sources: list[str] = field(default_factory=list)
    streams: list[StreamRow] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return sum(1 for s in self.streams if s.restarted)


@dataclass
class Coverage:
    """Everything the coverage section shows."""

    agents: list[AgentRow]
    sources: list[SourceRow]
    days: list[datetime]
    per_day: dict[str, list[int]]  # top sources (+ "other") -> events per day
    total_events: int
    silent: list[SilentPeriod]
    gap: timedelta


def _parse_time(text: str) -> datetime | None:
    """An ISO 8601 time as stored (nanoseconds allowed); None if unreadable."""
    head, dot, rest = text.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head + (dot + rest[:6] if dot else ""))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _chain_order(row: StreamRow) -> tuple[str, int, datetime, str]:
    """Per agent: the format 1 chain first, then streams in the order they were seen."""
    if not row.stream:
        return (row.agent, 0, datetime.min.replace(tzinfo=UTC), "")
    seen = row.first_seen or row.last_seal or datetime.max.replace(tzinfo=UTC)
    return (row.agent, 1, seen, row.stream)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class CoverageReader:
    """Builds `Coverage` from OpenSearch."""

    def __init__(
        self,
        queries: Queries,
        prefix: str,
        period: Period,
        *,
        gap: timedelta,
        now: datetime,
        registered: set[str] | None = None,
    ) -> None:
        self.q = queries
        self.prefix = prefix
        self.period = period
        self.gap = gap
        self.now = now
        self.registered = registered
        self.events = events_index_pattern(prefix)
        self.seals = seals_index(prefix)

    def read(self) -> Coverage:
        sources = self._sources()
        agents = self._agents(sources)
        days, per_day, total = self._per_day()
        silent: list[SilentPeriod] = []
        for row in sources:
            silent.extend(self._silences(row))
        silent.sort(key=lambda s: (s.agent, s.source, s.start or s.end))
        return Coverage(agents, sources, days, per_day, total, silent, self.gap)

    # -- sources and agents ---------------------------------------------------------

    def _sources(self) -> list[SourceRow]:
        rows: dict[tuple[str, str], SourceRow] = {}
        keys = [
            {"agent": {"terms": {"field": "agent.id", "missing_bucket": True}}},
            {"source": {"terms": {"field": "crm.source.name", "missing_bucket": True}}},
        ]
        stats = {
            "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}},
        }
        ranges = (
            ("in", time_range(self.period.start, self.period.end)),
            ("before", time_range(None, self.period.start)),
        )
        for which, query in ranges:
            for bucket in self.q.composite(self.events, query, keys, stats):
                agent = bucket["key"]["agent"] or UNNAMED
                source = bucket["key"]["source"] or UNNAMED
                row = rows.setdefault((agent, source), SourceRow(agent, source))
                last = from_millis(bucket["last"]["value"])
                if which == "in":
                    row.events = int(bucket["doc_count"])
                    row.last = last
                    row.first = row.first or from_millis(bucket["first"]["value"])
                else:
                    row.first = from_millis(bucket["first"]["value"])
                    row.last_before = last
                    row.last = row.last or last
        return sorted(rows.values(), key=lambda r: (r.agent, r.source))

    def _agents(self, sources: list[SourceRow]) -> list[AgentRow]:
        rows: dict[str, AgentRow] = {}
        for name in self.registered or set():
            rows[name] = AgentRow(name)
        for src in sources:
            row = rows.setdefault(src.agent, AgentRow(src.agent))
            row.events += src.events
            row.sources.append(src.source)
        keys = [{"agent": {"terms": {"field": "agent.id"}}}]
        stats = {
            "last": {"max": {"field": "@timestamp"}},
            "hb": {
                "filter": {"term": {"seal.heartbeat": True}},
                "aggs": {"last": {"max": {"field": "@timestamp"}}},
            },
        }
        period = time_range(self.period.start, self.period.end)
        for bucket in self.q.composite(self.seals, period, keys, stats):
            row = rows.setdefault(bucket["key"]["agent"], AgentRow(bucket["key"]["agent"]))
            row.seals = int(bucket["doc_count"]) - int(bucket["hb"]["doc_count"])
            row.heartbeats = int(bucket["hb"]["doc_count"])
            row.last_seal = from_millis(bucket["last"]["value"])
            if bucket["hb"]["last"]["value"] is not None:
                row.last_heartbeat = from_millis(bucket["hb"]["last"]["value"])
        for stream in self._streams():
            rows.setdefault(stream.agent, AgentRow(stream.agent)).streams.append(stream)
        for row in rows.values():
            row.registered = None if self.registered is None else row.agent in self.registered
        return sorted(rows.values(), key=lambda r: r.agent)

    def _streams(self) -> list[StreamRow]:
        """Every chain found in chain heads, seals or events, oldest first per agent."""
        rows: dict[tuple[str, str], StreamRow] = {}

        def row(agent: str, stream: str | None) -> StreamRow:
            return rows.setdefault((agent, stream or ""), StreamRow(agent, stream or ""))

        period = time_range(self.period.start, self.period.end)
        keys: list[dict[str, Any]] = [
            {"agent": {"terms": {"field": "agent.id"}}},
            {"stream": {"terms": {"field": "agent.stream", "missing_bucket": True}}},
        ]
        for bucket in self.q.composite(self.events, period, keys):
            row(bucket["key"]["agent"], bucket["key"]["stream"]).events = int(bucket["doc_count"])
        keys[1] = {"stream": {"terms": {"field": "seal.stream", "missing_bucket": True}}}
        stats = {
            "last": {"max": {"field": "@timestamp"}},
            "hb": {"filter": {"term": {"seal.heartbeat": True}}},
        }
        for bucket in self.q.composite(self.seals, period, keys, stats):
            found = row(bucket["key"]["agent"], bucket["key"]["stream"])
            found.heartbeats = int(bucket["hb"]["doc_count"])
            found.seals = int(bucket["doc_count"]) - found.heartbeats
            found.last_seal = from_millis(bucket["last"]["value"])
        heads = self.q.search(
            chainheads_index(self.prefix), {"size": 10_000, "query": {"match_all": {}}}
        )
        for hit in heads["hits"]["hits"]:
            src = hit["_source"]
            agent = src.get("agent", {})
            chain = src.get("chain", {})
            found = row(str(agent.get("id", hit["_id"])), agent.get("stream"))
            seq = chain.get("sequence")
            found.head_sequence = int(seq) if seq is not None else None
            if chain.get("first_seen"):
                found.first_seen = _parse_time(str(chain["first_seen"]))
            previous = chain.get("previous_stream")
            if previous is not None:
                # "v1" names the agent's format 1 chain, labelled by the agent alone
                found.previous = head_id(found.agent, "" if previous == V1_CHAIN else previous)
                prev_seq = chain.get("previous_sequence")
                found.previous_sequence = int(prev_seq) if prev_seq is not None else None
        restarts = self.q.search(
            alerts_index(self.prefix),
            {
                "size": 10_000,
                "_source": ["agent"],
                "query": {"term": {"alert.kind": RESTARTED}},
            },
        )
        for hit in restarts["hits"]["hits"]:
            agent = hit["_source"].get("agent", {})
            if agent.get("id") and agent.get("stream"):
                key = (str(agent["id"]), str(agent["stream"]))
                if key in rows:
                    rows[key].restarted = True
        return sorted(rows.values(), key=_chain_order)

    def _per_day(self) -> tuple[list[datetime], dict[str, list[int]], int]:
        days = self.period.days
        aggs = {
            "top": {"terms": {"field": "crm.source.name", "size": TOP_SOURCES, "missing": UNNAMED}},
            "days": {
                "date_histogram": {
                    "field": "@timestamp",
                    "calendar_interval": "day",
                    "time_zone": "UTC",
                    "min_doc_count": 0,
                },
                "aggs": {
                    "src": {
                        "terms": {
                            "field": "crm.source.name",
                            "size": TOP_SOURCES,
                            "missing": UNNAMED,
                        }
                    }
                },
            },
        }
        query = time_range(self.period.start, self.period.end)
        result = self.q.aggs(self.events, query, aggs)
        top = [str(b["key"]) for b in result.get("top", {}).get("buckets", [])]
        index = {_ms(day): i for i, day in enumerate(days)}
        series: dict[str, list[int]] = {name: [0] * len(days) for name in top}
        other = [0] * len(days)
        total = 0
        for bucket in result.get("days", {}).get("buckets", []):
            i = index.get(int(bucket["key"]))
            if i is None:
                continue
            total += int(bucket["doc_count"])
            rest = int(bucket["doc_count"])
            for sub in bucket["src"]["buckets"]:
                if str(sub["key"]) in series:
                    series[str(sub["key"])][i] += int(sub["doc_count"])
                    rest -= int(sub["doc_count"])
            other[i] += rest
        if any(other):
            series["other"] = other
        return days, series, total

    # -- silence -------------------------------------------------------------------------

    def _activity(self, row: SourceRow) -> list[tuple[str, dict[str, Any]]]:
        """(index pattern, query) pairs whose documents prove the source alive."""
        source_term: dict[str, Any] = (
            {"bool": {"must_not": {"exists": {"field": "crm.source.name"}}}}
            if row.source == UNNAMED
            else {"term": {"crm.source.name": row.source}}
        )
        return [
            (self.events, bool_filter({"term": {"agent.id": row.agent}}, source_term)),
            (
                self.seals,
                bool_filter({"term": {"agent.id": row.agent}}, {"term": {"seal.heartbeat": True}}),
            ),
        ]

    def _edge(
        self, row: SourceRow, lo: datetime | None, hi: datetime, which: str
    ) -> datetime | None:
        """Earliest ("min") or latest ("max") activity in [lo, hi)."""
        found: list[datetime] = []
        for pattern, query in self._activity(row):
            bounded = bool_filter(query, time_range(lo, hi))
            result = self.q.aggs(pattern, bounded, {"t": {which: {"field": "@timestamp"}}})
            value = result.get("t", {}).get("value")
            if value is not None:
                found.append(from_millis(value))
        if not found:
            return None
        return min(found) if which == "min" else max(found)

    def _buckets(self, row: SourceRow, lo: datetime, hi: datetime, width: timedelta) -> list[int]:
        keys: set[int] = set()
        step = width * _MAX_BUCKETS
        for pattern, query in self._activity(row):
            start = lo
            while start < hi:
                stop = min(hi, start + step)
                hist = {
                    "h": {
                        "date_histogram": {
                            "field": "@timestamp",
                            "fixed_interval": f"{int(width.total_seconds() * 1000)}ms",
                            "min_doc_count": 1,
                        }
                    }
                }
                result = self.q.aggs(pattern, bool_filter(query, time_range(start, stop)), hist)
                keys.update(int(b["key"]) for b in result.get("h", {}).get("buckets", []))
                start = stop
        return sorted(keys)

    def _seal_count(self, agent: str, lo: datetime | None, hi: datetime) -> int:
        return self.q.count(
            self.seals, bool_filter({"term": {"agent.id": agent}}, time_range(lo, hi))
        )

    def _silences(self, row: SourceRow) -> Iterator[SilentPeriod]:
        end = min(self.period.end, self.now)
        if row.agent == UNNAMED or end <= self.period.start:
            return
        start = self.period.start
        anchor = self._edge(row, None, start, "max")  # last sign of life before the period
        if anchor is None:
            # The source appeared during the period: silence before its first event is
            # not a failure.
            if row.first is None or row.first >= end:
                return
            start = anchor = row.first
        width = max(self.gap / 4, timedelta(seconds=1))
        # The last activity lies in `window` (exactly `anchor` before the first bucket).
        window: tuple[datetime, datetime] | None = None
        earliest = anchor
        for key in self._buckets(row, start, end, width):
            bucket = (max(from_millis(key), start), from_millis(key) + width)
            if bucket[1] - earliest > self.gap:
                last = anchor if window is None else self._edge(row, *window, "max")
                first = self._edge(row, *bucket, "min")
                if last is not None and first is not None and first - last > self.gap:
                    seals = self._seal_count(row.agent, last, first)
                    yield SilentPeriod(row.agent, row.source, last, first, False, seals)
            window = bucket
            earliest = bucket[0]
        if end - earliest > self.gap:
            last = anchor if window is None else self._edge(row, *window, "max")
            if last is not None and end - last > self.gap:
                seals = self._seal_count(row.agent, last, end)
                yield SilentPeriod(row.agent, row.source, last, end, True, seals)
