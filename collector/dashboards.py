"""Import the analysts' saved objects into OpenSearch Dashboards.

`config/dashboards/crm-audit.ndjson` (index patterns, saved searches, visualizations, a
dashboard) goes to ``POST <url>/api/saved_objects/_import?overwrite=true`` as a
multipart form upload with the ``osd-xsrf: true`` header Dashboards requires, the same
request as the README's curl line. Re-importing overwrites the objects by id, so it is
idempotent. For a collector with a non-default ``opensearch.index_prefix`` the index
pattern titles (``crm-audit-events-*``, ``crm-audit-alerts*``) are rewritten to that
prefix first; object ids stay, so one Dashboards serves one prefix.

Only the standard library is used; TLS verification is always on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.errors import LifecycleError

DEFAULT_PREFIX = "crm-audit"
IMPORT_PATH = "/api/saved_objects/_import?overwrite=true"


@dataclass(frozen=True)
class ImportResult:
    """What Dashboards answered: objects imported and one line per object it refused."""

    success_count: int
    errors: tuple[str, ...]


def check_url(url: str) -> str:
    """The Dashboards base URL without a trailing slash; ValueError when not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def with_prefix(ndjson: bytes, prefix: str) -> bytes:
    """The saved objects with index-pattern titles moved from crm-audit-* to prefix-*."""
    if prefix == DEFAULT_PREFIX:
        return ndjson
    lines = []
    for raw in ndjson.decode("utf-8").splitlines():
        if not raw.strip():
            continue
        obj: dict[str, Any] = json.loads(raw)
        attributes = obj.get("attributes", {})
        title = attributes.get("title", "")
        if obj.get("type") == "index-pattern" and title.startswith(f"{DEFAULT_PREFIX}-"):
            attributes["title"] = prefix + title[len(DEFAULT_PREFIX) :]
        lines.append(json.dumps(obj, sort_keys=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def index_pattern_titles(ndjson: bytes) -> list[str]:
    """The titles of the index patterns in an NDJSON export (for dry runs and logs)."""
    titles = []
    for raw in ndjson.decode("utf-8").splitlines():
        if raw.strip():
            obj = json.loads(raw)
            if obj.get("type") == "index-pattern":
                titles.append(str(obj.get("attributes", {}).get("title", "")))
    return titles


def multipart(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part; returns (body, content type)."""
    boundary = f"crm-audit-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def import_saved_objects(
    url: str,
    ndjson: bytes,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    timeout_s: float = 60,
) -> ImportResult:
    """POST the objects to Dashboards; raises LifecycleError when the import fails."""
    body, content_type = multipart("file", "crm-audit.ndjson", ndjson)
    request = urllib.request.Request(  # noqa: S310 - scheme checked by check_url
        check_url(url) + IMPORT_PATH,
        data=body,
        method="POST",
        headers={"osd-xsrf": "true", "Content-Type": content_type},
    )
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:  # noqa: S310
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("message", detail))
        raise LifecycleError(
            f"Dashboards import into {url} failed: HTTP {exc.code}: {detail[:300]}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LifecycleError(f"Dashboards at {url} not reachable: {reason}") from None
    except ValueError:
        raise LifecycleError(f"Dashboards at {url} answered something that is not JSON") from None
    errors = tuple(
        f"{e.get('type', '?')}/{e.get('id', '?')}: {e.get('error', {}).get('type', e)}"
        for e in answer.get("errors") or []
    )
    result = ImportResult(int(answer.get("successCount", 0)), errors)
    if errors or not answer.get("success", False):
        raise LifecycleError(
            f"Dashboards import into {url}: {result.success_count} imported, "
            f"{len(errors)} refused: {'; '.join(errors) or 'success=false'}"
        )
    return result
