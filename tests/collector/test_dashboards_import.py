"""Importing config/dashboards/crm-audit.ndjson through the Dashboards saved-objects API.

OpenSearch Dashboards itself cannot run on this machine (no distribution reachable), so
a fake Dashboards on 127.0.0.1 records the request and answers as the real
`_import` API does; the test checks the request shape: POST
/api/saved_objects/_import?overwrite=true, `osd-xsrf: true`, a multipart form with the
NDJSON as the `file` part (parsed back with the standard library's MIME parser). The
objects' own validity is checked in tests/dashboards/test_saved_objects.py.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.dashboards import import_saved_objects, index_pattern_titles, with_prefix
from collector.errors import LifecycleError
from tests.collector.conftest import REPO, Pki, write_config

NDJSON = REPO / "config" / "dashboards" / "crm-audit.ndjson"
CLI = Path(sys.executable).parent / "crm-audit-collector"


@dataclass
class FakeDashboards:
    """Records every request; answers like Dashboards' saved-objects import API."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] | None = None


@pytest.fixture
def dashboards() -> Iterator[FakeDashboards]:
    fake = FakeDashboards()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            fake.requests.append(
                {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
            )
            objects = _file_part(self.headers["Content-Type"], body)[1].splitlines()
            answer = fake.answer or {
                "success": True,
                "successCount": len([o for o in objects if o.strip()]),
            }
            payload = json.dumps(answer).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _file_part(content_type: str, body: bytes) -> tuple[dict[str, str], bytes]:
    """(part headers, content) of the single `file` part of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert len(parts) == 1
    part = parts[0]
    headers = {k: str(v) for k, v in part.items()}
    content = part.get_payload(decode=True)
    assert isinstance(content, bytes)
    return headers, content


def test_import_request_shape(dashboards: FakeDashboards) -> None:
    ndjson = NDJSON.read_bytes()
    result = import_saved_objects(dashboards.url + "/", ndjson, username="analyst", password="pw")
    assert result.success_count == len(ndjson.splitlines()) and result.errors == ()
    (request,) = dashboards.requests
    assert request["method"] == "POST"
    assert request["path"] == "/api/saved_objects/_import?overwrite=true"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["osd-xsrf"] == "true"
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert headers["authorization"] == "Basic " + base64.b64encode(b"analyst:pw").decode()
    part_headers, content = _file_part(headers["content-type"], request["body"])
    assert part_headers["Content-Disposition"] == (
        'form-data; name="file"; filename="crm-audit.ndjson"'
    )
    assert content == ndjson


def test_prefix_rewrites_index_pattern_titles_only() -> None:
    original = NDJSON.read_bytes()
    assert with_prefix(original, "crm-audit") == original
    moved = with_prefix(original, "bank-prod")
    assert index_pattern_titles(moved) == ["bank-prod-events-*", "bank-prod-alerts*"]
    before = [json.loads(line) for line in original.splitlines()]
    after = [json.loads(line) for line in moved.splitlines()]
    assert [o["id"] for o in after] == [o["id"] for o in before]
    changed = [a for a, b in zip(after, before, strict=True) if a != b]
    assert {o["type"] for o in changed} == {"index-pattern"}


def test_refused_objects_and_http_errors_are_reported(dashboards: FakeDashboards) -> None:
    dashboards.answer = {
        "success": False,
        "successCount": 9,
        "errors": [
            {"type": "dashboard", "id": "crm-audit-overview", "error": {"type": "conflict"}}
        ],
    }
    with pytest.raises(LifecycleError, match="9 imported, 1 refused: dashboard/crm-audit-overview"):
        import_saved_objects(dashboards.url, NDJSON.read_bytes())
    dashboards.answer = {"statusCode": 403, "message": "Forbidden: no saved-objects rights"}
    dashboards.status = 403
    with pytest.raises(LifecycleError, match="HTTP 403: Forbidden: no saved-objects rights"):
        import_saved_objects(dashboards.url, NDJSON.read_bytes())


def test_unreachable_dashboards_is_one_line() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LifecycleError, match="not reachable"):
        import_saved_objects(f"http://127.0.0.1:{port}", b"{}\n", timeout_s=5)


@pytest.mark.integration
def test_setup_with_dashboards_imports_for_the_configured_prefix(
    tmp_path: Path, pki: Pki, os_url: str, prefix: str, dashboards: FakeDashboards
) -> None:
    config = write_config(tmp_path / "cfg", pki, prefix=prefix, url=os_url)
    env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "setup", "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    dry = cli("--dry-run", "--dashboards", dashboards.url)
    assert dry.returncode == 0, dry.stderr
    assert f"dashboards: would import {NDJSON} into {dashboards.url}" in dry.stdout
    assert dashboards.requests == []

    done = cli("--dashboards", dashboards.url)
    assert done.returncode == 0, done.stderr
    assert f"template {prefix}-events: created" in done.stdout
    assert (
        f"dashboards: {len(NDJSON.read_bytes().splitlines())} saved objects imported "
        f"({prefix}-events-*, {prefix}-alerts*)" in done.stdout
    )
    (request,) = dashboards.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    _, content = _file_part(headers["content-type"], request["body"])
    assert index_pattern_titles(content) == [f"{prefix}-events-*", f"{prefix}-alerts*"]

    dashboards.status, dashboards.answer = 500, {"message": "boom"}
    failed = cli("--dashboards", dashboards.url)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        f"crm-audit-collector: Dashboards import into {dashboards.url} failed: HTTP 500: boom"
    )
    assert "Traceback" not in failed.stderr
    bad = cli("--dashboards", "ftp://x")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
