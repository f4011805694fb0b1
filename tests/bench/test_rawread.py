"""`python -m bench.rawread`, verify's baseline in the verify benchmark, reads what verify
reads: the events and seals, and the batch documents where event bytes are kept per
batch (`collector.batchbytes`), none when no batches index exists (data written before).
Against a real OpenSearch."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from bench.rawread import read_agents
from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix

pytestmark = pytest.mark.integration

START = 1_764_547_140 * 10**9  # 2025-11-30T23:59:00Z: sequences 60 on are December's


@pytest.mark.parametrize("layout", ["inline", "batches"])
def test_rawread_reads_the_batch_documents_too(opensearch_url: str, layout: str) -> None:
    prefix = f"rawread-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    batches = layout == "batches"
    try:
        months = [v2_store.month_index(prefix, START), v2_store.month_index(prefix, START + 10**11)]
        v2_store.create_indices(client, prefix, months, batches=batches)
        made = v2_store.build_stream(
            "raw", integrity.new_stream_id(), Ed25519PrivateKey.generate(), 150, batch=50,
            start_time=START,
        )  # fmt: skip
        v2_store.store(client, prefix, made, batch_bytes_from=1 if batches else None)
        counts = read_agents(opensearch_url, prefix, ["raw"], 2000, 1)
        # seals 1-50, 51-100 (two indices: two batch documents), 101-150
        assert counts == {
            "events": 150,
            "batches": 4 if batches else 0,
            "seals": 3,
            "pages": 3 if batches else 2,  # every read fits one page
        }
    finally:
        drop_prefix(client, prefix)
