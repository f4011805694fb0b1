"""Detection end to end with real processes: two agents, two collectors, one OpenSearch.

A failed-login burst is split across both agents (so across both collectors): the
windowed rule, evaluated by whichever collector holds its lease, raises one alert, and
the webhook receiver (a local HTTP server) gets one notification with a valid HMAC
signature. A bulk export raises an inline alert whose command hook receives the alert
JSON on stdin. The detection latency (line written -> alert document) is printed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from collector.admin.sample import format_timestamp
from tests.helpers import free_port
from tests.integration.support import (
    drop_prefix,
    search_hits,
    write_collector_config,
    write_jsonl_agent_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret-\x01"


@dataclass
class Receiver:
    """A local webhook endpoint recording every POST (headers, body)."""

    server: HTTPServer
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, posts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


RULES = """
rules:
  - id: failed-login-burst
    severity: high
    kind: failed_login_burst
    window: 10m
    threshold: 10
    suppression: 1h
  - id: bulk-export
    severity: high
    kind: bulk_export
    threshold: 2000
    notify: false
    response:
      command:
        command: [{python}, -c, "import sys; open({out!r}, 'w').write(sys.stdin.read())"]
        timeout_s: 30
"""


def _collector_yaml(root: Path, pki: Path, url: str, prefix: str, port: int, hook: str) -> Path:
    return write_collector_config(
        root / f"collector-{port}.yaml",
        pki=pki,
        url=url,
        prefix=prefix,
        port=port,
        extra=f"""
            detection:
              rules: rules.yaml
              interval_s: 1
              lease_ttl_s: 5
              notifiers:
                - name: soc
                  url: "{hook}"
                  secret_file: webhook.key
                  min_severity: medium
                  max_attempts: 3
        """,
    )


def _line(user: str, event: str, outcome: str = "success", **extra: Any) -> str:
    record = {
        "timestamp": format_timestamp(datetime.now(UTC)),
        "event": event,
        "outcome": outcome,
        "user": {"id": f"id-{user}", "name": user, "roles": ["advisor"]},
        "source_ip": "10.99.1.2",
        **extra,
    }
    return json.dumps(record) + "\n"


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)


def test_two_collectors_raise_one_alert_and_one_signed_notification(
    opensearch_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    root = tmp_path
    pki = root / "pki"
    init_ca(pki)
    prefix = f"e2edet-{uuid.uuid4().hex[:8]}"
    hook_out = root / "hook-stdin.json"
    (root / "rules.yaml").write_text(
        RULES.format(python=json.dumps(sys.executable), out=str(hook_out))
    )
    secret = root / "webhook.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    logs = {name: root / f"logs-{name}" for name in ("crm-a", "crm-b")}
    procs: list[ManagedProcess] = []
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    try:
        for name, logdir in logs.items():
            logdir.mkdir()
            issue_agent(pki, name)
            port = free_port()
            cfg = _collector_yaml(root, pki, opensearch_url, prefix, port, receiver.url)
            procs.append(
                ManagedProcess(
                    ["crm-audit-collector", "run", "-c", str(cfg)], root / f"c-{port}.log"
                )
            )
            agent_cfg = write_jsonl_agent_config(
                root / f"agent-{name}.yaml",
                agent_id=name,
                state_dir=root / f"state-{name}",
                port=port,
                ca=pki / "ca.crt",
                cert=pki / "agents" / f"{name}.crt",
                key=pki / "agents" / f"{name}.key",
                glob=str(logdir / "*.jsonl"),
            )
            procs.append(
                ManagedProcess(
                    ["crm-audit-agent", "run", "-c", str(agent_cfg)], root / f"{name}.log"
                )
            )

        def alerts(rule_id: str, kind: str = "detection") -> list[dict[str, Any]]:
            index = f"{prefix}-alerts"
            if not client.indices.exists(index=index):
                return []
            client.indices.refresh(index=index)
            filters = [{"term": {"alert.kind": kind}}, {"term": {"alert.rule.id": rule_id}}]
            body = {"size": 100, "query": {"bool": {"filter": filters}}}
            return [h["_source"] | {"_id": h["_id"]} for h in search_hits(client, index, body)]

        def lease_state() -> str:
            # A just-created index answers 503 while its shard is still recovering.
            doc = client.get(
                index=f"{prefix}-leases", id="rule:failed-login-burst", ignore=(404, 503)
            )
            return str(doc.get("_source", {}).get("lease", {}).get("evaluated_to", ""))

        wait_for(
            lambda: client.indices.exists(index=f"{prefix}-leases") and bool(lease_state()),
            "the windowed rule to be evaluated once",
            timeout=120,
            watch=procs,
        )
        # 6 failures through agent A / collector 1, then 6 through agent B / collector 2.
        burst = [_line("victim", "login", "failure", reason="bad_password") for _ in range(6)]
        _append(logs["crm-a"] / "crm.jsonl", burst)
        _append(logs["crm-b"] / "crm.jsonl", burst)
        written = time.monotonic()
        wait_for(lambda: alerts("failed-login-burst"), "the burst alert", timeout=120, watch=procs)
        latency = time.monotonic() - written
        print(f"\ndetection latency (windowed, line written -> alert): {latency:.2f}s")

        # Let both collectors evaluate the rule a few more times: still one alert.
        seen: set[str] = set()

        def evaluated_again() -> bool:
            seen.add(lease_state())
            return len(seen) >= 4

        wait_for(evaluated_again, "three more evaluations", timeout=120, watch=procs)
        raised = alerts("failed-login-burst")
        assert len(raised) == 1
        alert = raised[0]["alert"]
        assert alert["key"] == "victim" and alert["severity"] == "high"
        assert len(alert["event_ids"]) == 10
        assert {i.split(":")[0] for i in alert["event_ids"]} <= {"crm-a", "crm-b"}

        # One signed notification for it.
        wait_for(
            lambda: alerts("failed-login-burst", "response"), "the notification record", timeout=60
        )
        ours = [(h, b) for h, b in receiver.posts if json.loads(b)["id"] == raised[0]["_id"]]
        assert len(ours) == 1
        headers, body = ours[0]
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-crm-audit-signature"], expected)
        record = alerts("failed-login-burst", "response")[0]["alert"]["response"]
        assert record["action"] == "notify.webhook" and record["outcome"] == "success"
        assert record["target"] == "soc" and record["alert_id"] == raised[0]["_id"]

        # Inline: a bulk export, its command hook gets the alert JSON on stdin.
        _append(
            logs["crm-b"] / "crm.jsonl",
            [
                _line(
                    "hoarder",
                    "record.export",
                    record_count=3000,
                    object={"type": "list", "id": "E1"},
                )
            ],
        )
        written = time.monotonic()
        wait_for(lambda: alerts("bulk-export"), "the bulk export alert", timeout=120, watch=procs)
        print(
            f"detection latency (inline, line written -> alert): {time.monotonic() - written:.2f}s"
        )
        wait_for(hook_out.exists, "the response command", timeout=60)
        wait_for(lambda: alerts("bulk-export", "response"), "the response record", timeout=60)
        payload = json.loads(hook_out.read_text())
        assert payload["alert"]["key"] == "hoarder"
        assert payload["alert"]["event_ids"] == [alerts("bulk-export")[0]["alert"]["event_ids"][0]]
        assert not [
            b for _, b in receiver.posts if json.loads(b)["alert"]["rule"]["id"] == "bulk-export"
        ]
    finally:
        for proc in reversed(procs):
            proc.stop()
        drop_prefix(client, prefix)
