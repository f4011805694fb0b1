"""collector.hold against a fake cluster: a hold that cannot be put on record is undone."""

from __future__ import annotations

from typing import Any

import pytest

from collector.errors import HoldError
from collector.hold import Hold, HoldManager
from collector.index import Response
from tests.collector.conftest import FakeHttp

JAN, FEB = "p-events-standard-2026.01", "p-events-standard-2026.02"


class Cluster:
    """Two event indices; January is already held by another hold; recording refused."""

    def __init__(self, record_status: int) -> None:
        self.record_status = record_status
        self.read_only: dict[str, bool] = {JAN: True, FEB: False}
        self.http = FakeHttp(self.answer)

    def answer(self, method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/p-holds" and method == "PUT":
            return Response(400, {"error": {"type": "resource_already_exists_exception"}})
        if path == "/p-holds/_search":
            other = Hold("old", "standard", "2026.01", "2026.01", "active", "case 1", "x", "t")
            other.indices = [JAN]
            return Response(200, {"hits": {"hits": [{"_source": {"hold": other.source()}}]}})
        if path.startswith("/_cat/indices/"):
            return Response(200, [{"index": JAN}, {"index": FEB}])
        if path == "/_nodes/plugins":
            return Response(200, {"nodes": {"n1": {"name": "n1"}}})
        if path.endswith("/_settings"):
            for index in path.strip("/").split("/")[0].split(","):
                self.read_only[index] = bool(body["index.blocks.read_only"])
            return Response(200, {"acknowledged": True})
        if path == "/_plugins/_security/authinfo":
            return Response(200, {"user_name": "admin"})
        if "/_create/" in path or "/_doc/" in path:
            return Response(self.record_status, {"error": "no permissions for [bulk]"})
        raise AssertionError(f"unexpected {method} {path}")


def manager(cluster: Cluster | WithBatches) -> HoldManager:
    return HoldManager(cluster.http, prefix="p", classes=["standard"], clock_ns=lambda: 10**18)


def test_a_hold_that_cannot_be_recorded_is_undone_but_other_holds_stay() -> None:
    cluster = Cluster(record_status=403)
    with pytest.raises(HoldError, match=r"cannot record the place.*403.*the hold was undone"):
        manager(cluster).place("standard", "2026.01", "2026.02", "case 2", "ops")
    # February was blocked by this hold and is free again; January stays blocked (case 1)
    assert cluster.read_only == {JAN: True, FEB: False}


def test_a_recorded_hold_keeps_its_blocks() -> None:
    cluster = Cluster(record_status=201)
    hold = manager(cluster).place("standard", "2026.01", "2026.02", "case 2", "ops")
    assert hold.indices == [JAN, FEB]
    assert cluster.read_only == {JAN: True, FEB: True}


BATCHES_JAN = "p-batches-standard-2026.01"


class WithBatches:
    """ISM present; the events indices of January and February, January's batches index
    and batches indices outside the range or of another class; no other hold."""

    LISTED = {
        "/_cat/indices/p-events-standard-*": [JAN, FEB],
        "/_cat/indices/p-batches-standard-*": [
            BATCHES_JAN,
            "p-batches-standard-2026.03",
            "p-batches-standard-x-2026.01",  # class "standard-x" shares the pattern
        ],
    }

    def __init__(self) -> None:
        self.read_only: dict[str, bool] = {}
        self.policy: dict[str, str] = {}
        self.hold: dict[str, Any] | None = None
        self.http = FakeHttp(self.answer)

    def answer(self, method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/p-holds" and method == "PUT":
            return Response(200, {"acknowledged": True})
        if path == "/p-holds/_search":
            hits = [{"_source": {"hold": self.hold}}] if self.hold else []
            return Response(200, {"hits": {"hits": hits}})
        if path in self.LISTED:
            return Response(200, [{"index": name} for name in self.LISTED[path]])
        if path == "/_nodes/plugins":
            plugins = [{"name": "opensearch-index-management"}]
            return Response(200, {"nodes": {"n1": {"name": "n1", "plugins": plugins}}})
        if path.startswith("/_plugins/_ism/policies/"):
            return Response(200, {})
        if path.startswith("/_plugins/_ism/remove/"):
            return Response(200, {})
        if path.startswith("/_plugins/_ism/add/"):
            for index in path.rsplit("/", 1)[1].split(","):
                self.policy[index] = body["policy_id"]
            return Response(200, {"updated_indices": 1})
        if path.endswith("/_settings"):
            for index in path.strip("/").split("/")[0].split(","):
                self.read_only[index] = bool(body["index.blocks.read_only"])
            return Response(200, {"acknowledged": True})
        if method == "HEAD":
            return Response(200, {})
        if path == "/_plugins/_security/authinfo":
            return Response(200, {"user_name": "admin"})
        if path.startswith("/p-holds/_doc/hold:"):
            self.hold = body["hold"]
            return Response(200, {})
        if "/_create/" in path:
            return Response(201, {})
        raise AssertionError(f"unexpected {method} {path}")


def test_a_hold_covers_the_batches_indices_of_its_range_and_release_frees_them() -> None:
    cluster = WithBatches()
    holds = manager(cluster)
    hold = holds.place("standard", "2026.01", "2026.02", "case 3", "ops")
    # the record names both kinds: the events indices, then their batches indices
    assert hold.indices == [JAN, FEB, BATCHES_JAN]
    assert cluster.hold is not None and cluster.hold["indices"] == [JAN, FEB, BATCHES_JAN]
    assert cluster.read_only == {JAN: True, FEB: True, BATCHES_JAN: True}
    assert cluster.policy == dict.fromkeys([JAN, FEB, BATCHES_JAN], "p-legal-hold")

    released, freed = holds.release(hold.id, "closed", "ops")
    assert released.status == "released" and freed == [JAN, FEB, BATCHES_JAN]
    assert cluster.read_only == {JAN: False, FEB: False, BATCHES_JAN: False}
    assert cluster.policy == dict.fromkeys([JAN, FEB, BATCHES_JAN], "p-standard")
