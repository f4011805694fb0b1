"""`python -m bench.rawread`: read agents' documents as `crm-audit verify` reads them,
and do nothing else with them — the floor under verify's time.

    python -m bench.rawread URL PREFIX [AGENT ...] [--page N] [--jobs N]

Per agent (all agents with an event when none is named): its events
(``PREFIX-events-*``, every field of ``_source``: verify compares the searchable fields
with the canonical bytes) sorted by ``event.sequence``, ``_index``, ``_doc``, its batch
documents (``PREFIX-batches-*``, the ``batch`` field, sorted by ``batch.first``: where
event documents written without ``integrity.canonical`` have their bytes, which verify
reads beside the events, `collector.verify.batches`; verify's batch page size), and its
seals (``PREFIX-seals``) sorted by sequence, all with a point in time and
``search_after``, ``page`` hits per request (verify's page size by default), through
opensearch-py with verify's JSON decoder (`collector.verify.reading.FastJson`) and its
garbage collector settings (`few_collections`); each
page's JSON is parsed, nothing is decoded further. Agents are read in ``--jobs`` forked
processes as verify spreads its streams (default: verify's default), so the ratio of
the two compares the same reads with the same parallelism. Prints one JSON line:
``{"events": n, "batches": n, "seals": n, "pages": n}``.

Run as its own process by the verify scenario, so that its start-up is counted as
verify's is and its peak RSS is measured the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from opensearchpy import OpenSearch

from collector.batchbytes import batches_index_pattern
from collector.verify.batches import BATCH_PAGE, BATCH_SORT
from collector.verify.reading import PAGE, FastJson, few_collections
from collector.verify.verifier import default_jobs


def connect(url: str) -> OpenSearch:
    return OpenSearch(hosts=[url], timeout=120, max_retries=0, serializer=FastJson())


def _stream(
    os_client: OpenSearch,
    pattern: str,
    query: Mapping[str, Any],
    sort: Sequence[Mapping[str, Any]],
    page_size: int,
    source: Sequence[str] | bool = True,
) -> Iterator[int]:
    """Hits per page of one point-in-time search over `pattern`."""
    opened = os_client.transport.perform_request(
        "POST",
        f"/{pattern}/_search/point_in_time",
        params={"keep_alive": "5m", "expand_wildcards": "open"},
    )
    pit = opened["pit_id"]
    try:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": page_size,
                "query": query,
                "sort": list(sort),
                "pit": {"id": pit, "keep_alive": "5m"},
                "_source": source,
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            page = os_client.transport.perform_request("POST", "/_search", body=body)
            pit = page.get("pit_id", pit)
            hits = page["hits"]["hits"]
            yield len(hits)
            if len(hits) < page_size:
                return
            after = hits[-1]["sort"]
    finally:
        os_client.transport.perform_request(
            "DELETE", "/_search/point_in_time", body={"pit_id": [pit]}
        )


def read_all(os_client: OpenSearch, prefix: str, agent: str, page_size: int) -> dict[str, int]:
    query = {"bool": {"filter": [{"term": {"agent.id": agent}}]}}
    pages = events = seals = 0
    for hits in _stream(
        os_client,
        f"{prefix}-events-*",
        query,
        [{"event.sequence": "asc"}, {"_index": "asc"}, {"_doc": "asc"}],
        page_size,
    ):
        pages, events = pages + 1, events + hits
    batches = 0
    if _any_index(os_client, batches_index_pattern(prefix)):
        for hits in _stream(
            os_client, batches_index_pattern(prefix), query, BATCH_SORT, BATCH_PAGE, ["batch"]
        ):
            pages, batches = pages + 1, batches + hits
    for hits in _stream(
        os_client,
        f"{prefix}-seals",
        query,
        [{"seal.first_sequence": "asc"}, {"seal.last_sequence": "asc"}],
        page_size,
    ):
        pages, seals = pages + 1, seals + hits
    return {"events": events, "batches": batches, "seals": seals, "pages": pages}


def _any_index(os_client: OpenSearch, pattern: str) -> bool:
    """Some open index matches `pattern` (data written before batch documents has none,
    and a point in time over no index is an error, not an empty answer)."""
    found = os_client.indices.get(
        index=pattern, params={"allow_no_indices": "true", "expand_wildcards": "open"}
    )
    return bool(found)


def agents_of(os_client: OpenSearch, prefix: str) -> list[str]:
    """Every agent with an event (a composite aggregation, paged)."""
    found: list[str] = []
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {
            "size": 1000,
            "sources": [{"agent": {"terms": {"field": "agent.id"}}}],
        }
        if after:
            composite["after"] = after
        agg = os_client.search(
            index=f"{prefix}-events-*",
            body={"size": 0, "aggs": {"a": {"composite": composite}}},
        )["aggregations"]["a"]
        found += [str(b["key"]["agent"]) for b in agg["buckets"]]
        after = agg.get("after_key")
        if not agg["buckets"] or not after:
            return found


# What a forked worker reads with (set before the pool forks; nothing is pickled
# but the agent names and the counts).
_JOB: tuple[str, str, int] = ("", "", PAGE)
_CLIENT: list[OpenSearch] = []


def _worker_start() -> None:
    _CLIENT.append(connect(_JOB[0]))


def _worker_read(agent: str) -> dict[str, int]:
    return read_all(_CLIENT[0], _JOB[1], agent, _JOB[2])


def read_agents(
    url: str, prefix: str, agents: Sequence[str], page_size: int, jobs: int
) -> dict[str, int]:
    total = {"events": 0, "batches": 0, "seals": 0, "pages": 0}
    jobs = min(jobs, len(agents))
    if jobs <= 1:
        os_client = connect(url)
        try:
            counts = [read_all(os_client, prefix, a, page_size) for a in agents]
        finally:
            os_client.close()
    else:
        global _JOB
        _JOB = (url, prefix, page_size)
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=fork, initializer=_worker_start) as pool:
            counts = list(pool.map(_worker_read, agents))
    for one in counts:
        for key in total:
            total[key] += one[key]
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawread", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("agents", nargs="*", metavar="AGENT", help="default: every agent")
    parser.add_argument("--page", type=int, default=PAGE, help=f"hits per request ({PAGE})")
    parser.add_argument(
        "--jobs", type=int, default=default_jobs(), help="agents read in parallel processes"
    )
    args = parser.parse_args(argv)
    if args.page < 1 or args.jobs < 1:
        print("--page, --jobs: must be >= 1", file=sys.stderr)
        return 2
    agents = list(args.agents)
    if not agents:
        os_client = connect(args.url)
        try:
            agents = agents_of(os_client, args.prefix)
        finally:
            os_client.close()
    with few_collections():  # as verify does
        counts = read_agents(args.url, args.prefix, agents, args.page, args.jobs)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
