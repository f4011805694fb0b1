"""Group commit in collector.index.BulkIndexer (collector.bulkgroup): concurrent callers
share _bulk requests, each gets exactly its own items' answers.

A fake OpenSearch holds requests until the test lets them through, so which callers
were queued while a bulk was in flight is decided by the test, not by timing; every
assertion is on the requests sent and what each caller got back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from collector.errors import PermanentIndexingError
from collector.index import BulkIndexer, IndexRequest, IndexResult, Response

LIVENESS_S = 30.0  # how long a test waits for a thread before it fails (never reached)

Answer = Callable[[list[str], int], Response]


def created(ids: list[str], _call: int) -> Response:
    return items_answer([201] * len(ids))


def items_answer(statuses: Sequence[int]) -> Response:
    items: list[dict[str, Any]] = []
    for status in statuses:
        item: dict[str, Any] = {"status": status}
        if status >= 400:
            item["error"] = {"type": f"err_{status}", "reason": f"reason {status}"}
        items.append({"create": item})
    return Response(200, {"errors": True, "items": items})


class GatedBulk:
    """A fake OpenSearch `Requester`: records the _ids and the thread of each _bulk and
    holds each request until the test has released that many (`release`); answers with
    `answer(ids, call_number)`."""

    def __init__(self, answer: Answer = created) -> None:
        self.answer = answer
        self.cond = threading.Condition()
        self.calls: list[list[str]] = []
        self.bodies: list[bytes] = []
        self.threads: list[str] = []
        self.released = 0

    def __call__(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Response:
        assert (method, path) == ("POST", "/_bulk")
        ids = [json.loads(line)["create"]["_id"] for line in body.splitlines()[::2]]
        with self.cond:
            number = len(self.calls)
            self.calls.append(ids)
            self.bodies.append(body)
            self.threads.append(threading.current_thread().name)
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.released > number, timeout=LIVENESS_S):
                raise AssertionError(f"request {number} never released")
        return self.answer(ids, number)

    def release(self, count: int = 1) -> None:
        with self.cond:
            self.released += count
            self.cond.notify_all()

    def open(self) -> None:
        self.release(1_000_000)

    def wait_calls(self, count: int) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.calls) >= count, timeout=LIVENESS_S):
                raise AssertionError(f"{count} requests expected, got {self.calls}")


def docs(agent: str, n: int) -> list[IndexRequest]:
    return [
        IndexRequest("p-events", f"{agent}:{i}", {"n": i}, agent_id=agent, sequence=i)
        for i in range(n)
    ]


class Caller:
    """One `BulkIndexer.index` call on its own thread (an agent stream's batch)."""

    def __init__(self, indexer: BulkIndexer, requests: list[IndexRequest], name: str) -> None:
        self.result: IndexResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(indexer, requests), name=name)
        self.thread.start()

    def _run(self, indexer: BulkIndexer, requests: list[IndexRequest]) -> None:
        try:
            self.result = indexer.index(requests)
        except BaseException as exc:
            self.error = exc

    def join(self) -> IndexResult | None:
        self.thread.join(LIVENESS_S)
        assert not self.thread.is_alive()
        return self.result


def wait_queued(indexer: BulkIndexer, count: int) -> None:
    """Until `count` callers wait for a bulk (liveness only: polled, never asserted on time)."""
    deadline = time.monotonic() + LIVENESS_S
    while indexer._group.waiting < count:
        assert time.monotonic() < deadline, f"{count} callers never queued"
        time.sleep(0.005)


class Sleeps:
    """The indexer's backoff sleep, per calling thread (no real sleeping)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[str, list[float]] = {}

    def __call__(self, delay: float) -> None:
        with self.lock:
            self.by_thread.setdefault(threading.current_thread().name, []).append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make(http: GatedBulk, sleeps: Sleeps, **kwargs: Any) -> BulkIndexer:
    return BulkIndexer(
        http, deadletter_index="p-deadletter", sleep=sleeps, clock_ns=lambda: 0, **kwargs
    )


@pytest.fixture
def indexers() -> Iterator[list[BulkIndexer]]:
    made: list[BulkIndexer] = []
    yield made
    for indexer in made:
        indexer.close()


def in_flight_then_queued(
    indexer: BulkIndexer, http: GatedBulk, batches: dict[str, list[IndexRequest]]
) -> tuple[Caller, dict[str, Caller]]:
    """Caller "first" with a bulk in flight (held), then one caller per `batches` entry
    queued behind it; nothing released yet."""
    first = Caller(indexer, docs("first", 2), "first")
    http.wait_calls(1)
    callers = {name: Caller(indexer, batch, name) for name, batch in batches.items()}
    wait_queued(indexer, len(callers))
    return first, callers


def test_lone_caller_sends_at_once_on_its_own_thread(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    http = GatedBulk()
    http.open()
    indexer = make(http, sleeps)
    indexers.append(indexer)
    result = Caller(indexer, docs("a", 3), "lone").join()
    assert result is not None and result.indexed == 3
    # One request, only its documents, sent by the caller itself: nothing it waited for.
    assert http.calls == [["a:0", "a:1", "a:2"]]
    assert http.threads == ["lone"]


def test_callers_arriving_while_every_slot_is_busy_share_the_next_one(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    http = GatedBulk()
    indexer = make(http, sleeps)  # one request slot
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 3) for name in ("b", "c", "d")}
    )
    # Three callers queued while the one slot is busy: nothing else sent yet.
    assert http.calls == [["first:0", "first:1"]]
    http.open()
    assert first.join() is not None
    results = {name: caller.join() for name, caller in callers.items()}
    assert len(http.calls) == 2
    merged = http.calls[1]
    assert sorted(merged) == sorted(f"{n}:{i}" for n in "bcd" for i in range(3))
    for name in "bcd":  # each caller's documents together and in its own order
        at = merged.index(f"{name}:0")
        assert merged[at : at + 3] == [f"{name}:0", f"{name}:1", f"{name}:2"]
    for result in results.values():
        assert result is not None and (result.indexed, result.duplicates) == (3, 0)
    assert sleeps.by_thread == {}


def test_each_caller_gets_only_its_own_item_results(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    outcome = {"c:1": 409, "d:2": 400}  # c's second is a duplicate, d's third refused

    def answer(ids: list[str], call: int) -> Response:
        return items_answer([outcome.get(i, 201) if call == 1 else 201 for i in ids])

    http = GatedBulk(answer)
    indexer = make(http, sleeps)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 3) for name in ("b", "c", "d")}
    )
    http.open()
    first.join()
    b, c, d = (callers[name].join() for name in "bcd")
    assert b is not None and c is not None and d is not None
    assert (b.indexed, b.duplicates, b.dead_lettered, b.conflicts) == (3, 0, 0, [])
    assert (c.indexed, c.duplicates, c.dead_lettered) == (2, 1, 0)
    assert [r.doc_id for r in c.conflicts] == ["c:1"]
    # d's refused document went to the dead-letter index (counted once written there).
    assert (d.indexed, d.duplicates, d.dead_lettered) == (3, 0, 1)
    assert d.errors == ["d:2: err_400: reason 400"]
    assert http.calls[2] == ["d:2"]
    assert b'"_index":"p-deadletter"' in http.bodies[2]
    assert len(http.calls) == 3  # first, b+c+d merged, d's dead letter


def test_item_429_is_retried_only_by_its_caller(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    def answer(ids: list[str], call: int) -> Response:
        return items_answer([429 if i == "c:0" and call == 1 else 201 for i in ids])

    http = GatedBulk(answer)
    indexer = make(http, sleeps, backoff_s=0.5)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 2) for name in ("b", "c")}
    )
    http.open()
    first.join()
    b, c = callers["b"].join(), callers["c"].join()
    assert b is not None and c is not None
    assert sorted(http.calls[1]) == ["b:0", "b:1", "c:0", "c:1"]
    assert http.calls[2:] == [["c:0"]]  # only c's item goes again
    assert sleeps.by_thread == {"c": [0.5]}  # only c backed off
    assert (b.indexed, c.indexed) == (2, 2)


@pytest.mark.parametrize("status", [0, 429, 503])
def test_whole_request_failure_is_retried_by_every_merged_caller(
    status: int, sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    def answer(ids: list[str], call: int) -> Response:
        return Response(status, {"error": "busy"}) if call == 1 else created(ids, call)

    http = GatedBulk(answer)
    indexer = make(http, sleeps, backoff_s=0.5, concurrency=1)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 2) for name in ("b", "c", "d")}
    )
    http.open()
    first.join()
    results = [callers[name].join() for name in "bcd"]
    assert all(r is not None and r.indexed == 2 for r in results)
    # Every caller the failed request carried backed off once and sent its own again.
    assert sleeps.by_thread == {"b": [0.5], "c": [0.5], "d": [0.5]}
    resent = sorted(i for call in http.calls[2:] for i in call)
    assert resent == sorted(f"{n}:{k}" for n in "bcd" for k in range(2))


def test_whole_request_refusal_fails_every_merged_caller(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    def answer(ids: list[str], call: int) -> Response:
        return Response(400, {"error": "bad"}) if call == 1 else created(ids, call)

    http = GatedBulk(answer)
    indexer = make(http, sleeps)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 2) for name in ("b", "c")}
    )
    http.open()
    assert first.join() is not None
    for name in "bc":
        callers[name].join()
        assert isinstance(callers[name].error, PermanentIndexingError)
    assert len(http.calls) == 2


def test_an_exception_while_sending_reaches_every_merged_caller(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    def answer(ids: list[str], call: int) -> Response:
        if call == 1:
            raise OSError("socket gone")
        return created(ids, call)

    http = GatedBulk(answer)
    indexer = make(http, sleeps)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 2) for name in ("b", "c")}
    )
    http.open()
    assert first.join() is not None
    for name in "bc":
        callers[name].join()
        assert isinstance(callers[name].error, OSError)
    # The indexer goes on: the next caller is answered.
    assert Caller(indexer, docs("e", 1), "e").join() is not None


def test_merged_bulks_keep_the_document_limit(sleeps: Sleeps, indexers: list[BulkIndexer]) -> None:
    http = GatedBulk()
    indexer = make(http, sleeps, max_docs=4, concurrency=1)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 3) for name in ("b", "c", "d")}
    )
    http.open()
    first.join()
    results = [callers[name].join() for name in "bcd"]
    assert all(r is not None and r.indexed == 3 for r in results)
    # 9 queued documents: bulks of 4, 4 and 1 (a caller's documents cut between two).
    assert [len(call) for call in http.calls[1:]] == [4, 4, 1]
    assert sorted(i for call in http.calls[1:] for i in call) == sorted(
        f"{n}:{k}" for n in "bcd" for k in range(3)
    )


def test_merged_bulks_keep_the_byte_limit(sleeps: Sleeps, indexers: list[BulkIndexer]) -> None:
    http = GatedBulk()
    limit = 300
    indexer = make(http, sleeps, max_bytes=limit, concurrency=1)
    indexers.append(indexer)
    big = [IndexRequest("p-events", "big:0", {"pad": "x" * 500})]  # larger than the limit
    first, callers = in_flight_then_queued(
        indexer, http, {"b": docs("b", 4), "big": big, "c": docs("c", 4)}
    )
    http.open()
    first.join()
    for caller in callers.values():
        assert caller.join() is not None
    sent = sorted(i for call in http.calls[1:] for i in call)
    assert sent == sorted([*(f"b:{k}" for k in range(4)), "big:0", *(f"c:{k}" for k in range(4))])
    for ids, body in zip(http.calls[1:], http.bodies[1:], strict=True):
        assert len(body) <= limit or ids == ["big:0"]  # an oversized document goes alone
    assert len(http.calls) < 1 + 9  # merged all the same


def test_a_caller_with_a_free_slot_starts_beside_the_one_in_flight(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    """Merging never costs parallelism: a second caller starts at once in the free slot;
    only the callers after it, with both slots busy, queue and share a request."""
    http = GatedBulk()
    indexer = make(http, sleeps, concurrency=2)
    indexers.append(indexer)
    first = Caller(indexer, docs("first", 2), "first")
    http.wait_calls(1)
    second = Caller(indexer, docs("s", 1), "second")
    http.wait_calls(2)
    assert http.calls[1] == ["s:0"]
    assert http.threads[1] == "second"  # sent by the caller itself, not held back
    later = []
    for queued, name in enumerate(("x", "y"), start=1):
        later.append(Caller(indexer, docs(name, 2), name))
        wait_queued(indexer, queued)
    assert len(http.calls) == 2  # both slots busy: x and y wait
    http.open()
    for caller, count in ((first, 2), (second, 1), (later[0], 2), (later[1], 2)):
        result = caller.join()
        assert result is not None and result.indexed == count
    assert http.calls[2:] == [["x:0", "x:1", "y:0", "y:1"]]


def test_bulk_observer_sees_each_request_with_its_merged_documents(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    seen: list[tuple[int, int]] = []

    class Observer:
        def bulk_done(self, seconds: float, docs: int, status: int) -> None:
            seen.append((docs, status))

        def retried(self, docs: int) -> None:
            pass

        def bulk_in_flight(self, delta: int) -> None:
            pass

    http = GatedBulk()
    indexer = make(http, sleeps, observer=Observer())
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 3) for name in ("b", "c")}
    )
    http.open()
    first.join()
    for caller in callers.values():
        caller.join()
    assert seen == [(2, 200), (6, 200)]


def test_a_caller_cut_between_two_bulks_resends_only_the_part_that_failed(
    sleeps: Sleeps, indexers: list[BulkIndexer]
) -> None:
    def answer(ids: list[str], call: int) -> Response:
        return Response(503, {"error": "busy"}) if call == 2 else created(ids, call)

    http = GatedBulk(answer)
    indexer = make(http, sleeps, max_docs=4, concurrency=1)
    indexers.append(indexer)
    first, callers = in_flight_then_queued(
        indexer, http, {name: docs(name, 3) for name in ("b", "c", "d")}
    )
    http.open()
    first.join()
    results = {name: callers[name].join() for name in "bcd"}
    assert all(r is not None and r.indexed == 3 for r in results.values())
    failed = http.calls[2]  # the second merged bulk: 4 documents answered 503 as a whole
    assert len(failed) == 4
    # Every document sent once, those four twice: each caller resent only its part of
    # the failed request (its other part, answered 201, was not sent again).
    sent = sorted(i for call in http.calls[1:] for i in call)
    assert sent == sorted([*(f"{n}:{k}" for n in "bcd" for k in range(3)), *failed])
    owners = {i.split(":")[0] for i in failed}
    assert set(sleeps.by_thread) == owners
