"""The Dashboards saved objects in config/dashboards/.

OpenSearch Dashboards cannot run here, so the objects are checked against what they
depend on: well-formed NDJSON with resolvable references, every field they name present
in the collector's strict index template, and every saved search's query run against the
real OpenSearch over sample traffic, returning exactly the events it promises.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch, helpers

from agent.parsers import get_parser
from collector.admin.sample import generate
from collector.documents import EVENTS_MAPPING, index_name, to_document
from collector.index import OpenSearchHttp, make_client
from collector.lifecycle import LifecycleInstaller

REPO = Path(__file__).resolve().parents[2]
NDJSON = REPO / "config" / "dashboards" / "crm-audit.ndjson"
POLICY = json.loads((REPO / "config" / "opensearch" / "ism-standard.json").read_text())


def _objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in NDJSON.read_text().splitlines() if line.strip()]


def _mapped_fields(properties: dict[str, Any], prefix: str = "") -> set[str]:
    fields: set[str] = set()
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            fields |= _mapped_fields(spec["properties"], f"{path}.")
        else:
            fields.add(path)
    return fields


def _search_source(obj: dict[str, Any]) -> dict[str, Any]:
    source: dict[str, Any] = json.loads(
        obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )
    return source


def _query_fields(query: str) -> set[str]:
    return set(re.findall(r"([A-Za-z@_][\w.@]*):", query))


def _referenced_fields(obj: dict[str, Any]) -> set[str]:
    fields = set(obj["attributes"].get("columns", []))
    fields |= _query_fields(_search_source(obj)["query"]["query"])
    if "visState" in obj["attributes"]:
        for agg in json.loads(obj["attributes"]["visState"])["aggs"]:
            if "field" in agg["params"]:
                fields.add(agg["params"]["field"])
    return fields


def _saved_searches() -> list[dict[str, Any]]:
    return [o for o in _objects() if o["type"] == "search"]


def test_ndjson_is_one_object_per_line_with_resolvable_references() -> None:
    objects = _objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "duplicate saved object ids"
    for obj in objects:
        assert set(obj) >= {"type", "id", "attributes", "references"}
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']}: dangling reference {ref}"
    assert {o["type"] for o in objects} == {"index-pattern", "search", "visualization", "dashboard"}


def test_every_field_named_exists_in_the_index_template() -> None:
    mapped = _mapped_fields(EVENTS_MAPPING["properties"])
    for obj in _objects():
        refs = {r["id"] for r in obj["references"]}
        if obj["type"] == "index-pattern" or "crm-audit-alerts" in refs:
            continue
        missing = _referenced_fields(obj) - mapped
        assert not missing, f"{obj['id']} names fields the template lacks: {sorted(missing)}"


@pytest.fixture(scope="module")
def sample_index(opensearch_url: str) -> Iterator[tuple[OpenSearch, str, list[dict[str, Any]]]]:
    """Sample traffic normalized by the agent's parser and indexed through the template."""
    prefix = f"dash-{uuid.uuid4().hex[:8]}"
    client = make_client(opensearch_url, timeout_s=30)
    LifecycleInstaller(
        OpenSearchHttp(client), prefix=prefix, policies={"standard": POLICY}
    ).install()
    lines = list(generate(count=600, seed=11, start=datetime(2026, 11, 2, 8, tzinfo=UTC)))
    raw = [json.dumps(line).encode() for line in lines] + [b"{not json"]
    parse = get_parser("jsonlines", {})
    actions = []
    for sequence, data in enumerate(raw, start=1):
        event = parse(data)
        assert event is not None
        event.sequence = sequence
        event.observer.agent_id = "dash-agent"
        event.observed_unix_nano = time.time_ns()
        doc = to_document(event, agent_id="dash-agent", received_unix_nano=time.time_ns())
        index = index_name(prefix, "standard", "monthly", doc.timestamp_unix_nano)
        actions.append(
            {"_op_type": "create", "_index": index, "_id": doc.doc_id, "_source": doc.source}
        )
    ok, errors = helpers.bulk(client, actions, refresh=True)
    assert ok == len(raw) and not errors
    try:
        yield client, prefix, lines
    finally:
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        for template in (f"{prefix}-events", f"{prefix}-deadletter"):
            client.transport.perform_request(
                "DELETE", f"/_index_template/{template}", params={"ignore": 404}
            )
        client.close()


def _expected(search_id: str, lines: list[dict[str, Any]]) -> int:
    if search_id == "crm-audit-failed-logins":
        return sum(1 for x in lines if x["event"] == "login" and x["outcome"] == "failure")
    if search_id == "crm-audit-exports":
        return sum(1 for x in lines if x["event"] == "record.export")
    if search_id == "crm-audit-customer-changes":
        return sum(
            1 for x in lines if x["event"] == "record.update" and x["object"]["type"] == "customer"
        )
    if search_id == "crm-audit-privilege-changes":
        return sum(1 for x in lines if x["event"].split(".")[0] in {"role", "settings"})
    if search_id == "crm-audit-integrity":
        return 1  # the malformed line
    raise AssertionError(f"no expectation for saved search {search_id}")


@pytest.mark.integration
@pytest.mark.parametrize("search", _saved_searches(), ids=lambda s: str(s["id"]))
def test_saved_search_returns_the_events_it_promises(
    search: dict[str, Any], sample_index: tuple[OpenSearch, str, list[dict[str, Any]]]
) -> None:
    client, prefix, lines = sample_index
    query = _search_source(search)["query"]
    assert query["language"] == "lucene"  # runs as query_string in OpenSearch as well
    result = client.count(
        index=f"{prefix}-events-*",
        body={"query": {"query_string": {"query": query["query"]}}},
    )
    expected = _expected(search["id"], lines)
    assert expected > 0, "sample data has none of these: the check would prove nothing"
    assert result["count"] == expected
