"""Session fixtures shared by all tests.

- `opensearch_url`: a real OpenSearch. ``$OPENSEARCH_URL`` when set; otherwise an
  embedded single-node OpenSearch (see `collector.admin.opensearch_node`) started on a
  free loopback port in a temporary home, from the cached download
  (``$CRM_AUDIT_CACHE`` or ``~/.cache/crm-audit/dist``), and stopped at session end.

Certificates are made per test package (tests/agent makes its own with `cryptography`
since agent code never imports collector; tests/collector uses `collector.admin.pki`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import embedded_test_node, traversable_tmpdir


def _log(message: str) -> None:
    print(f"[opensearch fixture] {message}", file=sys.stderr)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding integration tests run first, each file kept whole and in order.

    `make test` spreads whole files over its workers in this order (pytest-xdist,
    ``--dist loadfile``); the files that take minutes then start early instead of
    keeping one worker busy alone at the end while the other idles.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """Base URL of a real OpenSearch cluster for this test session."""
    external = os.environ.get("OPENSEARCH_URL")
    if external:
        yield external.rstrip("/")
        return
    home = traversable_tmpdir("crm-audit-test-os-")
    node = embedded_test_node(home / "node", log=_log)
    try:
        node.start(timeout=180)
        yield node.url
    finally:
        node.stop()
        shutil.rmtree(home, ignore_errors=True)
