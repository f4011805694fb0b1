"""What the end-to-end tests share: the configs they run real processes with, removing what
a test made under its index prefix, and `crm-audit verify` as JSON."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opensearchpy import OpenSearch, TransportError, helpers
from opensearchpy.helpers.errors import ScanError

from collector import batchbytes
from collector.admin.pki import IssuedCert, init_ca
from tests.helpers import batch_bytes, free_port, stored_bytes
from tests.processes import BIN, ManagedProcess, wait_for

REPO = Path(__file__).resolve().parents[2]
STANDARD_POLICY = REPO / "config" / "opensearch" / "ism-standard.json"


def write_collector_config(
    path: Path,
    *,
    pki: Path,
    url: str | Sequence[str],
    prefix: str,
    port: int,
    opensearch_extra: str = "",
    extra: str = "",
) -> Path:
    """A collector.yaml on 127.0.0.1:`port` with the PKI's certificates, one retention
    class, `opensearch_extra` keys under `opensearch:` and `extra` top-level sections.
    `url` is one URL (``opensearch.url``) or a list of nodes (``opensearch.urls``)."""
    opensearch = textwrap.indent(textwrap.dedent(opensearch_extra).strip(), "  ")
    nodes = f'url: "{url}"' if isinstance(url, str) else f"urls: {json.dumps(list(url))}"
    path.write_text(
        f"""listen: "127.0.0.1:{port}"
tls: {{ca: {pki}/ca.crt, cert: {pki}/collector.crt, key: {pki}/collector.key}}
opensearch:
  {nodes}
  index_prefix: "{prefix}"
{opensearch}
retention:
  default_class: standard
  classes:
    standard: {{policy: {STANDARD_POLICY}}}
{textwrap.dedent(extra).strip()}
""",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class SealingCollector:
    """A real collector process as the end-to-end integrity tests run it, on 127.0.0.1:
    certificates from its own PKI (``root/pki``), agent keys registered in ``root/keys``,
    seals required, signed checkpoints in ``root/checkpoints`` every second, writing
    under its own index prefix."""

    root: Path
    pki: Path
    keys: Path
    checkpoints: Path
    prefix: str
    url: str
    port: int
    client: OpenSearch
    process: ManagedProcess

    def refresh(self) -> None:
        """Make everything written under the prefix searchable."""
        self.client.indices.refresh(index=f"{self.prefix}-*", ignore_unavailable=True)


@contextmanager
def sealing_collector(
    root: Path,
    url: str,
    name: str,
    *,
    metrics_port: int | None = None,
    opensearch_extra: str = "",
    require_seal: bool = True,
) -> Iterator[SealingCollector]:
    """Start a `SealingCollector` under `root` (index prefix ``name-<random>``), wait
    until it listens; stop it and remove what it wrote afterwards. With `metrics_port`,
    its /metrics listen on 127.0.0.1 there; `opensearch_extra`: more keys under
    ``opensearch:``; `require_seal` False: unsealed batches are taken too (what the
    format 1 tests send by hand)."""
    pki = root / "pki"
    init_ca(pki)
    keys, checkpoints = root / "keys", root / "checkpoints"
    keys.mkdir()
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = write_collector_config(
        root / "collector.yaml",
        pki=pki,
        url=url,
        prefix=prefix,
        port=port,
        opensearch_extra=opensearch_extra,
        extra=textwrap.dedent(f"""
            integrity:
              keys_dir: keys
              require_seal: {str(require_seal).lower()}
              checkpoint_dir: checkpoints
              checkpoint_interval_s: 1
            """)
        + (f'metrics: {{listen: "127.0.0.1:{metrics_port}"}}\n' if metrics_port else ""),
    )
    process = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(config)], root / "collector.log"
    )
    client = OpenSearch(hosts=[url], timeout=30)
    try:
        wait_for(lambda: "collector listening" in process.log(), "collector start", watch=[process])
        yield SealingCollector(root, pki, keys, checkpoints, prefix, url, port, client, process)
    finally:
        process.stop()
        drop_prefix(client, prefix)


def write_tailing_agent_config(
    path: Path,
    site: SealingCollector,
    agent_id: str,
    issued: IssuedCert,
    *,
    state_dir: Path,
    logs: Path,
    max_events: int = 100,
) -> Path:
    """An agent config shipping to `site` with the certificate `issued` for `agent_id`,
    tailing ``logs/*.jsonl`` (JSON lines), batches of `max_events`."""
    path.write_text(
        agent_config_head(
            agent_id=agent_id,
            state_dir=state_dir,
            port=site.port,
            ca=site.pki / "ca.crt",
            cert=issued.cert,
            key=issued.key,
            max_events=max_events,
        )
        + f"""sources:
  - {{name: crm_app, format: jsonlines, paths: ["{logs}/*.jsonl"], poll_interval_s: 0.1}}
""",
        encoding="utf-8",
    )
    return path


def agent_config_head(
    *,
    agent_id: str,
    state_dir: Path | str,
    port: int | Sequence[int],
    ca: Path,
    cert: Path,
    key: Path,
    max_events: int = 500,
    max_in_flight: int | None = None,
) -> str:
    """The top of an agent.yaml shipping to 127.0.0.1:`port` (several ports: several
    collectors, in that order), retrying fast; callers add their `sources:` (and any
    other section)."""
    in_flight = f"  max_in_flight: {max_in_flight}\n" if max_in_flight is not None else ""
    ports = [port] if isinstance(port, int) else list(port)
    endpoints = json.dumps([f"127.0.0.1:{p}" for p in ports])
    return f"""agent_id: {agent_id}
state_dir: {state_dir}
collector:
  endpoints: {endpoints}
  server_name: localhost
  tls: {{ca: {ca}, cert: {cert}, key: {key}}}
  retry: {{initial_s: 0.2, max_s: 1.0}}
{in_flight}batch: {{max_events: {max_events}, max_wait_s: 0.2}}
"""


def write_jsonl_agent_config(
    path: Path,
    *,
    agent_id: str,
    state_dir: Path | str,
    port: int,
    ca: Path,
    cert: Path,
    key: Path,
    glob: str,
) -> Path:
    """An agent.yaml shipping batches of up to 100 to 127.0.0.1:`port`, reading one
    jsonlines source `crm_app` from `glob`, polled every 0.1 s."""
    head = agent_config_head(
        agent_id=agent_id, state_dir=state_dir, port=port, ca=ca, cert=cert, key=key, max_events=100
    )
    path.write_text(
        head
        + f"""sources:
  - name: crm_app
    format: jsonlines
    paths: ["{glob}"]
    poll_interval_s: 0.1
""",
        encoding="utf-8",
    )
    return path


def enroll(agent_yaml: Path, keys: Path, agent_id: str) -> str:
    """docs/operations.md "Enroll an agent", steps 4-5: `crm-audit-agent key` creates the
    signing key in state_dir, `crm-audit keys register` appends its public key to
    `keys`. The key id."""
    made = subprocess.run(
        [str(BIN / "crm-audit-agent"), "key", "-c", str(agent_yaml)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    public = re.search(r"^public key: (.+)$", made.stdout, re.M)
    key_id = re.search(r"^key id: ([0-9a-f]{64})$", made.stdout, re.M)
    assert public is not None and key_id is not None, made.stdout
    registered = subprocess.run(
        [str(BIN / "crm-audit"), "keys", "register", str(keys), agent_id, public.group(1)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert registered.returncode == 0, registered.stderr
    return key_id.group(1)


def drop_prefix(client: OpenSearch, prefix: str) -> None:
    """Remove what a test's collectors made under `prefix` (indices and the index
    templates), then close `client`."""
    client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
    for template in (f"{prefix}-events", f"{prefix}-batches", f"{prefix}-deadletter"):
        client.transport.perform_request(
            "DELETE", f"/_index_template/{template}", params={"ignore": 404}
        )
    client.close()


_T = TypeVar("_T")


class _ShardsMissing(Exception):
    """An answer that came from some shards only (``_shards.failed``)."""


def on_every_shard(ask: Callable[[], _T], what: str) -> _T:
    """`ask()` again until it answers from every shard.

    A collector creates its alerts index and each monthly events index on first use (an
    agent's own events carry the current time). A search, scroll or count that meets
    such an index while its shard is still starting is answered 503 ("all shards
    failed") when it is the only index, or fails on that shard (a scroll's `ScanError`,
    a count's ``_shards.failed``, raised by `ask` as `_ShardsMissing`). Counting every
    record by content needs all shards, so a partial answer is never returned; a poll
    sees "not yet" instead of an error."""
    last: Exception | None = None
    for _ in range(20):
        try:
            return ask()
        except (ScanError, _ShardsMissing) as exc:
            last = exc
        except TransportError as exc:
            if exc.status_code != 503:
                raise
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what} was not answered by every shard within 10 s: {last}")


def agent_docs(
    client: OpenSearch, prefix: str, agent_id: str, source: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Every event document of `agent_id` under `prefix` (refreshed first), each its
    `_source` (or the `source` fields of it) plus its `_id`, from every shard
    (`on_every_shard`)."""
    index = f"{prefix}-events-*"
    extra: dict[str, Any] = {"_source": list(source)} if source is not None else {}

    def scan() -> list[dict[str, Any]]:
        client.indices.refresh(index=index, ignore_unavailable=True)
        return [
            {"_id": hit["_id"], **hit["_source"]}
            for hit in helpers.scan(
                client,
                index=index,
                query={"query": {"term": {"agent.id": agent_id}}},
                ignore_unavailable=True,
                size=2000,
                **extra,
            )
        ]

    return on_every_shard(scan, f"the documents of {agent_id} in {index}")


def search_hits(client: OpenSearch, index: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The hits of one search of `index` (missing indices ignored), from every shard
    (`on_every_shard`)."""

    def search() -> list[dict[str, Any]]:
        answer = client.search(index=index, body=body, params={"ignore_unavailable": "true"})
        if answer["_shards"].get("failed"):
            raise _ShardsMissing(f"search of {index} failed on shards: {answer['_shards']}")
        hits: list[dict[str, Any]] = answer["hits"]["hits"]
        return hits

    return on_every_shard(search, f"a search of {index}")


def event_bytes(client: OpenSearch, prefix: str, hit: dict[str, Any]) -> bytes:
    """The signed bytes of event document `hit` as the collector stored them: in the
    document (format 1, forks) or in the batch document of its index that lists its
    sequence (format 2, `collector.batchbytes`)."""
    source = hit["_source"]
    sequence = int(source["event"]["sequence"])
    filters = [
        {"term": {"agent.id": source["agent"]["id"]}},
        {"term": {"agent.stream": source["agent"].get("stream", "")}},
        {"range": {"batch.first": {"lte": sequence}}},
        {"range": {"batch.last": {"gte": sequence}}},
    ]
    batches = search_hits(
        client,
        batchbytes.batches_index(prefix, hit["_index"]),
        {"size": 100, "query": {"bool": {"filter": filters}}},
    )
    table = batch_bytes(prefix, [(b["_index"], b["_source"]) for b in batches])
    return stored_bytes(hit["_index"], source, table)


def count_docs(client: OpenSearch, index: str, body: dict[str, Any] | None = None) -> int:
    """The documents of `index` matching `body` (refreshed first), counted on every shard
    (`on_every_shard`), never a count of some shards only."""

    def count() -> int:
        client.indices.refresh(index=index, ignore_unavailable=True)
        answer = client.count(index=index, body=body, ignore_unavailable=True)
        if answer.get("_shards", {}).get("failed"):
            raise _ShardsMissing(f"count of {index} failed on shards: {answer['_shards']}")
        return int(answer["count"])

    return on_every_shard(count, f"a count of {index}")


def verify_json(url: str, prefix: str, *args: str) -> tuple[int, dict[str, Any]]:
    """`crm-audit verify --format json` against `url`/`prefix` with `args`: its exit code
    (0 all valid, 1 problems found; anything else, or a traceback, fails the test) and its
    report."""
    done = subprocess.run(
        [
            str(BIN / "crm-audit"),
            "verify",
            "--opensearch",
            url,
            "--prefix",
            prefix,
            "--format",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def run_verify(
    url: str, prefix: str, keys: Path, checkpoints: Path, agent: str, *extra: str
) -> tuple[int, dict[str, Any]]:
    """`verify_json` for `agent` with the keys directory and the collector's checkpoints,
    trust pinned: the collector's key is named, never found in the directory."""
    return verify_json(
        url,
        prefix,
        "--keys",
        str(keys),
        "--checkpoints",
        str(checkpoints),
        "--checkpoint-key",
        str(checkpoints / "collector-signing-key.pub"),
        "--agent",
        agent,
        *extra,
    )


def entry_of(report: dict[str, Any], agent: str) -> dict[str, Any]:
    """The report entry of `agent`'s one chain: its format 1 history (labelled by the
    agent) or its one format 2 stream (labelled ``agent:stream``)."""
    if agent in report["agents"]:
        entry: dict[str, Any] = report["agents"][agent]
        return entry
    (found,) = [e for e in report["agents"].values() if e["agent"] == agent]
    return found


def ranges(report: dict[str, Any], agent: str) -> list[tuple[str, int, int]]:
    """The (kind, first, last) sequence ranges a verify report gives for `agent`."""
    return [(r["kind"], r["first"], r["last"]) for r in entry_of(report, agent)["ranges"]]
