"""The verifier: agents, their seals and events walked (see `collector.verify`)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.batchbytes import batches_index_pattern
from collector.checkpoints import CheckpointView
from collector.documents import iso_nanos, parse_iso_nanos
from collector.gate import chainheads_index, seals_index
from collector.index import Requester
from collector.lifecycle import events_index_pattern
from collector.retention_job.records import RetentionRecords
from collector.verify.anchors import (
    AGENT_RESTARTED,
    CHAIN_HEAD_RECORD,
    CHECKPOINT_MISSING,
    MISSING_STREAM,
    RECEIPT_AHEAD,
    Attested,
)
from collector.verify.batches import (
    BATCH_PAGE,
    BATCH_SORT,
    BatchBytes,
    batch_query,
    with_batch_bytes,
)
from collector.verify.checks import FIRST_SEQUENCE, Walk, absent_runs
from collector.verify.ranges import Piece, Plan, merge, plan
from collector.verify.reading import (
    Peekable,
    Reader,
    SealInfo,
    StoredEvent,
    VerifyError,
    few_collections,
    read_event,
    read_seal,
)
from collector.verify.receipts import ReceiptView
from collector.verify.report import AgentReport, Report
from collector.verify.signed import StreamWalk
from collector.verify.verdicts import (
    EXPIRED,
    GAP_AT_SOURCE,
    MISSING,
    TAIL_TRUNCATED,
    VALID,
    resolve,
)
from proto.v1 import audit_pb2

# A format 2 stream is cut into ranges of at least this many events for the worker
# processes (`collector.verify.ranges`): below it, a range's own searches and seal reads
# would weigh against the shared work.
RANGE_EVENTS = 20_000


def default_jobs() -> int:
    """Streams verified in parallel by default: one worker process per CPU, at most 4
    (each holds a stream's pages; OpenSearch, often on the same host, needs CPU too)."""
    return max(1, min(4, os.cpu_count() or 1))


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
        receipts: ReceiptView | None = None,
        workers: int = 4,
        reopen: Callable[[], Requester] | None = None,
        range_events: int = RANGE_EVENTS,
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
        self.receipts = receipts
        self.workers = max(1, workers)
        self.reopen = reopen
        self.range_events = range_events
        self._lock = threading.Lock()
        self._shared_total: Any = None  # events read by all worker processes

    # -- entry -----------------------------------------------------------------

    def run(self, agents: Sequence[str] | None = None) -> Report:
        """Every stream of every agent (named, or found, or expected), in parallel."""
        with few_collections():
            return self._run(agents)

    def _run(self, agents: Sequence[str] | None) -> Report:
        report = Report()
        if self.checkpoints is not None:
            report.problems.extend(self.checkpoints.problems)
        if self.retention_records is not None:
            report.problems.extend(self.retention_records.problems)
        if self.receipts is not None:
            report.problems.extend(self.receipts.problems)
        names = set(agents or ())
        self._named = frozenset(names)
        streams = self.streams(names)
        if self.checkpoints is not None:
            # A stream a signed checkpoint attests is expected even when OpenSearch
            # holds nothing of it any more (deleted whole: TAIL_TRUNCATED, not silence).
            streams |= {(a, s) for a, s in self.checkpoints.streams if not names or a in names}
        if not names:
            names |= {agent for agent, _ in streams}
            if self.checkpoints is not None:
                names |= set(self.checkpoints.heads)
            names |= self.expected | {label.split(":")[0] for label in self.stream_findings}
        units = sorted(streams | {(a, "") for a in names if not any(x == a for x, _ in streams)})
        units = [(a, s) for a, s in units if a in names]
        results = self._verify_units(units)
        for out in results:
            report.agents[out.label] = out
            report.events += out.events
        self._restarts(results)
        for out in results:
            out.stream.extend(self._stream_findings(out))
        report.seconds = time.monotonic() - self._started
        return report

    def _verify_units(self, units: Sequence[tuple[str, str]]) -> list[AgentReport]:
        """Each stream's report, in `units` order. With `reopen` and more than one job:
        `workers` forked processes, each with its own connection (the walk is Python
        CPU, which threads share under the GIL), over whole streams and ranges of the
        large format 2 streams (`_plans`); each holds one stream's pages at a time, so
        memory is per worker, not per event. Otherwise threads over whole streams."""
        plans = self._plans(units) if self.workers > 1 and self.reopen is not None else {}
        work: list[tuple[str, str] | Piece] = []
        for unit in units:
            work.extend(plans[unit].pieces if unit in plans else [unit])
        jobs = min(self.workers, len(work))
        if jobs <= 1 or self.reopen is None:
            with ThreadPoolExecutor(max_workers=jobs or 1) as threads:
                return list(threads.map(lambda unit: self.verify_unit(*unit), units))
        global _FORKED
        fork = multiprocessing.get_context("fork")
        self._shared_total = fork.Value("q", 0)
        _FORKED = self
        try:
            with ProcessPoolExecutor(jobs, mp_context=fork, initializer=_worker_start) as pool:
                done = iter(list(pool.map(_worker_unit, work)))
        except BrokenProcessPool as exc:  # a worker killed (out of memory, a signal)
            raise VerifyError(f"a verify worker process ended abruptly: {exc}") from None
        finally:
            _FORKED = None
            self._events_total = int(self._shared_total.value)
            self._shared_total = None
        out: list[AgentReport] = []
        for unit in units:
            whole = plans.get(unit)
            if whole is None:
                report = next(done)
                assert report is not None
                out.append(report)
                continue
            parts = [next(done) for _ in whole.pieces]
            if any(part is None for part in parts):
                # Its seals changed since they were planned: the one walk, here.
                out.append(self.verify_stream(*unit))
                continue
            merged = merge(*unit, [p for p in parts if p is not None], whole)
            self._checkpoint_expected(merged)
            merged.ranges = resolve(merged.ranges + whole.breaks)
            out.append(merged)
        return out

    def _plans(self, units: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Plan]:
        """Format 2 streams to verify as ranges in parallel (`collector.verify.ranges`):
        only while there are fewer streams than 4 per worker (else whole streams keep
        the workers busy), never in a window (--from/--to), and only streams where
        every event document has a searchable sequence."""
        streams = [u for u in units if u[1]]
        if not streams or len(streams) >= 4 * self.workers or self.time_from or self.time_to:
            return {}
        plans: dict[tuple[str, str], Plan] = {}
        for agent, stream in streams:
            unnumbered = {
                "bool": {
                    "filter": [{"term": {"agent.id": agent}}, {"term": {"agent.stream": stream}}],
                    "must_not": [{"exists": {"field": "event.sequence"}}],
                }
            }
            if self.reader.count(events_index_pattern(self.prefix), unnumbered):
                continue
            attested = self._attested(agent, stream)
            skeleton = StreamWalk(self, agent, stream, AgentReport(agent, stream_id=stream))
            cut = plan(
                skeleton,
                self._seals(agent, stream),
                attested,
                pieces=2 * self.workers,
                min_events=self.range_events,
            )
            if cut is not None:
                plans[(agent, stream)] = cut
        return plans

    def verify_piece(self, piece: Piece) -> AgentReport | None:
        """One range of a stream (`collector.verify.ranges`): what one walk of the whole
        stream adds to its report there, in order (ranges not yet resolved). None when
        the seals there are not the planned ones any more."""
        agent, stream = piece.agent, piece.stream
        out = AgentReport(agent, stream_id=stream)
        points = {
            seq: heads
            for seq, heads in piece.attested.points().items()
            if seq >= piece.first and (piece.stop is None or seq <= piece.stop)
        }
        walk = StreamWalk(self, agent, stream, out, points)
        if piece.number > 0:
            walk.resume(piece.first - 1, piece.head)
        events = self._stream_events(
            agent, stream, piece.first if piece.number > 0 else None, piece.stop
        )
        planned = 0
        within = (piece.spans[0][0] if piece.number > 0 else None, piece.spans[-1][0])
        for info in self._seals(agent, stream, within):
            if info.seal.event_count == 0 and info.signed_ok:
                continue  # heartbeats: compared over all the seals by the lead
            if not piece.expects(info, planned):
                return None
            planned += 1
            walk.seal(info, events)
        if planned != len(piece.spans):
            return None
        if piece.stop is None:
            walk.finish(events)
            walk.heartbeat = piece.heartbeat
            self._check_tail_signed(walk, piece.attested, out)
        out.started = walk.started
        return out

    def streams(self, named: Collection[str]) -> set[tuple[str, str]]:
        """(agent, stream) of every stream with an event, a seal or a chain head record;
        stream "" for an agent's format 1 history."""
        found = self.reader.streams(events_index_pattern(self.prefix), "agent.stream", named)
        found |= self.reader.streams(seals_index(self.prefix), "seal.stream", named)
        found |= self.reader.streams(chainheads_index(self.prefix), "agent.stream", named)
        if self.receipts is not None:
            found |= {k for k in self.receipts.heads if not named or k[0] in named}
        return found

    def verify_unit(self, agent: str, stream: str) -> AgentReport:
        if stream:
            return self.verify_stream(agent, stream)
        return self.verify_agent(agent)

    def _restarts(self, results: Sequence[AgentReport]) -> None:
        """AGENT_RESTARTED on every stream of an agent but its first: the format 1
        history first, then format 2 streams by the signed time of their first seal.
        Each stream is judged on its own; the restart itself is what an auditor must
        see (state lost, or a second machine using the agent's key). Except an upgrade:
        the format 2 stream right after the format 1 history whose signed first event
        claims to continue it where it verifiably ended (`_upgrade`) gets a note."""
        by_agent: dict[str, list[AgentReport]] = {}
        for out in results:
            if out.events or out.seals or out.stream_id:
                by_agent.setdefault(out.agent, []).append(out)
        for streams in by_agent.values():
            ordered = sorted(
                streams,
                key=lambda o: (o.stream_id != "", o.started is None, o.started or 0, o.stream_id),
            )
            if ordered[0].continues is not None:
                # Nothing of its format 1 history to compare with: said, not judged.
                ordered[0].notes.append(
                    f"claims to continue {ordered[0].continues.describe()}; no format 1 "
                    "history found to compare"
                )
            for before, after in itertools.pairwise(ordered):
                ended = max((r.last for r in before.ranges), default=0)
                why = self._upgrade(before, after, ended)
                if why == "":
                    assert after.continues is not None
                    after.notes.append(f"continues format 1 history ended at {ended}")
                    continue
                since = f" at {iso_nanos(after.started)}" if after.started is not None else ""
                previous = f"stream {before.stream_id}" if before.stream_id else "format 1 history"
                after.stream.append(
                    (
                        AGENT_RESTARTED,
                        f"agent {after.agent} started stream {after.stream_id} from its genesis"
                        f"{since}; previous {previous} ended at sequence {ended}"
                        + (f"; {why}" if why else ""),
                    )
                )

    @staticmethod
    def _upgrade(before: AgentReport, after: AgentReport, ended: int) -> str | None:
        """None: `after` claims no continuation; "": it continues `before`, the format 1
        history, where that verifiably ended (last sequence valid, signed head there as
        stated); else why the claim does not hold."""
        if after.claim_problem:
            return f"its first event claims to continue format 1 history, but {after.claim_problem}"
        stated = after.continues
        if stated is None:
            return None
        if before.stream_id:
            return (
                f"its first event claims to continue the {stated.describe()}, but stream "
                f"{before.stream_id} came after that history"
            )
        last = before.ranges[-1] if before.ranges else None
        if last is not None and last.kind not in (VALID, GAP_AT_SOURCE):
            return (
                f"its first event claims to continue the {stated.describe()}, but the format "
                f"1 history ends with {last.kind} ({last.first}-{last.last})"
            )
        signed = before.signed_end
        head = signed[1] if signed is not None and signed[0] == ended else None
        found = stated.mismatch(ended, head)
        return f"the continuation claim did not match: {found}" if found else ""

    # -- one agent ---------------------------------------------------------------

    def verify_agent(self, agent: str) -> AgentReport:
        out = AgentReport(agent)
        seals = self._seals(agent)
        seal_list_peek = Peekable(seals)
        seq_range = self._sequence_window(agent) if (self.time_from or self.time_to) else None
        query: dict[str, Any] = {
            "bool": {
                "filter": [{"term": {"agent.id": agent}}],
                "must_not": [{"exists": {"field": "agent.stream"}}],
            }
        }
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
        attested = self._attested(agent, "")
        walk = Walk(self, agent, out, attested.points())
        for info in seal_list_peek:
            out.seals += 1
            walk.seal(info, events)
        walk.finish(events, bounded=seq_range is not None)
        if walk.covered_end is not None:
            out.signed_end = (walk.covered_end, walk.head)
        if self.time_to is None:
            self._check_tail_signed(walk, attested, out)
        out.ranges = resolve(out.ranges + walk.breaks)
        return out

    def verify_stream(self, agent: str, stream: str) -> AgentReport:
        """One format 2 stream, from its signed seals (`collector.verify.signed`)."""
        out = AgentReport(agent, stream_id=stream)
        attested = self._attested(agent, stream)
        walk = StreamWalk(self, agent, stream, out, attested.points())
        seals = self._seals(agent, stream)
        window = self._sequence_window(agent, stream) if (self.time_from or self.time_to) else None
        first, last = window if window is not None else (None, None)
        events = self._stream_events(agent, stream, first, last)
        for info in seals:
            out.seals += 1
            walk.seal(info, events)
        walk.finish(events)
        out.started = walk.started
        if self.time_to is None:
            self._check_tail_signed(walk, attested, out)
        self._checkpoint_expected(out)
        out.ranges = resolve(out.ranges + walk.breaks)
        return out

    def _checkpoint_expected(self, out: AgentReport) -> None:
        """CHECKPOINT_MISSING: checkpoints configured, none attests this format 2 stream."""
        if (
            self.checkpoint_every_agent
            and self.checkpoints is not None
            and (out.agent, out.stream_id) not in self.checkpoints.streams
        ):
            out.stream.append((CHECKPOINT_MISSING, "no signed checkpoint attests this stream"))

    def _attested(self, agent: str, stream: str) -> Attested:
        """What vouches for how far the stream reached: the chain head record
        (unsigned, written by the collector), signed checkpoints, signed receipts.
        Stream "": the agent's format 1 chain (its record is named by the agent id)."""
        found = Attested()
        name = f"{agent}:{stream}" if stream else agent
        heads_index = chainheads_index(self.prefix)
        stored = self.reader.chain_head(heads_index, name)
        if stored is not None and stored[0] is not None:
            found.add(stored[0], stored[1], CHAIN_HEAD_RECORD, heads_index)
        checkpointed = (
            None
            if self.checkpoints is None
            else self.checkpoints.streams.get((agent, stream))
            if stream
            else self.checkpoints.heads.get(agent)
        )
        if checkpointed is not None:
            seq, head, when = checkpointed
            if seq is not None:
                found.add(seq, head, f"signed checkpoint of {when}", "")
                found.checkpointed = seq
        if self.receipts is not None and (agent, stream) in self.receipts.heads:
            receipt = self.receipts.heads[(agent, stream)]
            found.add(
                receipt.sequence,
                receipt.head.hex(),
                f"signed receipt of {receipt.received} ({receipt.where})",
                "",
            )
            found.receipted = receipt.sequence
        return found

    def _check_tail_signed(
        self, walk: StreamWalk | Walk, attested: Attested, out: AgentReport
    ) -> None:
        """Either format: sequences an anchor attests beyond the last valid seal:
        TAIL_TRUNCATED where no document is left (a heartbeat seal attesting them:
        MISSING); RECEIPT_AHEAD when a signed receipt attests more than the signed
        checkpoints. Anchors within the covered part were compared by the walk."""
        end = walk.covered_end
        points = list(attested.items)
        if walk.heartbeat is not None and (end is None or walk.heartbeat[0] > end):
            points.append(
                (
                    walk.heartbeat[0],
                    walk.heartbeat[1].hex(),
                    "heartbeat seal attests it",
                    seals_index(self.prefix),
                )
            )
        for seq, _head, detail, index in sorted(points, key=lambda p: -p[0]):
            if end is not None and seq <= end:
                break
            kind = MISSING if detail.startswith("heartbeat") else TAIL_TRUNCATED
            start = (end + 1) if end is not None else FIRST_SEQUENCE
            for first, last in absent_runs(start, seq, walk.tail_present):
                out.add(kind, first, last, detail, (index,) if index else ())
            break
        if (
            attested.receipted is not None
            and self.checkpoints is not None
            and (attested.checkpointed or 0) < attested.receipted
        ):
            out.stream.append(
                (
                    RECEIPT_AHEAD,
                    f"a signed receipt attests sequence {attested.receipted}, the signed "
                    f"checkpoints only {attested.checkpointed or 'nothing'}",
                )
            )

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
            and not out.stream_id  # format 2 streams: `verify_stream`
            and (out.agent not in checkpoints.heads)
        ):
            found.append((CHECKPOINT_MISSING, "no signed checkpoint attests this agent"))
        found.extend(self.stream_findings.get(out.label, ()))
        return found

    def _sequence_window(self, agent: str, stream: str = "") -> tuple[int, int] | None:
        low: int | None = None
        high: int | None = None
        for info in self._seals(agent, stream):
            low = info.seal.first_sequence if low is None else min(low, info.seal.first_sequence)
            high = info.seal.last_sequence if high is None else max(high, info.seal.last_sequence)
        return (low, high) if low is not None and high is not None else (1, 0)

    def _stream_events(
        self, agent: str, stream: str, first: int | None, last: int | None
    ) -> Peekable:
        """A format 2 stream's stored events with sequences in `first`..`last` (either
        end open when None), in walk order: by sequence, then index and document; those
        without inline bytes given theirs from the stream's batch documents
        (`collector.verify.batches`, read only once an event needs them)."""
        filters: list[dict[str, Any]] = [
            {"term": {"agent.id": agent}},
            {"term": {"agent.stream": stream}},
        ]
        sequence = {
            bound: value for bound, value in (("gte", first), ("lte", last)) if value is not None
        }
        if sequence:
            filters.append({"range": {"event.sequence": sequence}})
        events = (
            read_event(hit)
            for hit in self.reader.stream(
                events_index_pattern(self.prefix),
                {"bool": {"filter": filters}},
                [{"event.sequence": "asc"}, {"_index": "asc"}, {"_doc": "asc"}],
            )
        )

        def batches(since: int | None) -> Iterator[dict[str, Any]]:
            return self.reader.stream(
                batches_index_pattern(self.prefix),
                batch_query(agent, stream, since, last),
                BATCH_SORT,
                source=["batch"],
                size=BATCH_PAGE,
            )

        joined = BatchBytes(self.prefix, batches(first), reopen=batches)
        return Peekable(with_batch_bytes(events, joined))

    def _seals(
        self, agent: str, stream: str = "", firsts: tuple[int | None, int] | None = None
    ) -> Iterator[SealInfo]:
        """The seals of one stream in sequence order (doc values: ``seal.first_sequence``
        then ``seal.last_sequence``, never ``_id``). Format 1: seals without
        ``seal.stream``. A window selects format 1 seals by their sealing time and
        format 2 seals by their (searchable copy of the signed) event-time range;
        `firsts` (lowest or None, highest) by their first sequence."""
        filters: list[dict[str, Any]] = [{"term": {"agent.id": agent}}]
        if firsts is not None:
            low, high = firsts
            bounds = {"lte": high} if low is None else {"gte": low, "lte": high}
            filters.append({"range": {"seal.first_sequence": bounds}})
        if stream:
            filters.append({"term": {"seal.stream": stream}})
        else:
            filters.append({"bool": {"must_not": [{"exists": {"field": "seal.stream"}}]}})
        if self.time_from:
            field = "seal.max_event_time" if stream else "@timestamp"
            filters.append({"range": {field: {"gte": self.time_from.isoformat()}}})
        if self.time_to:
            field = "seal.min_event_time" if stream else "@timestamp"
            filters.append({"range": {field: {"lte": self.time_to.isoformat()}}})
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

    def absent_kind_signed(
        self, agent: str, stream: str, sequence: int, seal: audit_pb2.Seal
    ) -> tuple[str, str]:
        """EXPIRED or MISSING for the absent event `sequence` of a format 2 seal, from
        signed facts only: the seal's signed event-time range (``max_event_time``) and

        - ``--retention-days N`` (the retention in force): the seal's newest event is
          more than N days before now; or
        - a signed retention record covering the sequence whose deleted index held
          events up to at least the seal's newest one (its signed ``events.newest``),
          deleted after that time plus N days when N is given.

        Nothing the collector writes unsigned beside the seal (``seal.indices``, the
        searchable time fields) counts. Otherwise MISSING: the signed seal proves the
        event existed.
        """
        newest = seal.max_event_time_unix_nano
        days = self.retention_days
        if days is not None and newest + days * 86_400e9 <= self.now.timestamp() * 1e9:
            return EXPIRED, f"the seal's signed event time is older than --retention-days {days:g}"
        records = self.retention_records
        # only a record naming this very stream: sequences restart at 1 in every stream
        record = records.covering(agent, sequence, stream) if records is not None else None
        if record is not None and record.newest_event:
            held = parse_iso_nanos(record.newest_event)
            deleted = parse_iso_nanos(record.time)
            kept = (days or 0) * 86_400e9
            if newest <= held and newest + kept <= deleted:
                return EXPIRED, (
                    f"index {record.index} deleted by {record.enforcer or '?'} "
                    f"({record.where}) after the seal's signed event time"
                )
        return MISSING, "a signed seal proves it existed, within retention"

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
        """Count `count` events read; a progress line at most twice a second (the
        streams run in parallel threads)."""
        with self._lock:
            if self._shared_total is not None:
                with self._shared_total.get_lock():
                    self._shared_total.value += count
                    self._events_total = self._shared_total.value
            else:
                self._events_total += count
            if self.progress is None:
                return
            now = time.monotonic()
            if now - self._last_progress < 0.5:
                return
            self._last_progress = now
            rate = self._events_total / max(now - self._started, 1e-6)
            self.progress(f"verify: {agent}: {self._events_total} events ({rate:.0f}/s)")


# The verifier a forked worker process inherits (set only while `_verify_units` runs
# its pool, which forks after it is set): nothing of it is pickled, only the
# (agent, stream) units and the reports.
_FORKED: Verifier | None = None


def _worker_start() -> None:
    """In a new worker: a connection of its own (the parent's sockets stay the parent's)."""
    verifier = _FORKED
    assert verifier is not None and verifier.reopen is not None
    verifier.reader = Reader(verifier.reopen())


def _worker_unit(unit: tuple[str, str] | Piece) -> AgentReport | None:
    assert _FORKED is not None
    if isinstance(unit, Piece):
        return _FORKED.verify_piece(unit)
    return _FORKED.verify_unit(*unit)
