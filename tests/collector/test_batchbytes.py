"""collector.batchbytes: the per-batch store of event bytes round-trips, and refuses
what does not decode with BatchBytesError (verify turns that into a finding)."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from collector import batchbytes


@given(st.lists(st.binary(max_size=300), max_size=40))
def test_encode_then_decode_gives_the_same_bytes(datas: list[bytes]) -> None:
    assert batchbytes.decode(batchbytes.encode(datas), len(datas)) == datas


@pytest.mark.parametrize(
    ("text", "count", "why"),
    [
        ("not base64!", 1, "do not decode"),
        (base64.b64encode(b"not a zstd frame").decode(), 1, "do not decode"),
        (batchbytes.encode([b"a", b"b"]), 3, "hold 2 events, the document lists 3"),
        (
            base64.b64encode(zstandard.ZstdCompressor().compress(b"\x00\x00\x00\x09abc")).decode(),
            1,
            "end inside an event",
        ),
        (
            base64.b64encode(zstandard.ZstdCompressor().compress(b"\x00\x00")).decode(),
            1,
            "end inside a length",
        ),
    ],
)
def test_what_does_not_decode_is_refused(text: str, count: int, why: str) -> None:
    with pytest.raises(batchbytes.BatchBytesError, match=why):
        batchbytes.decode(text, count)


def test_the_batches_index_mirrors_its_events_index() -> None:
    events = "crm-audit-events-standard-2026.12.07"
    batches = batchbytes.batches_index("crm-audit", events)
    assert batches == "crm-audit-batches-standard-2026.12.07"
    assert batchbytes.events_index_of("crm-audit", batches) == events
    with pytest.raises(ValueError, match="not an events index"):
        batchbytes.batches_index("crm-audit", "other-events-standard-2026.12")


def test_the_document_id_names_range_and_content() -> None:
    one = batchbytes.batch_doc_id("a", "s", [3, 1, 2], [b"x", b"y", b"z"])
    assert one.startswith("a:s:1-3:")
    assert one == batchbytes.batch_doc_id("a", "s", [3, 1, 2], [b"x", b"y", b"z"])
    assert one != batchbytes.batch_doc_id("a", "s", [3, 1, 2], [b"x", b"y", b"Z"])


def test_threads_encoding_at_once_each_get_their_own_bytes() -> None:
    """The collector encodes several batches at once (per-stream pipelines, many
    agents); a compressor shared between threads corrupted frames or crashed."""

    def encode_many(seed: int) -> bool:
        for n in range(100):
            datas = [bytes([seed, n]) * (50 + k) for k in range(200)]
            if batchbytes.decode(batchbytes.encode(datas), len(datas)) != datas:
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(encode_many, range(8)))
