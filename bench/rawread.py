"""`python -m bench.rawread`: read one agent's documents as `crm-audit verify` reads them,
and do nothing else with them — the floor under verify's time.

    python -m bench.rawread URL PREFIX AGENT [--page N]

Events (``PREFIX-events-*``, every field of ``_source``: verify compares the searchable
fields with the canonical bytes) sorted by ``event.sequence``, ``_index``, ``_doc``, and
seals (``PREFIX-seals``) sorted by sequence, both with a point in time and
``search_after``, ``page`` hits per request (verify's page size by default), through
opensearch-py as verify does; each page's JSON is parsed, nothing is decoded further.
Prints one JSON line: ``{"events": n, "seals": n, "pages": n}``.

Run as its own process by the verify scenario, so that its start-up is counted as
verify's is and its peak RSS is measured the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opensearchpy import OpenSearch

from bench.search import client
from collector.verify.reading import PAGE


def _stream(
    os_client: OpenSearch,
    pattern: str,
    query: Mapping[str, Any],
    sort: Sequence[Mapping[str, Any]],
    page_size: int,
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
                "_source": True,
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
    for hits in _stream(
        os_client,
        f"{prefix}-seals",
        query,
        [{"seal.first_sequence": "asc"}, {"seal.last_sequence": "asc"}],
        page_size,
    ):
        pages, seals = pages + 1, seals + hits
    return {"events": events, "seals": seals, "pages": pages}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rawread", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("agent")
    parser.add_argument("--page", type=int, default=PAGE, help=f"hits per request ({PAGE})")
    args = parser.parse_args(argv)
    if args.page < 1:
        print("--page: must be >= 1", file=sys.stderr)
        return 2
    os_client = client(args.url)
    try:
        print(json.dumps(read_all(os_client, args.prefix, args.agent, args.page)))
    finally:
        os_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
