"""`crm-audit verify`: prove from OpenSearch content, public keys and checkpoints that
nothing was altered, removed, inserted or reordered — or say exactly where it was.

Inputs: the events indices (``{prefix}-events-*``), ``{prefix}-seals``,
``{prefix}-chainheads``, the agents' public keys (``--keys``, the collector's
``integrity.keys_dir``) and optionally the signed checkpoints (``--checkpoints``) and
the signed retention records (``{prefix}-retention`` and the checkpoint directory's
``retention-*.jsonl``, trusted with the collector key: `collector.retention_job.records`).

Per agent, seals (sorted by sequence) and events (sorted by ``event.sequence``) are
streamed with point-in-time searches and ``search_after``; only one seal's range of
events is held in memory at a time. For each seal with a valid signature by a key
registered for the agent, the chain is recomputed from the seal's ``prev_chain_head``
over the events' stored canonical bytes and must end at the sealed head; every
searchable field is re-derived from the canonical bytes (`collector.documents`) and
compared with what is stored. Every sequence ends up in exactly one kind of range
(where the checks reach several for one sequence, the first in `PRECEDENCE` wins:
MISSING, EXPIRED, ALTERED, REORDERED, SEAL_INVALID, INSERTED, TAIL_TRUNCATED,
CHAIN_BREAK, SEAL_MISSING, UNVERIFIABLE, GAP_AT_SOURCE, PENDING, VALID), and each
finding names the indices of the documents it was reached from:

    VALID           signed, chained, every field as signed
    MISSING         a seal (or heartbeat seal, or the chain head record) proves the
                    event existed and it is not there, and no signed retention record
                    accounts for it (or the record's index was deleted before its
                    retention ended: --retention-days)
    EXPIRED         as MISSING, but a signed retention record (written by the collector
                    before it deleted the index, or for a deletion ISM made; signature
                    checked with the collector keys passed) lists the sequence among
                    those its deleted index held
    ALTERED         stored bytes or searchable fields differ from what was signed
    INSERTED        a document that no valid seal covers (and not PENDING), or a second
                    document for a sequence: the one a valid seal covers is the one
                    under that sequence and ``_id`` in the index dated by its signed
                    event time; the other is INSERTED, both indices named
    REORDERED       the signed content is intact but sits under another sequence / _id
    CHAIN_BREAK     the seal (or heartbeat seal) does not continue the chain where the
                    seal before it by sequence ended: its ``prev_chain_head`` (a
                    heartbeat: its restated head) is not the chain head at the sequence
                    before its first one (see "Seal links" below)
    TAIL_TRUNCATED  a signed checkpoint (or the chain head record) attests sequences
                    beyond the last one found, and neither a seal nor a document of them
                    is left
    GAP_AT_SOURCE   the agent itself recorded a loss (event flagged gap_at_source)
    SEAL_MISSING    events present and chained into the next seal, but their own seal
                    was deleted
    SEAL_INVALID    a seal whose signature does not verify, with an unregistered key, or
                    whose searchable fields differ from its signed bytes
    UNVERIFIABLE    an event directly after a missing one (its predecessor's hash is
                    gone, so its own bytes cannot be checked)
    PENDING         not a finding: after the last valid seal, the run of documents that
                    continues it sequence by sequence, each stored as the collector
                    stores it and ingested (``event.ingested``, unsigned) within
                    ``--grace`` of now — a live stream whose seal is not searchable yet.
                    Past the grace period the same documents are INSERTED.

**Seal links.** Consecutive seals by sequence must link: a seal of events whose first
sequence directly follows the last sequence covered so far must carry that position's
chain head as ``prev_chain_head`` (the chain over its own events then starts there; a
stored event keeps no ``chain_prev``, the collector and this walk chain each seal's
first event from the seal's ``prev_chain_head``). A heartbeat seal restating the head at
sequence s must restate the chain head at s. No restart point is legitimate: an agent
that lost its chain state and started again from its genesis value (or any other head)
breaks the proof that nothing was dropped or replaced between the two chains, and the
first seal after the break is reported ``CHAIN_BREAK`` over its whole range — the same
range as the collector's ``fork`` alert at ingest — even though its events are signed and
chained among themselves; every later seal that links to it is VALID again. A heartbeat
that does not link is ``CHAIN_BREAK`` at its one sequence. Not compared: heartbeats at
the genesis head before any event (sequence 0), heartbeats beyond the last covered
sequence (those attest a tail, see TAIL_TRUNCATED / MISSING), positions whose chain
hash is not known (an absent or altered event there is reported as such already), and
the link into the first seal of a ``--from`` window. Seals that overlap what is covered
(a batch re-sealed on resend: same range and heads, or a re-cut range) are compared with
what they overlap: agreeing is not a finding, disagreeing is ALTERED. An agent whose
state directory was deleted starts again at sequence 1: its seals overlap older ones and
fall under that overlap comparison, not under CHAIN_BREAK.

Exit code (see `collector.admin.cli`): 0 only when every range is VALID or PENDING.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from collector.checkpoints import CheckpointView
from collector.documents import parse_iso_nanos, to_document
from collector.index import Requester, Response
from collector.integrity import chainheads_index, seals_index
from collector.lifecycle import events_index_pattern
from collector.retention_job.records import RetentionRecords
from collector.verify_anchors import CHECKPOINT_MISSING, MISSING_STREAM
from proto import integrity
from proto.v1 import audit_pb2

VALID = "VALID"
MISSING = "MISSING"
EXPIRED = "EXPIRED"
ALTERED = "ALTERED"
INSERTED = "INSERTED"
REORDERED = "REORDERED"
CHAIN_BREAK = "CHAIN_BREAK"
TAIL_TRUNCATED = "TAIL_TRUNCATED"
GAP_AT_SOURCE = "GAP_AT_SOURCE"
SEAL_MISSING = "SEAL_MISSING"
SEAL_INVALID = "SEAL_INVALID"
UNVERIFIABLE = "UNVERIFIABLE"
PENDING = "PENDING"

# Exactly one verdict per sequence: where the checks reach several for one sequence,
# the first of this list wins (`resolve`). Findings come before what is not a finding,
# what a signature proves before what is inferred.
PRECEDENCE = (
    MISSING,
    EXPIRED,
    ALTERED,
    REORDERED,
    SEAL_INVALID,
    INSERTED,
    TAIL_TRUNCATED,
    CHAIN_BREAK,
    SEAL_MISSING,
    UNVERIFIABLE,
    GAP_AT_SOURCE,
    PENDING,
    VALID,
)
# Not findings: a report of only these is VALID (exit 0).
NOT_FINDINGS = frozenset({VALID, PENDING})

FIRST_SEQUENCE = 1  # agents number their events from 1
PAGE = 1000
_HASH_MEMORY = 20_000  # recent (sequence -> hash) kept for overlapping seals


class VerifyError(Exception):
    """OpenSearch could not be read (the verification could not be carried out)."""


@dataclass(frozen=True)
class Range:
    """One contiguous run of sequences of one kind."""

    kind: str
    first: int
    last: int
    detail: str = ""
    # The indices of the documents this verdict was reached from (event documents, the
    # seal); empty for VALID, where naming every index would only repeat the layout.
    indices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "first": self.first,
            "last": self.last,
            "detail": self.detail,
            "indices": list(self.indices),
        }


@dataclass
class AgentReport:
    """Everything found for one agent, ranges in sequence order."""

    agent: str
    ranges: list[Range] = field(default_factory=list)
    events: int = 0
    seals: int = 0
    # Findings about the stream as a whole, (kind, detail): MISSING_STREAM and the
    # checkpoint findings of `collector.verify_anchors`.
    stream: list[tuple[str, str]] = field(default_factory=list)

    def add(
        self, kind: str, first: int, last: int, detail: str = "", indices: Sequence[str] = ()
    ) -> None:
        named = tuple(sorted(set(indices))) if kind != VALID else ()
        if self.ranges:
            tail = self.ranges[-1]
            if tail.kind == kind and tail.detail == detail and tail.last + 1 == first:
                self.ranges[-1] = _joined(tail, last, named)
                return
        self.ranges.append(Range(kind, first, last, detail, named))

    @property
    def valid(self) -> bool:
        return not self.stream and all(r.kind in NOT_FINDINGS for r in self.ranges)


def _joined(tail: Range, last: int, indices: tuple[str, ...]) -> Range:
    """`tail` extended to `last`, naming the indices of both."""
    named = (
        tail.indices
        if set(indices) <= set(tail.indices)
        else tuple(sorted(set(tail.indices) | set(indices)))
    )
    return Range(tail.kind, tail.first, max(tail.last, last), tail.detail, named)


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
                    "valid": report.valid,
                    "events": report.events,
                    "seals": report.seals,
                    "stream": [{"kind": k, "detail": d} for k, d in report.stream],
                    "ranges": [r.to_json() for r in report.ranges],
                }
                for name, report in sorted(self.agents.items())
            },
        }

    def to_text(self) -> str:
        lines = []
        for name, report in sorted(self.agents.items()):
            state = "VALID" if report.valid else "FINDINGS"
            lines.append(f"agent {name}: {state} ({report.events} events, {report.seals} seals)")
            for kind, detail in report.stream:
                lines.append(f"  {kind:<14} {detail}")
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
            f"{verdict}: {len(self.agents)} agents, {self.events} events in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


# -- reading OpenSearch ------------------------------------------------------------------


class Reader:
    """Point-in-time + search_after streaming over one index pattern."""

    def __init__(self, request: Requester) -> None:
        self.request = request

    def stream(
        self,
        pattern: str,
        query: Mapping[str, Any],
        sort: Sequence[Mapping[str, Any]],
        source: Sequence[str] | bool = True,
    ) -> Iterator[dict[str, Any]]:
        opened = self.request(
            "POST",
            f"/{pattern}/_search/point_in_time",
            params={"keep_alive": "5m", "expand_wildcards": "open"},
        )
        if opened.status in (400, 404) and _no_index(opened.body):
            return
        if opened.status != 200:
            raise _failed(f"cannot open a point in time on {pattern}", opened)
        pit = opened.body["pit_id"]
        try:
            after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {
                    "size": PAGE,
                    "query": query,
                    "sort": list(sort),
                    "pit": {"id": pit, "keep_alive": "5m"},
                    "_source": source,
                    "track_total_hits": False,
                }
                if after is not None:
                    body["search_after"] = after
                page = self.request("POST", "/_search", body=body)
                if page.status != 200:
                    raise _failed(f"search on {pattern} failed", page)
                pit = page.body.get("pit_id", pit)
                hits = page.body["hits"]["hits"]
                yield from hits
                if len(hits) < PAGE:
                    return
                after = hits[-1]["sort"]
        finally:
            self.request("DELETE", "/_search/point_in_time", body={"pit_id": [pit]})

    def agents(self, pattern: str, agg_field: str) -> set[str]:
        found: set[str] = set()
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [{"agent": {"terms": {"field": agg_field}}}],
            }
            if after:
                composite["after"] = after
            response = self.request(
                "POST",
                f"/{pattern}/_search",
                body={"size": 0, "aggs": {"agents": {"composite": composite}}},
                params={"ignore_unavailable": "true", "allow_no_indices": "true"},
            )
            if response.status != 200:
                raise _failed(f"cannot list agents in {pattern}", response)
            agg = response.body.get("aggregations", {}).get("agents", {})
            buckets = agg.get("buckets", [])
            found.update(str(b["key"]["agent"]) for b in buckets)
            after = agg.get("after_key")
            if not buckets or not after:
                return found

    def index_exists(self, name: str) -> bool:
        response = self.request(
            "GET", f"/{name}/_settings", params={"filter_path": "*.settings.index.uuid"}
        )
        if response.status == 404:
            return False
        if response.status == 200:
            return True
        raise _failed(f"cannot check index {name}", response)

    def chain_head(self, index: str, agent: str) -> tuple[int | None, str] | None:
        response = self.request("GET", f"/{index}/_doc/{agent}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise _failed(f"cannot read chain head of {agent}", response)
        chain = response.body.get("_source", {}).get("chain", {})
        seq = chain.get("sequence")
        return (int(seq) if seq is not None else None, str(chain.get("head", "")))


def _failed(what: str, response: Response) -> VerifyError:
    """`what` failed: the status and why, when OpenSearch or the connection said so.

    "HTTP 0" alone hides a certificate that did not verify; "HTTP 403" alone hides which
    permission the role lacks (the security plugin names it in its reason).
    """
    reason = ""
    error = response.body.get("error") if isinstance(response.body, Mapping) else None
    if isinstance(error, Mapping):
        reason = str(error.get("reason") or error.get("type") or "")
    elif error is not None:
        reason = str(error)
    reason = " ".join(reason.split())[:300]
    return VerifyError(f"{what}: HTTP {response.status}" + (f" ({reason})" if reason else ""))


def _no_index(body: Any) -> bool:
    text = json.dumps(body)
    return "index_not_found" in text or "invalid id: [null]" in text or "no such index" in text


# -- per-event analysis -------------------------------------------------------------------


@dataclass
class StoredEvent:
    """One event document as read back."""

    position: int  # event.sequence as stored (searchable)
    doc_id: str
    index: str
    source: dict[str, Any]
    canonical: bytes | None
    decoded: audit_pb2.AuditEvent | None
    hint: bytes | None  # integrity.chain_hash as stored (not trusted)

    @property
    def decoded_sequence(self) -> int | None:
        return self.decoded.sequence if self.decoded is not None else None


def _stored_event(hit: Mapping[str, Any]) -> StoredEvent:
    source = hit["_source"]
    integ = source.get("integrity", {})
    canonical: bytes | None = None
    decoded: audit_pb2.AuditEvent | None = None
    try:
        canonical = base64.b64decode(integ["canonical"], validate=True)
        decoded = audit_pb2.AuditEvent.FromString(canonical)
    except (KeyError, ValueError, TypeError, DecodeError):
        pass
    hint: bytes | None = None
    with contextlib.suppress(KeyError, ValueError, TypeError):
        hint = bytes.fromhex(integ["chain_hash"])
    return StoredEvent(
        position=int(source.get("event", {}).get("sequence", -1)),
        doc_id=str(hit["_id"]),
        index=str(hit["_index"]),
        source=source,
        canonical=canonical,
        decoded=decoded,
        hint=hint,
    )


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "attributes":
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def field_differences(event: StoredEvent, agent: str) -> list[str]:
    """Searchable fields that differ from the document re-derived from the signed bytes."""
    assert event.decoded is not None
    stored = dict(event.source)
    ingested = stored.get("event", {}).get("ingested")
    try:
        received = parse_iso_nanos(ingested) if isinstance(ingested, str) else 0
    except ValueError:
        received = 0
    derived = to_document(event.decoded, agent_id=agent, received_unix_nano=received).source
    left = _flatten(stored)
    right = _flatten(derived)
    for key in ("integrity.canonical", "integrity.chain_hash"):
        left.pop(key, None)
    return sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))


# -- the verifier ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SealInfo:
    """A seal read back: the signed message plus what the collector recorded beside it."""

    seal: audit_pb2.Seal
    indices: tuple[str, ...]
    problem: str  # "" when the seal is authentic and consistent
    index: str = ""  # where the seal document was read from


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
        seal_list_peek = _Peekable(seals)
        seq_range = self._sequence_window(agent) if (self.time_from or self.time_to) else None
        query: dict[str, Any] = {"bool": {"filter": [{"term": {"agent.id": agent}}]}}
        if seq_range is not None:
            query["bool"]["filter"].append(
                {"range": {"event.sequence": {"gte": seq_range[0], "lte": seq_range[1]}}}
            )
        events = _Peekable(
            _stored_event(hit)
            for hit in self.reader.stream(
                events_index_pattern(self.prefix),
                query,
                [{"event.sequence": "asc"}, {"_index": "asc"}, {"_doc": "asc"}],
            )
        )
        walk = _Walk(self, agent, out)
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
            yield _seal_info(hit, agent, keys)

    def _check_tail(self, agent: str, walk: _Walk, out: AgentReport) -> None:
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
        # A heartbeat within the covered range was compared by the walk (`_Walk.heartbeat`).
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
                # PENDING or INSERTED already (`_Walk.finish`), one verdict each.
                start = (end + 1) if end is not None else FIRST_SEQUENCE
                for first, last in _absent_runs(start, seq, walk.tail_present):
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


def resolve(ranges: Sequence[Range]) -> list[Range]:
    """One verdict per sequence: where ranges overlap, the kind first in `PRECEDENCE`
    wins there (ties: the range added first). Adjacent pieces of one kind and detail
    are joined. A sweep over the ranges' ends: memory grows with the number of ranges,
    not with the sequences they span."""
    rank = {kind: i for i, kind in enumerate(PRECEDENCE)}
    ordered = sorted(enumerate(ranges), key=lambda item: item[1].first)
    points = sorted({r.first for r in ranges} | {r.last + 1 for r in ranges})
    active: list[tuple[int, int, Range]] = []  # heap of (rank, order, range)
    out: list[Range] = []
    nxt = 0
    for i, point in enumerate(points[:-1]):
        while nxt < len(ordered) and ordered[nxt][1].first <= point:
            order, r = ordered[nxt]
            heapq.heappush(active, (rank.get(r.kind, len(rank)), order, r))
            nxt += 1
        while active and active[0][2].last < point:
            heapq.heappop(active)
        if not active:
            continue
        best = active[0][2]
        stop = points[i + 1] - 1
        if out:
            tail = out[-1]
            if tail.kind == best.kind and tail.detail == best.detail and tail.last + 1 == point:
                out[-1] = _joined(tail, stop, best.indices)
                continue
        out.append(Range(best.kind, point, stop, best.detail, best.indices))
    return out


def _genuine_rank(doc: StoredEvent, seq: int, agent: str, info: SealInfo) -> tuple[bool, ...]:
    """Sort key choosing, among documents carrying the signed event `seq`, the one the
    collector wrote: under that sequence and ``_id``, then in an index whose date is the
    signed event time's (the collector names indices by it), then one the seal's
    (unsigned) index list names. A copy elsewhere is the extra one: INSERTED."""
    dated = False
    if doc.decoded is not None and doc.decoded.time_unix_nano > 0:
        when = datetime.fromtimestamp(doc.decoded.time_unix_nano // 1_000_000_000, UTC)
        month = when.strftime("%Y.%m")
        dated = doc.index.endswith(f"-{month}") or f"-{month}." in doc.index
    return (
        doc.position != seq,
        doc.doc_id != f"{agent}:{seq}",
        not dated,
        doc.index not in info.indices,
    )


def _extra(
    doc: StoredEvent, genuine: StoredEvent | None
) -> tuple[str, int, int, str, tuple[str, ...]]:
    """The INSERTED verdict for a second document of a sequence, naming both indices."""
    detail = f"extra document {doc.doc_id} in {doc.index}"
    where: tuple[str, ...] = (doc.index,)
    if genuine is not None:
        detail += f" (the signed one is in {genuine.index})"
        where += (genuine.index,)
    return INSERTED, doc.position, doc.position, detail, where


def _seal_info(
    hit: Mapping[str, Any], agent: str, keys: Mapping[str, Ed25519PublicKey]
) -> SealInfo:
    src = hit["_source"].get("seal", {})
    indices = tuple(str(i) for i in src.get("indices", []) or [])
    where = str(hit.get("_index", ""))
    try:
        seal = audit_pb2.Seal.FromString(base64.b64decode(src["raw"], validate=True))
    except (KeyError, ValueError, TypeError, DecodeError):
        seal = audit_pb2.Seal(
            agent_id=agent,
            first_sequence=int(src.get("first_sequence", 0)),
            last_sequence=int(src.get("last_sequence", 0)),
        )
        return SealInfo(seal, indices, "signed seal bytes unreadable", where)
    findings = integrity.check_seal(seal, agent, keys)
    if findings:
        return SealInfo(seal, indices, findings[0].detail, where)
    searchable = {
        "first_sequence": seal.first_sequence,
        "last_sequence": seal.last_sequence,
        "event_count": seal.event_count,
        "prev_chain_head": seal.prev_chain_head.hex(),
        "chain_head": seal.chain_head.hex(),
        "key_id": seal.key_id,
    }
    changed = sorted(k for k, v in searchable.items() if src.get(k) != v)
    if changed:
        problem = f"searchable fields differ from the signed seal: {changed}"
        return SealInfo(seal, indices, problem, where)
    return SealInfo(seal, indices, "", where)


def _absent_runs(first: int, last: int, present: set[int]) -> Iterator[tuple[int, int]]:
    """The runs of `first`..`last` without a sequence of `present`."""
    run: int | None = None
    for seq in sorted(p for p in present if first <= p <= last):
        if run is None:
            run = first
        if seq > run:
            yield run, seq - 1
        run = seq + 1
    start = first if run is None else run
    if start <= last:
        yield start, last


class _Peekable(Iterator[Any]):
    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self._head: list[Any] = []

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> Any:
        if self._head:
            return self._head.pop()
        return next(self._source)

    def peek(self) -> Any | None:
        if not self._head:
            try:
                self._head.append(next(self._source))
            except StopIteration:
                return None
        return self._head[-1]


class _Walk:
    """State of one agent's walk: how far valid seals cover, hashes, the last head."""

    def __init__(self, verifier: Verifier, agent: str, out: AgentReport) -> None:
        self.v = verifier
        self.agent = agent
        self.out = out
        self.covered_end: int | None = None
        self.head = integrity.genesis(agent)
        self.hashes: OrderedDict[int, bytes] = OrderedDict()
        self.heartbeat: tuple[int, bytes] | None = None
        self.pending_invalid: list[SealInfo] = []
        # Heartbeats (sequence, head) not yet covered by a seal, compared once they are.
        self.pending_heartbeats: dict[tuple[int, bytes], None] = {}
        self.breaks: list[Range] = []  # heartbeat CHAIN_BREAKs, laid over the ranges
        self.tail_present: set[int] = set()  # sequences after the last seal with a document

    def _remember(self, seq: int, value: bytes) -> None:
        self.hashes[seq] = value
        while len(self.hashes) > _HASH_MEMORY:
            self.hashes.popitem(last=False)

    def _take(self, events: _Peekable, upto: int) -> list[StoredEvent]:
        taken: list[StoredEvent] = []
        while True:
            nxt = events.peek()
            if nxt is None or nxt.position > upto:
                break
            taken.append(next(events))
        self.out.events += len(taken)
        self.v.tick(self.agent, len(taken))
        return taken

    def seal(self, info: SealInfo, events: _Peekable) -> None:
        seal = info.seal
        if info.problem:
            self.out.add(
                SEAL_INVALID, seal.first_sequence, seal.last_sequence, info.problem, (info.index,)
            )
            return
        if seal.event_count == 0:
            if seal.chain_head == integrity.genesis(self.agent):
                return  # before the agent's first event: nothing to link to
            newer = self.heartbeat is None or seal.last_sequence >= self.heartbeat[0]
            if newer:
                self.heartbeat = (seal.last_sequence, seal.chain_head)
            self.pending_heartbeats[(seal.last_sequence, seal.chain_head)] = None
            self._check_heartbeats()
            return
        first, last = seal.first_sequence, seal.last_sequence
        end = self.covered_end
        broken = ""  # why this seal does not continue the chain, if it does not
        if end is not None and first <= end:
            # Overlaps what earlier seals covered (a re-cut batch): it must agree.
            before = self.hashes.get(first - 1) if first > 0 else None
            if before is not None and before != seal.prev_chain_head:
                self.out.add(
                    ALTERED, first, last, "two signed seals disagree on this range", (info.index,)
                )
                return
            if last <= end:
                at_last = self.hashes.get(last)
                if at_last is not None and at_last != seal.chain_head:
                    self.out.add(
                        ALTERED,
                        first,
                        last,
                        "two signed seals disagree on this range",
                        (info.index,),
                    )
                return
            first = end + 1
            prev: bytes | None = self.head
        else:
            start = FIRST_SEQUENCE if end is None else end + 1
            gap_events = self._take(events, first - 1)
            gap_events = [e for e in gap_events if e.position >= start or end is None]
            prev = self._unsealed_run(start, first - 1, gap_events, seal.prev_chain_head)
            if prev is None:
                prev = seal.prev_chain_head
                if end is not None and first == end + 1 and prev != self.head:
                    restart = prev == integrity.genesis(self.agent)
                    broken = (
                        f"seal {first}-{last} continues chain head {prev.hex()[:16]}"
                        + (" (the genesis value: the chain restarted)" if restart else "")
                        + f", not the head {self.head.hex()[:16]} at sequence {end}"
                    )
        in_range = self._take(events, last)
        self._verify_range(info, first, last, prev, in_range, broken)
        self.covered_end = last
        self.head = seal.chain_head
        self._remember(last, seal.chain_head)
        self._check_heartbeats()

    def _awaiting_seal(self, event: StoredEvent) -> bool:
        seq = event.position
        if event.decoded is None or event.decoded.sequence != seq:
            return False
        if event.doc_id != f"{self.agent}:{seq}" or not self.v.fresh(event):
            return False
        return not field_differences(event, self.agent)

    def _check_heartbeats(self) -> None:
        """Compare heartbeats now within the covered range with the chain there."""
        end = self.covered_end
        if end is None or not self.pending_heartbeats:
            return
        for seq, head in [k for k in self.pending_heartbeats if k[0] <= end]:
            del self.pending_heartbeats[(seq, head)]
            known = self.hashes.get(seq)
            if known is not None and known != head:
                self.breaks.append(
                    Range(
                        CHAIN_BREAK,
                        seq,
                        seq,
                        f"heartbeat seal restates head {head.hex()[:16]} at sequence {seq}, "
                        f"the chain has {known.hex()[:16]}",
                    )
                )

    def _unsealed_run(
        self, start: int, stop: int, events: list[StoredEvent], target: bytes
    ) -> bytes | None:
        """Events between the covered part and the next seal (no seal of their own).

        If they chain from the last sealed head to the next seal's ``prev_chain_head``,
        the next seal vouches for them: SEAL_MISSING. Otherwise they are INSERTED and
        the sequences without an event are MISSING.
        """
        if self.covered_end is None and not events:
            if target != integrity.genesis(self.agent) and self.v.time_from is None:
                if stop >= start:
                    self.out.add(MISSING, start, stop, "chain does not start at genesis")
                else:
                    self.out.add(MISSING, start, start, "chain does not start at genesis")
            return None
        if stop < start and not events:
            return None
        by_position: dict[int, list[StoredEvent]] = {}
        for e in events:
            by_position.setdefault(e.position, []).append(e)
        prev = self.head if self.covered_end is not None else integrity.genesis(self.agent)
        walked: list[int] = []
        ok = True
        for seq in range(start, stop + 1):
            cands = [e for e in by_position.get(seq, []) if e.canonical is not None]
            if not cands:
                ok = False
                break
            prev = integrity.chain_link(prev, cands[0].canonical or b"")
            walked.append(seq)
        if ok and prev == target and events:
            for seq in walked:
                used = by_position[seq][0]
                self.out.add(
                    SEAL_MISSING, seq, seq, "events chain into the next seal", (used.index,)
                )
            for e in events:
                if e is not by_position[e.position][0]:
                    self.out.add(*_extra(e, by_position[e.position][0]))
            return target
        for e in events:
            self.out.add(
                INSERTED, e.position, e.position, "not covered by any valid seal", (e.index,)
            )
        present = set(by_position)
        for seq in range(start, stop + 1):
            if seq not in present:
                self.out.add(MISSING, seq, seq, "no event and no seal")
        return None

    def _verify_range(
        self,
        info: SealInfo,
        first: int,
        last: int,
        prev: bytes | None,
        docs: list[StoredEvent],
        broken: str = "",
    ) -> None:
        seal = info.seal
        marks: dict[int, tuple[str, str, tuple[str, ...]]] = {}

        def mark(seq: int, kind: str, detail: str = "", *where: str) -> None:
            current = marks.get(seq)
            if current is None or PRECEDENCE.index(kind) < PRECEDENCE.index(current[0]):
                marks[seq] = (kind, detail, where)

        # Which stored document carries the signed event of each sequence.
        by_decoded: dict[int, list[StoredEvent]] = {}
        for doc in docs:
            if doc.decoded is not None:
                by_decoded.setdefault(doc.decoded.sequence, []).append(doc)
        chosen: dict[int, StoredEvent] = {}
        for seq, cands in by_decoded.items():
            cands.sort(key=lambda d: _genuine_rank(d, seq, self.agent, info))
            chosen[seq] = cands[0]

        tentative: list[int] = []
        problem_at = first - 1
        for seq in range(first, last + 1):
            found = chosen.get(seq)
            if found is None:
                kind, detail = self.v.absent_kind(self.agent, seq)
                mark(seq, kind, detail, info.index)
                prev = None
                problem_at = seq
                continue
            data = found.canonical or b""
            hint = found.hint if found.position == seq else None
            if prev is None:
                mark(seq, UNVERIFIABLE, "its predecessor is missing", found.index)
                prev = hint
                problem_at = seq
                continue
            current = integrity.chain_link(prev, data)
            if hint is not None and hint != current:
                mark(seq, ALTERED, "stored bytes do not hash into the chain", found.index)
                prev = hint
                problem_at = seq
                continue
            prev = current
            self._remember(seq, current)
            tentative.append(seq)
        if prev != seal.chain_head:
            for seq in tentative:
                if seq > problem_at:
                    mark(seq, ALTERED, "chain does not reach the sealed head", chosen[seq].index)

        for seq in tentative:
            if seq in marks:
                continue
            doc = chosen[seq]
            if doc.position != seq or doc.doc_id != f"{self.agent}:{seq}":
                mark(seq, REORDERED, "signed event stored under another sequence or _id", doc.index)
                continue
            diff = field_differences(doc, self.agent)
            if diff:
                what = "fields differ from the signed bytes: " + ", ".join(diff)
                mark(seq, ALTERED, what, doc.index)
            elif doc.decoded is not None and integrity.FLAG_GAP_AT_SOURCE in doc.decoded.flags:
                mark(seq, GAP_AT_SOURCE, "the agent recorded a loss here", doc.index)
            else:
                mark(seq, VALID)
        if broken:
            # After the other checks, so a more serious finding in the range still shows.
            for seq in range(first, last + 1):
                mark(seq, CHAIN_BREAK, broken, info.index)
        used = {id(d) for d in chosen.values()}
        for doc in docs:
            if id(doc) in used:
                continue
            if doc.decoded is None:
                mark(doc.position, ALTERED, f"{doc.doc_id}: stored bytes unreadable", doc.index)
            else:
                self.out.add(*_extra(doc, chosen.get(doc.position)))
        for seq in range(first, last + 1):
            kind, detail, where = marks.get(seq, (MISSING, "", ()))
            self.out.add(kind, seq, seq, detail, where)

    def finish(self, events: _Peekable, *, bounded: bool) -> None:
        """Events after the last valid seal: nothing signed vouches for them.

        PENDING (not a finding) for the run that continues the covered sequences one by
        one, each ingested within the grace period before now and stored as the
        collector stores it (its signed bytes carry that sequence, under its ``_id``,
        every searchable field as in those bytes): a live stream whose seal is not
        searchable yet. ``event.ingested`` is written by the collector and not
        signed: a forged event can only buy itself the grace period, after which it is
        INSERTED. Every other document here is INSERTED.
        """
        expect = FIRST_SEQUENCE if self.covered_end is None else self.covered_end + 1
        live = self.v.grace is not None
        while True:
            rest = self._take(events, sys.maxsize)
            if not rest:
                return
            for e in rest:
                self.tail_present.add(e.position)
                if live and e.position == expect and self._awaiting_seal(e):
                    expect += 1
                    detail = f"unsealed, ingested within the grace period ({self.v.grace_text})"
                    self.out.add(PENDING, e.position, e.position, detail, (e.index,))
                    continue
                live = False  # a gap, a duplicate or an old event ends the live run
                self.out.add(
                    INSERTED, e.position, e.position, "not covered by any valid seal", (e.index,)
                )
