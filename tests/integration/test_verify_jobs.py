"""`crm-audit verify --jobs N` verifies streams in N worker processes, each with its own
connection: against a real OpenSearch, the report of four format 2 streams, two of them
attacked, is the same with one job and with four, and names exactly the attacked
sequences; a searchable field edited with a value the stdlib JSON decoder reads
differently from fast decoders (an integer beyond 64 bits) is still ALTERED."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix, verify_json

pytestmark = pytest.mark.integration

START = 1_764_000_000 * 10**9  # 2025-11-24


@pytest.fixture(scope="module")
def stored(
    opensearch_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path, OpenSearch, list[v2_store.Stream]]]:
    root = tmp_path_factory.mktemp("verify-jobs")
    keys = root / "keys"
    keys.mkdir()
    prefix = f"v2jobs-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    v2_store.create_indices(client, prefix, [v2_store.month_index(prefix, START)])
    streams = []
    for n in range(4):
        agent = f"jobs-{n}"
        key = Ed25519PrivateKey.generate()
        v2_store.write_public_key(keys / f"{agent}.pub", key)
        s = v2_store.build_stream(
            agent, integrity.new_stream_id(), key, 600, batch=200, start_time=START
        )
        v2_store.store(client, prefix, s)
        streams.append(s)
    try:
        yield opensearch_url, prefix, keys, client, streams
    finally:
        drop_prefix(client, prefix)


def verify(url: str, prefix: str, keys: Path, jobs: int) -> dict[str, Any]:
    _, report = verify_json(url, prefix, "--keys", str(keys), "--jobs", str(jobs))
    report.pop("seconds")
    return report


def _edit(client: OpenSearch, prefix: str, s: v2_store.Stream, seq: int, doc: Any) -> None:
    doc_id = f"{s.agent}:{s.stream}:{seq}"
    index = v2_store.month_index(prefix, s.events[seq - 1].time_unix_nano)
    client.update(index=index, id=doc_id, body={"doc": doc}, refresh=True)


def test_worker_processes_give_the_same_report(
    stored: tuple[str, str, Path, OpenSearch, list[v2_store.Stream]],
) -> None:
    url, prefix, keys, client, streams = stored
    clean = verify(url, prefix, keys, 4)
    assert clean["valid"] is True and clean["events_checked"] == 2400, clean
    _edit(client, prefix, streams[1], 250, {"user": {"name": "mallory"}})
    # An integer beyond 64 bits where the signed bytes say "record.update": a decoder
    # reading it as a float or refusing it must not make it pass or fail the run.
    _edit(client, prefix, streams[2], 401, {"event": {"action": 2**70}})
    one = verify(url, prefix, keys, 1)
    four = verify(url, prefix, keys, 4)
    assert one == four
    assert four["events_checked"] == 2400 and four["valid"] is False

    def ranges(s: v2_store.Stream) -> list[tuple[str, int, int]]:
        label = f"{s.agent}:{s.stream}"
        return [(r["kind"], r["first"], r["last"]) for r in four["agents"][label]["ranges"]]

    assert ranges(streams[0]) == [("VALID", 1, 600)]
    assert ranges(streams[1]) == [("VALID", 1, 249), ("ALTERED", 250, 250), ("VALID", 251, 600)]
    assert ranges(streams[2]) == [("VALID", 1, 400), ("ALTERED", 401, 401), ("VALID", 402, 600)]
    assert ranges(streams[3]) == [("VALID", 1, 600)]
