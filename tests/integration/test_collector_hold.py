"""Legal hold with the real CLI against the real OpenSearch (no ISM here).

A held index refuses deletion (``index.blocks.read_only``), the hold and its release are
audited in ``<prefix>-holds`` and as ``legal_hold`` alerts, and after the release the
index can be deleted again. The ISM half (policy switch) runs only where ISM exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.index import Requester
from proto.v1 import audit_pb2
from tests.collector import conftest as collector_fixtures
from tests.collector.conftest import NOV_27_2026, Pki, make_event, search, write_config
from tests.integration.test_collector_ingest import Collector, events_batch, port_of, ship

pytestmark = pytest.mark.integration

os_url = collector_fixtures.os_url
os_http = collector_fixtures.os_http
prefix = collector_fixtures.prefix
pki = collector_fixtures.pki
ism_available = collector_fixtures.ism_available

BIN = Path(sys.executable).parent
OCT_2026 = NOV_27_2026 - 40 * 86_400 * 1_000_000_000


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    return subprocess.run(
        [str(BIN / "crm-audit-collector"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_hold_blocks_deletion_is_audited_and_release_restores(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester
) -> None:
    from tests.helpers import free_port

    config = write_config(
        tmp_path / "cfg", pki, prefix=prefix, url=os_url, listen=f"127.0.0.1:{free_port()}"
    )
    collector = Collector(config, tmp_path / "collector.log")
    try:
        events = [make_event(1), make_event(2, time_unix_nano=OCT_2026)]
        [ack] = ship(port_of(config), pki, "agent-1", [events_batch(1, "agent-1", events)])
        assert ack.status == audit_pb2.Ack.STATUS_OK
    finally:
        assert collector.stop() == 0
    october = f"{prefix}-events-standard-2026.10"
    november = f"{prefix}-events-standard-2026.11"

    bad = cli(
        "hold",
        "place",
        "--class",
        "nope",
        "--from",
        "2026.10",
        "--to",
        "2026.10",
        "--reason",
        "x",
        "-c",
        str(config),
    )
    assert bad.returncode == 2 and "unknown retention class 'nope'" in bad.stderr
    assert (
        cli(
            "hold",
            "place",
            "--class",
            "standard",
            "--from",
            "2026.13",
            "--to",
            "2026.10",
            "--reason",
            "x",
            "-c",
            str(config),
        ).returncode
        == 2
    )

    placed = cli(
        "hold",
        "place",
        "--class",
        "standard",
        "--from",
        "2026.09",
        "--to",
        "2026.10",
        "--reason",
        "SEC inquiry 2026-17",
        "--by",
        "compliance-officer",
        "-c",
        str(config),
    )
    assert placed.returncode == 0, placed.stderr
    assert october in placed.stdout and november not in placed.stdout
    hold_id = placed.stdout.split()[1]

    # Held: deletion refused (by anyone, ISM's delete action included); November is not held.
    refused = os_http("DELETE", f"/{october}")
    assert refused.status == 403 and "cluster_block_exception" in str(refused.body)
    assert os_http("HEAD", f"/{october}").status == 200

    listed = cli("hold", "list", "-c", str(config))
    assert listed.returncode == 0
    assert hold_id in listed.stdout and "active" in listed.stdout
    assert "compliance-officer" in listed.stdout and "SEC inquiry 2026-17" in listed.stdout

    # A second release reason is required; releasing an unknown hold is a usage error.
    assert (
        cli("hold", "release", "--id", "nope", "--reason", "x", "-c", str(config)).returncode == 2
    )
    released = cli(
        "hold",
        "release",
        "--id",
        hold_id,
        "--reason",
        "inquiry closed",
        "--by",
        "compliance-officer",
        "-c",
        str(config),
    )
    assert released.returncode == 0, released.stderr
    assert october in released.stdout
    again = cli("hold", "release", "--id", hold_id, "--reason", "x", "-c", str(config))
    assert again.returncode == 2 and "already released" in again.stderr

    # Audit trail: one action per place/release, the hold's state, legal_hold alerts.
    actions = search(os_http, f"{prefix}-holds", {"term": {"record": "action"}})
    assert sorted(a["_source"]["action"]["type"] for a in actions) == ["place", "release"]
    assert {a["_source"]["action"]["actor"] for a in actions} == {"compliance-officer"}
    [state] = search(os_http, f"{prefix}-holds", {"term": {"record": "hold"}})
    assert state["_source"]["hold"]["status"] == "released"
    assert state["_source"]["hold"]["indices"] == [october]
    alerts = search(os_http, f"{prefix}-alerts", {"term": {"alert.kind": "legal_hold"}})
    assert len(alerts) == 2
    assert any("SEC inquiry 2026-17" in a["_source"]["alert"]["reason"] for a in alerts)

    # Released: deletion works again.
    assert os_http("DELETE", f"/{october}").status == 200


def test_hold_covers_the_batches_indices_of_its_range(
    tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester, ism_available: bool
) -> None:
    """`setup` installs the batches template; a hold on October blocks October's events
    index and its batches index (not November's), names both, and its release frees
    both. With ISM both are moved to the hold policy and back."""
    from collector.batchbytes import batch_doc_id, batch_document, batches_index
    from tests.helpers import free_port

    config = write_config(
        tmp_path / "cfg", pki, prefix=prefix, url=os_url, listen=f"127.0.0.1:{free_port()}"
    )
    made = cli("setup", "-c", str(config))
    assert made.returncode == 0, made.stderr
    assert f"template {prefix}-batches: created" in made.stdout
    october = f"{prefix}-events-standard-2026.10"
    november = f"{prefix}-events-standard-2026.11"
    for events in (october, november):
        assert os_http("PUT", f"/{events}").status == 200  # the events template applies
        doc = batch_document(
            agent_id="agent-1",
            stream_id="s1",
            sequences=[1, 2],
            datas=[b"one", b"two"],
            timestamp="2026-10-15T00:00:00.000000000Z",
        )
        doc_id = batch_doc_id("agent-1", "s1", [1, 2], [b"h1", b"h2"])
        written = os_http("PUT", f"/{batches_index(prefix, events)}/_create/{doc_id}", body=doc)
        assert written.status in (200, 201), written.body
    october_bytes = batches_index(prefix, october)
    november_bytes = batches_index(prefix, november)

    placed = cli(
        "hold",
        "place",
        "--class",
        "standard",
        "--from",
        "2026.10",
        "--to",
        "2026.10",
        "--reason",
        "inquiry",
        "-c",
        str(config),
    )
    assert placed.returncode == 0, placed.stderr
    assert "placed on 2 indices" in placed.stdout
    assert october in placed.stdout and october_bytes in placed.stdout
    assert november not in placed.stdout and november_bytes not in placed.stdout
    hold_id = placed.stdout.split()[1]
    for held in (october, october_bytes):
        refused = os_http("DELETE", f"/{held}")
        assert refused.status == 403 and "cluster_block_exception" in str(refused.body)
    if ism_available:
        explained = os_http("GET", f"/_plugins/_ism/explain/{october_bytes}").body
        assert explained[october_bytes]["policy_id"] == f"{prefix}-legal-hold"
    [state] = search(os_http, f"{prefix}-holds", {"term": {"record": "hold"}})
    assert state["_source"]["hold"]["indices"] == [october, october_bytes]

    released = cli("hold", "release", "--id", hold_id, "--reason", "closed", "-c", str(config))
    assert released.returncode == 0, released.stderr
    assert october_bytes in released.stdout
    for freed in (october, october_bytes, november, november_bytes):
        assert os_http("DELETE", f"/{freed}").status == 200
