"""The chain head cache of collector.gate: a GET only when the cached head is not
confirmed by the conditional write, and never a finding from a stale cached head."""

from __future__ import annotations

from typing import Any, cast

from collector.gate import IntegrityGate
from collector.index import BulkIndexer, Response
from collector.keys import KeyRing
from tests.collector.test_integrity_unit import AGENT, H, seal

NOW = 1_795_780_800_000_000_000


class HeadStore:
    """One chain-head document with OpenSearch's optimistic concurrency (if_seq_no)."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.seq_no = -1
        self.calls: list[str] = []

    def __call__(self, method: str, path: str, *, body: Any = None, params: Any = None) -> Response:
        assert path == f"/p-chainheads/_doc/{AGENT}", path
        self.calls.append(method)
        if method == "GET":
            if self.doc is None:
                return Response(404, {"found": False})
            return Response(200, {"_source": self.doc, "_seq_no": self.seq_no, "_primary_term": 1})
        params = params or {}
        if params.get("op_type") == "create" and self.doc is not None:
            return Response(409, {})
        if "if_seq_no" in params and int(params["if_seq_no"]) != self.seq_no:
            return Response(409, {})
        self.store(body)
        return Response(200, {"_seq_no": self.seq_no, "_primary_term": 1})

    def store(self, body: dict[str, Any]) -> None:
        self.doc = body
        self.seq_no += 1

    def head(self) -> tuple[int, str]:
        assert self.doc is not None
        return self.doc["chain"]["sequence"], self.doc["chain"]["head"]


def advance(gate: IntegrityGate, first: int, last: int) -> list[Any]:
    s, hashes = seal(first, last)
    return gate._advance(s, hashes, AGENT, None, NOW)


def test_continuing_batches_write_the_head_without_reading_it() -> None:
    store = HeadStore()
    gate = IntegrityGate(store, cast(BulkIndexer, None), cast(KeyRing, None), prefix="p")
    assert advance(gate, 1, 10) == []
    assert store.calls == ["GET", "PUT"]  # nothing known yet: read, then create
    store.calls.clear()
    assert advance(gate, 11, 20) == []
    assert advance(gate, 21, 25) == []
    assert store.calls == ["PUT", "PUT"]
    assert store.head() == (25, H[25].hex())


def test_a_head_moved_by_another_collector_is_read_again_and_no_false_alert() -> None:
    store = HeadStore()
    gate = IntegrityGate(store, cast(BulkIndexer, None), cast(KeyRing, None), prefix="p")
    assert advance(gate, 1, 20) == []
    # Another collector took the agent's stream and moved the head to 25.
    store.store({"agent": {"id": AGENT}, "chain": {"sequence": 25, "head": H[25].hex()}})
    store.calls.clear()
    # Seen from the cached head (20) this batch leaves a gap 21-25; the stored head says
    # it continues. The stored head decides.
    assert advance(gate, 26, 30) == []
    assert store.calls == ["GET", "PUT"]
    assert store.head() == (30, H[30].hex())


def test_a_stale_cached_head_that_looks_fine_is_refused_by_the_write() -> None:
    store = HeadStore()
    gate = IntegrityGate(store, cast(BulkIndexer, None), cast(KeyRing, None), prefix="p")
    assert advance(gate, 1, 20) == []
    # Another collector rewrote the head at the same sequence with a different hash.
    store.store({"agent": {"id": AGENT}, "chain": {"sequence": 20, "head": (b"\1" * 32).hex()}})
    store.calls.clear()
    # The cached head agrees with the batch, but its version is stale: the conditional
    # write is refused, the stored head is read and the fork is reported.
    findings = advance(gate, 21, 30)
    assert [(f.kind, f.first, f.last) for f in findings] == [("fork", 21, 30)]
    assert store.calls == ["PUT", "GET", "PUT"]
