"""What an events index holds, read from OpenSearch: its event-time range and, before a
deletion, what the retention record must prove (per chain sequence runs and seals).

A chain is an agent's stream format 1 history (one per agent) or one format 2 stream
(one per agent incarnation, sequences restarting at 1): runs are kept per chain, keyed
(agent, stream) with stream "" for format 1, so a record never lets one stream's
deleted sequences stand for another's.

The sequence runs come from the index itself (every stored ``event.sequence``, read in
order with a point in time), not only from the seals: an event that was already gone
before the deletion is then not in any run, and `verify` still calls it MISSING. The
seal ranges (seals whose ``seal.indices`` name the index) are recorded beside them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.documents import parse_iso_nanos
from collector.errors import RetentionError
from collector.gate import seals_index
from collector.index import Requester, Response
from collector.retention_job.records import Runs, runs_of

PAGE = 5000
_NANOS_FORMAT = "strict_date_optional_time_nanos"


def fail(what: str, response: Response) -> RetentionError:
    detail = " ".join(json.dumps(response.body).split())[:300]
    return RetentionError(f"{what}: HTTP {response.status}: {detail}")


@dataclass(frozen=True)
class EventTimes:
    """Event-time range and document count of one index (None: no document)."""

    documents: int
    oldest_ns: int | None
    newest_ns: int | None


def _agg_time(bucket: Mapping[str, Any], name: str) -> int | None:
    agg = bucket.get(name, {})
    text = agg.get("value_as_string") if isinstance(agg, Mapping) else None
    if agg.get("value") is None or not isinstance(text, str):
        return None
    return parse_iso_nanos(text if text.endswith("Z") else text + "Z")


def event_times(request: Requester, pattern: str) -> dict[str, EventTimes]:
    """Per index of `pattern`: documents, oldest and newest ``@timestamp`` (event time).

    A max aggregation on the event time, never the index's creation date: an index
    created today for events of 2019 (a late agent) is as old as its newest event.
    """
    response = request(
        "POST",
        f"/{pattern}/_search",
        body={
            "size": 0,
            "aggs": {
                "indices": {
                    "terms": {"field": "_index", "size": 10_000},
                    "aggs": {
                        "oldest": {"min": {"field": "@timestamp", "format": _NANOS_FORMAT}},
                        "newest": {"max": {"field": "@timestamp", "format": _NANOS_FORMAT}},
                    },
                }
            },
        },
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
    )
    if response.status == 404:
        return {}
    if response.status != 200:
        raise fail(f"cannot read the event times of {pattern}", response)
    buckets = response.body.get("aggregations", {}).get("indices", {}).get("buckets", [])
    return {
        str(b["key"]): EventTimes(
            int(b.get("doc_count", 0)), _agg_time(b, "oldest"), _agg_time(b, "newest")
        )
        for b in buckets
    }


def scan(
    request: Requester,
    index: str,
    query: Mapping[str, Any],
    sort: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
) -> Iterator[dict[str, Any]]:
    """Every hit of `query` in `index` in `sort` order (point in time + search_after)."""
    opened = request("POST", f"/{index}/_search/point_in_time", params={"keep_alive": "2m"})
    if opened.status == 404:
        return
    if opened.status != 200:
        raise fail(f"cannot open a point in time on {index}", opened)
    pit = opened.body["pit_id"]
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": query,
                "sort": [*sort, {"_doc": "asc"}],
                "pit": {"id": pit, "keep_alive": "2m"},
                "_source": list(fields),
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            page = request("POST", "/_search", body=body)
            if page.status != 200:
                raise fail(f"search on {index} failed", page)
            pit = page.body.get("pit_id", pit)
            hits = page.body["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]
    finally:
        request("DELETE", "/_search/point_in_time", body={"pit_id": [pit]})


Chain = tuple[str, str]  # (agent id, stream id; "" for an agent's format 1 history)


@dataclass
class AgentEvidence:
    """One chain's part of an index: what is stored, and what the seals say."""

    documents: int = 0
    sequences: Runs = field(default_factory=list)
    seals: Runs = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "sequences": [list(r) for r in self.sequences],
            "seals": [list(r) for r in self.seals],
        }


def stored_runs(request: Requester, index: str) -> dict[Chain, AgentEvidence]:
    """Per chain the runs of ``event.sequence`` stored in `index`."""
    out: dict[Chain, AgentEvidence] = {}
    current: str | None = None
    # One agent at a time (the scan is sorted by agent): its streams interleave.
    sequences: dict[str, list[int]] = {}

    def flush() -> None:
        if current is None:
            return
        for stream, found in sequences.items():
            entry = out.setdefault((current, stream), AgentEvidence())
            entry.documents += len(found)
            entry.sequences = runs_of(sorted({*found}))

    for hit in scan(
        request,
        index,
        {"match_all": {}},
        [{"agent.id": "asc"}, {"event.sequence": "asc"}],
        ["agent.id", "agent.stream", "event.sequence"],
    ):
        agent, seq = hit["sort"][0], hit["sort"][1]
        if agent != current:
            flush()
            current, sequences = str(agent), {}
        stream = str(hit["_source"].get("agent", {}).get("stream") or "")
        sequences.setdefault(stream, []).append(int(seq))
    flush()
    return out


def seal_ranges(request: Requester, prefix: str, index: str) -> dict[Chain, Runs]:
    """Per chain the merged ranges of the seals whose ``seal.indices`` name `index`."""
    ranges: dict[Chain, list[tuple[int, int]]] = {}
    for hit in scan(
        request,
        seals_index(prefix),
        {"bool": {"filter": [{"term": {"seal.indices": index}}]}},
        [{"agent.id": "asc"}, {"seal.first_sequence": "asc"}],
        ["agent.id", "seal.first_sequence", "seal.last_sequence", "seal.stream"],
    ):
        seal = hit["_source"].get("seal", {})
        agent = str(hit["_source"].get("agent", {}).get("id", ""))
        chain = (agent, str(seal.get("stream") or ""))
        ranges.setdefault(chain, []).append(
            (int(seal.get("first_sequence", 0)), int(seal.get("last_sequence", 0)))
        )
    merged: dict[Chain, Runs] = {}
    for chain, found in ranges.items():
        out: Runs = []
        for first, last in sorted(found):
            if out and first <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], last))
            else:
                out.append((first, last))
        merged[chain] = out
    return merged


def gather(request: Requester, prefix: str, index: str) -> dict[Chain, AgentEvidence]:
    """Everything per chain a retention record of `index` holds."""
    chains = stored_runs(request, index)
    for chain, runs in seal_ranges(request, prefix, index).items():
        chains.setdefault(chain, AgentEvidence()).seals = runs
    return chains


def record_chains(entries: Mapping[Chain, Mapping[str, Any]]) -> dict[str, Any]:
    """The record's ``agents`` (format 1 chains, by agent id) and, when there are any,
    ``streams`` (format 2, by ``agent:stream``, each naming its agent and stream).

    Readers that predate ``streams`` find no evidence for a format 2 stream there: its
    absent events stay MISSING, never EXPIRED by another stream's deletion."""
    out: dict[str, Any] = {
        "agents": {
            agent: dict(entry) for (agent, stream), entry in sorted(entries.items()) if not stream
        }
    }
    streams = {
        f"{agent}:{stream}": {"agent": agent, "stream": stream, **entry}
        for (agent, stream), entry in sorted(entries.items())
        if stream
    }
    if streams:
        out["streams"] = streams
    return out
