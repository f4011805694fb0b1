"""Against the real OpenSearch at $OPENSEARCH_URL: templates, idempotent indexing, DLQ, ISM."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from typing import Any

import pytest

from collector.documents import index_name, to_document
from collector.index import BulkIndexer, IndexRequest, Requester
from collector.lifecycle import NO_ISM_WARNING, LifecycleInstaller, deadletter_index
from proto.v1 import audit_pb2
from tests.collector.conftest import NOV_27_2026, STANDARD_POLICY, make_event, search

pytestmark = pytest.mark.integration

POLICY = json.loads(STANDARD_POLICY.read_text())


def _probe_ism() -> bool:
    url = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200").rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/_cat/plugins?format=json", timeout=10) as response:
            plugins = json.load(response)
    except (OSError, ValueError):
        return False
    return any(row.get("component") == "opensearch-index-management" for row in plugins)


ISM_AVAILABLE = _probe_ism()


def install(http: Requester, prefix: str) -> LifecycleInstaller:
    installer = LifecycleInstaller(http, prefix=prefix, policies={"standard": POLICY})
    installer.install()
    return installer


def index_events(http: Requester, prefix: str, sequences: range) -> Any:
    indexer = BulkIndexer(http, deadletter_index=deadletter_index(prefix), max_docs=7)
    reqs = []
    for seq in sequences:
        doc = to_document(make_event(seq), agent_id="agent-1", received_unix_nano=NOV_27_2026)
        target = index_name(prefix, "standard", "monthly", doc.timestamp_unix_nano)
        reqs.append(IndexRequest(target, doc.doc_id, doc.source, "agent-1", seq))
    return indexer.index(reqs)


def test_template_gives_strict_mapping_with_nested_changes(os_http: Requester, prefix: str) -> None:
    install(os_http, prefix)
    assert index_events(os_http, prefix, range(1)).indexed == 1
    mappings = os_http("GET", f"/{prefix}-events-*/_mapping").body
    assert list(mappings) == [f"{prefix}-events-standard-2026.11"]
    mapping = mappings[f"{prefix}-events-standard-2026.11"]["mappings"]
    assert mapping["dynamic"] == "strict"
    crm = mapping["properties"]["crm"]["properties"]
    assert crm["changes"]["type"] == "nested"
    assert crm["attributes"]["type"] == "flat_object"
    assert mapping["properties"]["@timestamp"]["type"] == "date_nanos"
    settings = os_http("GET", f"/{prefix}-events-standard-2026.11/_settings").body
    index_settings = settings[f"{prefix}-events-standard-2026.11"]["settings"]["index"]
    assert index_settings["codec"] == "best_compression"
    # auto-expanded: no replica on a single node (the test cluster has one), one on two
    assert index_settings["auto_expand_replicas"] == "0-1"
    nodes = int(os_http("GET", "/_cluster/health").body["number_of_data_nodes"])
    expected_replicas = str(min(nodes - 1, 1))
    assert (index_settings["number_of_shards"], index_settings["number_of_replicas"]) == (
        "1",
        expected_replicas,
    )


def test_bulk_indexing_then_redelivery_is_all_duplicates(os_http: Requester, prefix: str) -> None:
    install(os_http, prefix)
    first = index_events(os_http, prefix, range(20))
    assert (first.indexed, first.duplicates) == (20, 0)
    again = index_events(os_http, prefix, range(20))
    assert (again.indexed, again.duplicates) == (0, 20)
    hits = search(os_http, f"{prefix}-events-*")
    assert sorted(h["_id"] for h in hits) == sorted(f"agent-1:{i}" for i in range(20))


def test_nested_and_flat_object_queries(os_http: Requester, prefix: str) -> None:
    install(os_http, prefix)
    index_events(os_http, prefix, range(3))
    nested = {
        "nested": {
            "path": "crm.changes",
            "query": {
                "bool": {
                    "must": [
                        {"term": {"crm.changes.field": "iban"}},
                        {"term": {"crm.changes.new": "DE02"}},
                    ]
                }
            },
        }
    }
    assert len(search(os_http, f"{prefix}-events-*", nested)) == 3
    # old value of phone was not recorded: "phone" with old=DE01 must not match
    cross = {
        "nested": {
            "path": "crm.changes",
            "query": {
                "bool": {
                    "must": [
                        {"term": {"crm.changes.field": "phone"}},
                        {"term": {"crm.changes.old": "DE01"}},
                    ]
                }
            },
        }
    }
    assert search(os_http, f"{prefix}-events-*", cross) == []
    flat = {"term": {"crm.attributes.tenant": "eu"}}
    assert len(search(os_http, f"{prefix}-events-*", flat)) == 3


def test_mapping_rejected_document_goes_to_deadletter(os_http: Requester, prefix: str) -> None:
    install(os_http, prefix)
    target = f"{prefix}-events-standard-2026.11"
    good = to_document(make_event(1), agent_id="agent-1", received_unix_nano=NOV_27_2026)
    bad_source = {**good.source, "unexpected_field": "x"}
    indexer = BulkIndexer(os_http, deadletter_index=deadletter_index(prefix))
    reqs = [
        IndexRequest(target, good.doc_id, good.source, "agent-1", 1),
        IndexRequest(target, "agent-1:2", bad_source, "agent-1", 2, original="raw line 2"),
    ]
    result = indexer.index(reqs)
    assert (result.indexed, result.duplicates, result.dead_lettered) == (2, 0, 1)
    [letter] = search(os_http, deadletter_index(prefix))
    assert letter["_id"] == "agent-1:2"
    dl = letter["_source"]["deadletter"]
    assert (dl["index"], dl["status"], dl["error_type"]) == (
        target,
        400,
        "strict_dynamic_mapping_exception",
    )
    assert dl["document"]["unexpected_field"] == "x"
    assert letter["_source"]["event"]["original"] == "raw line 2"
    assert [h["_id"] for h in search(os_http, target)] == ["agent-1:1"]
    # re-delivery: the dead letter is already there -> duplicate, still delivered
    again = indexer.index(reqs)
    assert (again.indexed, again.duplicates, again.dead_lettered) == (0, 2, 1)


def test_install_is_idempotent(os_http: Requester, prefix: str) -> None:
    installer = LifecycleInstaller(os_http, prefix=prefix, policies={"standard": POLICY})
    first = installer.install()
    assert first.templates == {
        f"{prefix}-events": "created",
        f"{prefix}-batches": "created",
        f"{prefix}-deadletter": "created",
    }
    second = installer.install()
    assert second.templates == {
        f"{prefix}-events": "unchanged",
        f"{prefix}-batches": "unchanged",
        f"{prefix}-deadletter": "unchanged",
    }


def test_indices_from_an_older_template_get_the_new_fields(os_http: Requester, prefix: str) -> None:
    """An upgrade adds fields: this month's existing index must accept them at once."""
    old = f"{prefix}-events-standard-2026.11"
    created = os_http(
        "PUT",
        f"/{old}",
        body={"mappings": {"dynamic": "strict", "properties": {"message": {"type": "text"}}}},
    )
    assert created.status == 200, created.body
    install(os_http, prefix)
    properties = os_http("GET", f"/{old}/_mapping").body[old]["mappings"]["properties"]
    assert properties["crm"]["properties"]["changes"]["type"] == "nested"
    assert index_events(os_http, prefix, range(3)).indexed == 3  # not dead-lettered
    assert os_http("GET", f"/{prefix}-deadletter/_count").status == 404


@pytest.mark.skipif(ISM_AVAILABLE, reason="the test cluster has ISM")
def test_without_ism_one_clear_warning(
    os_http: Requester, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    installer = LifecycleInstaller(os_http, prefix=prefix, policies={"standard": POLICY})
    with caplog.at_level(logging.WARNING, logger="collector.lifecycle"):
        assert installer.install().ism_available is False
        installer.install()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("collector")]
    assert ours == [NO_ISM_WARNING]


@pytest.mark.skipif(
    not ISM_AVAILABLE,
    reason="ISM plugin not installed on the test cluster (not served by Maven Central)",
)
def test_ism_policy_installed_and_attached(os_http: Requester, prefix: str) -> None:
    # An index of the class created before the policy: attached via _plugins/_ism/add.
    early = f"{prefix}-events-standard-2020.01"
    LifecycleInstaller(os_http, prefix=prefix, policies={}).install()  # templates only
    assert os_http("PUT", f"/{early}").status == 200
    report = install(os_http, prefix).install()
    assert report.ism_available
    assert report.policies == {f"{prefix}-standard": "unchanged"}
    stored = os_http("GET", f"/_plugins/_ism/policies/{prefix}-standard").body
    assert stored["policy"]["ism_template"][0]["index_patterns"] == [f"{prefix}-events-standard-*"]
    assert managed_by(os_http, early) == f"{prefix}-standard"
    # An index created after the policy is picked up by ism_template.
    index_events(os_http, prefix, range(1))
    assert managed_by(os_http, f"{prefix}-events-standard-2026.11") == f"{prefix}-standard"


def managed_by(http: Requester, index: str) -> str | None:
    """The index's ISM policy id; ISM attaches asynchronously, so poll (bounded)."""
    policy = None
    for _ in range(60):
        explain = http("GET", f"/_plugins/_ism/explain/{index}").body
        policy = explain.get(index, {}).get("index.plugins.index_state_management.policy_id")
        if policy:
            break
        time.sleep(0.5)
    return policy


def test_new_user_fields_and_typed_changes_index_and_search(
    os_http: Requester, prefix: str
) -> None:
    """The strict template takes user.effective/target, organization and typed change
    values; numbers stay numbers in _source and match as terms."""
    install(os_http, prefix)
    change = audit_pb2.FieldChange
    event = make_event(1)
    event.effective_user.name = "carla"
    event.target_user.name = "bob"
    event.target_user.roles.append("admin")
    event.organization.id = "tenant-7"
    event.changes.append(
        change(
            field="credit_limit",
            old_value="5000",
            new_value="7500",
            old_type=change.VALUE_TYPE_NUMBER,
            new_type=change.VALUE_TYPE_NUMBER,
        )
    )
    indexer = BulkIndexer(os_http, deadletter_index=deadletter_index(prefix), max_docs=7)
    doc = to_document(event, agent_id="agent-1", received_unix_nano=NOV_27_2026)
    target = index_name(prefix, "standard", "monthly", doc.timestamp_unix_nano)
    result = indexer.index([IndexRequest(target, doc.doc_id, doc.source, "agent-1", 1)])
    assert result.dead_lettered == 0
    hits = search(
        os_http,
        f"{prefix}-events-*",
        {
            "bool": {
                "filter": [
                    {"term": {"user.effective.name": "carla"}},
                    {"term": {"user.target.roles": "admin"}},
                    {"term": {"organization.id": "tenant-7"}},
                    {
                        "nested": {
                            "path": "crm.changes",
                            "query": {"term": {"crm.changes.new": "7500"}},
                        }
                    },
                ]
            }
        },
    )
    assert len(hits) == 1
    stored = hits[0]["_source"]["crm"]["changes"]
    assert {"field": "credit_limit", "old": 5000, "new": 7500} in stored
