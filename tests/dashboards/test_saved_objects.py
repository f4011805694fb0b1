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
from proto.v1 import audit_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
NDJSON = REPO / "config" / "dashboards" / "crm-audit.ndjson"
POLICY = json.loads((REPO / "config" / "opensearch" / "ism-standard.json").read_text())
TENANTS = ("bank-de", "bank-at")


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
    named = set(re.findall(r"([A-Za-z@_][\w.@]*):", query)) - {"_exists_"}
    return named | set(re.findall(r"_exists_:([A-Za-z@_][\w.@]*)", query))


def _controls(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The input controls of an input_control_vis visualization (none otherwise)."""
    state = json.loads(obj["attributes"].get("visState", "{}"))
    if state.get("type") != "input_control_vis":
        return []
    controls: list[dict[str, Any]] = state["params"]["controls"]
    return controls


def _referenced_fields(obj: dict[str, Any]) -> set[str]:
    fields = set(obj["attributes"].get("columns", []))
    fields |= _query_fields(_search_source(obj)["query"]["query"])
    if "visState" in obj["attributes"]:
        for agg in json.loads(obj["attributes"]["visState"])["aggs"]:
            if "field" in agg["params"]:
                fields.add(agg["params"]["field"])
    fields |= {control["fieldName"] for control in _controls(obj)}
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
    lines.append({**lines[-1], "event": "login.impersonation", "on_behalf_of": "kengel"})
    for number, line in enumerate(lines):
        if line["event"] in ("record.view", "record.update") and number % 10 == 0:
            line["on_behalf_of"] = "kengel"  # a support session acting as kengel
    raw = [json.dumps(line).encode() for line in lines] + [b"{not json"]
    parse = get_parser("jsonlines", {})
    actions = []
    for sequence, data in enumerate(raw, start=1):
        event = parse(data)
        assert event is not None
        if sequence <= len(lines):
            _schema_additions(event, lines[sequence - 1])
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


def _tenant(line: dict[str, Any]) -> str:
    return TENANTS[int(line["user"]["id"].rsplit("-", 1)[1]) % 2]


def _schema_additions(event: pb.AuditEvent, line: dict[str, Any]) -> None:
    """What a source mapping sets from keys the default JSON mapping leaves in attributes:
    the tenant, the user acted as and, for role changes, the user acted upon and role."""
    event.organization.id = _tenant(line)
    if "on_behalf_of" in line:
        event.effective_user.name = line["on_behalf_of"]
    if line["event"] == "role.assign":
        event.target_user.id = line["object"]["id"]
        event.target_user.name = line["object"]["name"]
        event.target_user.roles.append(line["message"].split()[1])  # "role X assigned to Y"


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
    if search_id == "crm-audit-impersonation":
        return sum(1 for x in lines if "on_behalf_of" in x or x["event"] == "login.impersonation")
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


def test_saved_searches_show_the_acting_target_user_and_tenant_columns() -> None:
    columns = {o["id"]: o["attributes"]["columns"] for o in _saved_searches()}
    for search in ("crm-audit-exports", "crm-audit-customer-changes"):
        assert {"user.effective.name", "organization.id"} <= set(columns[search])
    assert {"user.target.name", "user.target.roles"} <= set(columns["crm-audit-privilege-changes"])
    assert columns["crm-audit-impersonation"][:2] == ["user.name", "user.effective.name"]


def test_the_overview_dashboard_starts_with_the_tenant_filter() -> None:
    objects = {(o["type"], o["id"]): o for o in _objects()}
    dashboard = objects[("dashboard", "crm-audit-overview")]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {r["name"]: r["id"] for r in dashboard["references"]}
    top = min(panels, key=lambda p: (p["gridData"]["y"], p["gridData"]["x"]))
    assert refs[top["panelRefName"]] == "crm-audit-tenant-filter"
    assert "crm-audit-impersonation" in refs.values()
    (control,) = _controls(objects[("visualization", "crm-audit-tenant-filter")])
    assert (control["fieldName"], control["type"]) == ("organization.id", "list")
    # Panels do not overlap on the 48-column grid.
    cells = [
        (x, y)
        for p in panels
        for x in range(p["gridData"]["x"], p["gridData"]["x"] + p["gridData"]["w"])
        for y in range(p["gridData"]["y"], p["gridData"]["y"] + p["gridData"]["h"])
    ]
    assert len(cells) == len(set(cells))


@pytest.mark.integration
def test_tenant_filter_offers_every_tenant_and_filters_to_its_events(
    sample_index: tuple[OpenSearch, str, list[dict[str, Any]]],
) -> None:
    """The options list is a terms aggregation on the control's field, a choice becomes a
    phrase filter on it (as Dashboards' input control does)."""
    client, prefix, lines = sample_index
    objects = {o["id"]: o for o in _objects()}
    (control,) = _controls(objects["crm-audit-tenant-filter"])
    field = control["fieldName"]
    offered = client.search(
        index=f"{prefix}-events-*",
        body={
            "size": 0,
            "aggs": {"t": {"terms": {"field": field, "size": control["options"]["size"]}}},
        },
    )["aggregations"]["t"]["buckets"]
    assert {b["key"] for b in offered} == set(TENANTS)
    for tenant in TENANTS:
        chosen = {"bool": {"filter": [{"match_phrase": {field: tenant}}]}}
        got = client.count(index=f"{prefix}-events-*", body={"query": chosen})["count"]
        assert got == sum(1 for x in lines if _tenant(x) == tenant) > 0
