"""Flow control: bounded concurrent bulks, per-agent stream limit, jittered backoff."""

from __future__ import annotations

import threading
import time
from typing import Any

from collector.index import BulkIndexer, IndexRequest, Response
from collector.server import _Streams


class SlowBulk:
    """Answers every _bulk with 201s after a pause; records the peak of concurrent calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Response:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        items = [{"create": {"status": 201}} for _ in range(body.count(b"\n") // 2)]
        return Response(200, {"errors": False, "items": items})


def reqs(n: int, start: int = 0) -> list[IndexRequest]:
    return [IndexRequest("i", f"a:{k}", {"k": k}) for k in range(start, start + n)]


def test_chunks_go_out_concurrently_but_never_more_than_the_bound() -> None:
    http = SlowBulk()
    indexer = BulkIndexer(http, deadletter_index="dl", max_docs=1, concurrency=3)
    try:
        callers = [
            threading.Thread(target=lambda s=s: indexer.index(reqs(10, s * 10))) for s in range(4)
        ]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
    finally:
        indexer.close()
    assert http.calls == 40
    assert http.peak == 3  # 4 callers x 10 chunks, 3 at a time


def test_results_keep_chunk_order_with_concurrency() -> None:
    http = SlowBulk()
    indexer = BulkIndexer(http, deadletter_index="dl", max_docs=2, concurrency=4)
    try:
        result = indexer.index(reqs(9))
    finally:
        indexer.close()
    assert (result.indexed, result.duplicates) == (9, 0)


def test_jitter_is_applied_to_the_backoff() -> None:
    answers = [Response(429, {}), Response(200, {"items": [{"create": {"status": 201}}]})]
    sleeps: list[float] = []
    indexer = BulkIndexer(
        lambda *a, **k: answers.pop(0),
        deadletter_index="dl",
        backoff_s=1.0,
        sleep=sleeps.append,
        jitter=lambda delay: delay / 2,
    )
    assert indexer.index(reqs(1)).indexed == 1
    assert sleeps == [0.5]


def test_per_agent_stream_limit() -> None:
    streams = _Streams(max_per_agent=2)
    a1, a2, a3, b1 = object(), object(), object(), object()
    assert streams.open(a1, "agent-a") and streams.open(a2, "agent-a")
    assert not streams.open(a3, "agent-a")  # a third stream of the same agent
    assert streams.open(b1, "agent-b")  # others are not affected
    streams.close(a1, "agent-a")
    assert streams.open(a3, "agent-a")
