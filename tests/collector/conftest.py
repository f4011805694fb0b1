"""Fixtures for the collector tests: OpenSearch access with per-test index prefixes,
a throw-away PKI, and collector configs written into tmp dirs."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.admin.pki import PkiLayout, init_ca, issue_agent
from collector.index import OpenSearchHttp, Requester, Response, make_client

REPO = Path(__file__).resolve().parents[2]
STANDARD_POLICY = REPO / "config" / "opensearch" / "ism-standard.json"


@pytest.fixture(scope="session")
def os_url(opensearch_url: str) -> str:
    """The test cluster (the session fixture: $OPENSEARCH_URL or the embedded node)."""
    return opensearch_url


@pytest.fixture(scope="session")
def os_http(os_url: str) -> Requester:
    http = OpenSearchHttp(make_client(os_url, timeout_s=30))
    info = http("GET", "/")
    if info.status != 200:
        pytest.fail(f"OpenSearch at {os_url} not reachable: {info.body}")
    return http


@pytest.fixture(scope="session")
def ism_available(os_http: Requester) -> bool:
    plugins = os_http("GET", "/_cat/plugins", params={"format": "json"}).body
    return any(row.get("component") == "opensearch-index-management" for row in plugins)


@pytest.fixture
def prefix(os_http: Requester) -> Iterator[str]:
    """A unique index prefix; every index, template and policy under it is deleted after."""
    value = f"t-{uuid.uuid4().hex[:10]}"
    yield value
    # A test that failed while a legal hold was active leaves read-only indices behind.
    os_http(
        "PUT",
        f"/{value}-*/_settings",
        body={"index.blocks.read_only": None},
        params={"expand_wildcards": "all"},
    )
    os_http("DELETE", f"/{value}-*", params={"expand_wildcards": "all"})
    for name in (f"{value}-events", f"{value}-batches", f"{value}-deadletter"):
        os_http("DELETE", f"/_index_template/{name}")
    policies = os_http("GET", "/_plugins/_ism/policies")
    if policies.status == 200:
        for entry in policies.body.get("policies", []):
            if str(entry.get("_id", "")).startswith(f"{value}-"):
                os_http("DELETE", f"/_plugins/_ism/policies/{entry['_id']}")


def refresh(http: Requester, index: str) -> None:
    http("POST", f"/{index}/_refresh", params={"ignore_unavailable": "true"})


def search(http: Requester, index: str, query: Mapping[str, Any] | None = None) -> list[Any]:
    refresh(http, index)
    response = http(
        "POST",
        f"/{index}/_search",
        body={"size": 1000, "query": query or {"match_all": {}}},
        params={"ignore_unavailable": "true"},
    )
    assert response.status == 200, response.body
    hits: list[Any] = response.body["hits"]["hits"]
    return hits


@dataclass
class Pki:
    """A CA with collector certificate plus helpers to issue agent certificates."""

    layout: PkiLayout

    def agent(self, name: str, **kwargs: Any) -> tuple[Path, Path]:
        issued = issue_agent(self.layout.root, name, **kwargs)
        return issued.cert, issued.key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(init_ca(tmp_path / "pki"))


def write_config(
    directory: Path,
    pki: Pki,
    *,
    prefix: str = "crm-audit",
    url: str = "http://127.0.0.1:9200",
    listen: str = "127.0.0.1:0",
    **overrides: Any,
) -> Path:
    """Write a valid collector.yaml (relative paths) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    policy_dir = directory / "opensearch"
    policy_dir.mkdir(exist_ok=True)
    shutil.copy(STANDARD_POLICY, policy_dir / "ism-standard.json")
    data: dict[str, Any] = {
        "listen": listen,
        "tls": {
            "ca": os.path.relpath(pki.layout.ca_cert, directory),
            "cert": os.path.relpath(pki.layout.collector_cert, directory),
            "key": os.path.relpath(pki.layout.collector_key, directory),
        },
        "opensearch": {
            "url": url,
            "index_prefix": prefix,
            "bulk_max_docs": 100,
            "bulk_max_bytes": 1048576,
            "request_timeout_s": 30,
        },
        "retention": {
            "default_class": "standard",
            "granularity": "monthly",
            "classes": {"standard": {"policy": "opensearch/ism-standard.json"}},
        },
        "server": {"max_concurrent_streams": 8, "max_message_bytes": 16777216},
    }
    data.update(overrides)
    path = directory / "collector.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class FakeHttp:
    """A scripted `Requester`: records every call, answers from a queue or a function."""

    def __init__(self, responder: Any) -> None:
        self.responder = responder
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        if isinstance(body, bytes):  # _bulk bodies are sent as UTF-8 bytes
            body = body.decode("utf-8")
        self.calls.append((method, path, body, dict(params or {})))
        result = self.responder(method, path, body, dict(params or {}))
        return result if isinstance(result, Response) else Response(*result)

    def bulk_bodies(self) -> list[list[Any]]:
        """The NDJSON bodies sent to _bulk, parsed line by line."""
        return [
            [json.loads(line) for line in body.splitlines()]
            for method, path, body, _ in self.calls
            if path == "/_bulk"
        ]


NOV_27_2026 = 1_795_780_800_000_000_000  # 2026-11-27T12:00:00Z in ns


def make_event(sequence: int, agent_id: str = "agent-1", **fields: Any) -> Any:
    """A fully populated AuditEvent (fields override)."""
    from proto.v1 import audit_pb2

    event = audit_pb2.AuditEvent(
        sequence=sequence,
        observer=audit_pb2.Observer(agent_id=agent_id, hostname="crm-01", agent_version="0.1.0"),
        time_unix_nano=NOV_27_2026 + sequence,
        observed_unix_nano=NOV_27_2026 + 5_000_000_000,
        event_category=["database"],
        event_type=["change"],
        action="record.update",
        outcome=audit_pb2.OUTCOME_SUCCESS,
        audit_category=audit_pb2.AUDIT_CATEGORY_DATA_OPERATION,
        user=audit_pb2.User(id="u42", name="alice", email="alice@example.com", roles=["sales"]),
        source=audit_pb2.Source(ip="10.1.2.3", port=51515, device_id="dev-9", user_agent="UA/1"),
        session_id="sess-1",
        object=audit_pb2.CrmObject(type="customer", id="c-1", name="ACME"),
        changes=[
            audit_pb2.FieldChange(field="iban", old_value="DE01", new_value="DE02"),
            audit_pb2.FieldChange(field="phone", new_value="+49 1"),
        ],
        message="alice updated customer c-1",
        original='{"user":"alice","action":"update"}',
        log=audit_pb2.LogOrigin(
            file_path="/var/log/crm/audit.log", offset=1234, source_name="crm", format="jsonlines"
        ),
        attributes={"tenant": "eu"},
    )
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(event, key)[:]
            getattr(event, key).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(event, key).CopyFrom(value)
        else:
            setattr(event, key, value)
    return event
