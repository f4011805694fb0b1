"""collector.index.BulkIndexer: per-item classification, retries, DLQ, splitting
(fake OpenSearch; the captured _bulk bodies are checked)."""

from __future__ import annotations

from typing import Any

import pytest

from collector.errors import PermanentIndexingError, RetryableIndexingError
from collector.index import BulkIndexer, IndexRequest, Response
from tests.collector.conftest import FakeHttp


def requests(n: int, index: str = "p-events-standard-2026.11") -> list[IndexRequest]:
    return [
        IndexRequest(
            index=index,
            doc_id=f"a:{i}",
            source={"event": {"sequence": i}},
            agent_id="a",
            sequence=i,
            original=f"line {i}",
        )
        for i in range(n)
    ]


def bulk_answer(*statuses: int) -> Response:
    items = []
    for status in statuses:
        item: dict[str, Any] = {"status": status}
        if status >= 400:
            item["error"] = {"type": f"err_{status}", "reason": f"reason {status}"}
        items.append({"create": item})
    return Response(200, {"errors": True, "items": items})


def scripted(*answers: Response) -> FakeHttp:
    queue = list(answers)
    return FakeHttp(lambda *_: queue.pop(0))


def make(http: FakeHttp, **kwargs: Any) -> tuple[BulkIndexer, list[float]]:
    sleeps: list[float] = []
    indexer = BulkIndexer(
        http,
        deadletter_index="p-deadletter",
        sleep=sleeps.append,
        clock_ns=lambda: 0,
        **kwargs,
    )
    return indexer, sleeps


def test_created_and_duplicates_counted_and_body_is_create_with_id() -> None:
    http = scripted(bulk_answer(201, 409, 201))
    indexer, sleeps = make(http)
    result = indexer.index(requests(3))
    assert (result.indexed, result.duplicates, result.dead_lettered) == (2, 1, 0)
    assert sleeps == []
    [body] = http.bulk_bodies()
    assert body[0] == {"create": {"_index": "p-events-standard-2026.11", "_id": "a:0"}}
    assert body[1] == {"event": {"sequence": 0}}
    assert len(body) == 6
    # Only each item's status and error come back (not _id, _seq_no, _shards ...).
    assert http.calls[0][3] == {
        "refresh": "false",
        "filter_path": "errors,items.*.status,items.*.error",
    }


def test_429_and_5xx_items_alone_are_retried_with_backoff() -> None:
    http = scripted(bulk_answer(201, 429, 503), bulk_answer(201, 429), bulk_answer(201))
    indexer, sleeps = make(http, backoff_s=0.5)
    result = indexer.index(requests(3))
    assert (result.indexed, result.duplicates) == (3, 0)
    assert sleeps == [0.5, 1.0]
    bodies = http.bulk_bodies()
    assert [line["create"]["_id"] for line in bodies[1][::2]] == ["a:1", "a:2"]
    assert [line["create"]["_id"] for line in bodies[2][::2]] == ["a:2"]


def test_retries_are_bounded_and_raise_retryable() -> None:
    http = FakeHttp(lambda *_: bulk_answer(201, 429) if len(http.calls) == 1 else bulk_answer(429))
    indexer, sleeps = make(http, max_retries=3, backoff_s=1, max_backoff_s=2)
    with pytest.raises(
        RetryableIndexingError, match="1 of 2 events not confirmed after 4 attempts"
    ):
        indexer.index(requests(2))
    assert sleeps == [1, 2, 2]


@pytest.mark.parametrize("status", [0, 502, 429])
def test_whole_request_failure_is_retried(status: int) -> None:
    http = scripted(Response(status, {"error": "down"}), bulk_answer(201, 201))
    indexer, sleeps = make(http)
    assert indexer.index(requests(2)).indexed == 2
    assert len(sleeps) == 1


def test_malformed_response_is_retried_whole() -> None:
    http = scripted(Response(200, {"items": [{"create": {"status": 201}}]}), bulk_answer(201, 201))
    indexer, _ = make(http)
    assert indexer.index(requests(2)).indexed == 2


def test_whole_request_4xx_is_permanent() -> None:
    indexer, _ = make(scripted(Response(400, {"error": "bad"})))
    with pytest.raises(PermanentIndexingError):
        indexer.index(requests(1))


def test_mapping_error_goes_to_deadletter_with_same_id() -> None:
    http = scripted(bulk_answer(201, 400), bulk_answer(201))
    indexer, _ = make(http)
    result = indexer.index(requests(2))
    assert (result.indexed, result.duplicates, result.dead_lettered) == (2, 0, 1)
    assert result.errors == ["a:1: err_400: reason 400"]
    dlq = http.bulk_bodies()[1]
    assert dlq[0] == {"create": {"_index": "p-deadletter", "_id": "a:1"}}
    assert dlq[1] == {
        "@timestamp": "1970-01-01T00:00:00.000000000Z",
        "deadletter": {
            "index": "p-events-standard-2026.11",
            "status": 400,
            "error_type": "err_400",
            "reason": "reason 400",
            "document": {"event": {"sequence": 1}},
        },
        "event": {"sequence": 1, "original": "line 1"},
        "agent": {"id": "a"},
    }


def test_deadletter_duplicate_counts_as_delivered() -> None:
    indexer, _ = make(scripted(bulk_answer(400), bulk_answer(409)))
    result = indexer.index(requests(1))
    assert (result.indexed, result.duplicates, result.dead_lettered) == (0, 1, 1)


def test_deadletter_transient_failure_is_retried() -> None:
    indexer, sleeps = make(scripted(bulk_answer(400), bulk_answer(503), bulk_answer(201)))
    assert indexer.index(requests(1)).dead_lettered == 1
    assert len(sleeps) == 1


def test_deadletter_refused_is_permanent_error() -> None:
    indexer, _ = make(scripted(bulk_answer(400), bulk_answer(400)))
    with pytest.raises(PermanentIndexingError, match="dead-letter index p-deadletter refused a:0"):
        indexer.index(requests(1))


def test_split_by_max_docs() -> None:
    http = FakeHttp(lambda m, p, body, q: bulk_answer(*[201] * (body.count("\n") // 2)))
    indexer, _ = make(http, max_docs=2)
    assert indexer.index(requests(5)).indexed == 5
    assert [len(b) // 2 for b in http.bulk_bodies()] == [2, 2, 1]


def test_split_by_max_bytes_and_oversized_doc_goes_alone() -> None:
    http = FakeHttp(lambda m, p, body, q: bulk_answer(*[201] * (body.count("\n") // 2)))
    indexer, _ = make(http, max_bytes=250)
    docs = requests(4)
    docs[2] = IndexRequest(index="p-x", doc_id="a:big", source={"m": "x" * 1000})
    assert indexer.index(docs).indexed == 4
    sizes = [len(b) // 2 for b in http.bulk_bodies()]
    assert sum(sizes) == 4 and [1] in [[s] for s in sizes]
    for _method, _path, body, _ in http.calls:
        assert len(body.encode()) <= 250 or body.count("\n") == 2


def test_empty_input_sends_nothing() -> None:
    http = scripted()
    indexer, _ = make(http)
    assert indexer.index([]).indexed == 0
    assert http.calls == []
