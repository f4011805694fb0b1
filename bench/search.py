"""OpenSearch for the benchmark: the node (embedded or given) and the few calls made on it."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError

from bench.processes import BenchError, Proc, free_port

Log = Callable[[str], None]
STALL_S = 120.0  # a wait gives up when the count has not changed for this long
# A wait polls every FINAL_POLL_S once this share of its target is searchable.
FINAL_SHARE = 0.9
FINAL_POLL_S = 0.1


@contextlib.contextmanager
def opensearch_node(
    external_url: str | None, home: Path, env: Mapping[str, str], euid: int, log: Log
) -> Iterator[tuple[str, str]]:
    """Yield (url, how) of the OpenSearch to measure against, stopping what it started.

    `external_url` (``$OPENSEARCH_URL``) is used as is; otherwise an embedded single-node
    OpenSearch is started on a free loopback port with its home under `home` (which
    must be traversable by the node's user when running as root) and stopped after.
    """
    if external_url:
        yield external_url.rstrip("/"), "external (OPENSEARCH_URL)"
        return
    from collector.admin.opensearch_node import EmbeddedOpenSearch

    node = EmbeddedOpenSearch.from_env(env, euid, home=home, port=free_port(), log=log)
    try:
        node.start(timeout=240)
        yield node.url, "embedded single node, 512 MiB heap"
    finally:
        node.stop()
        shutil.rmtree(home, ignore_errors=True)


def local_node_pid(os_client: OpenSearch) -> int | None:
    """The pid of the node answering on this machine, or None when it is elsewhere
    (an `OPENSEARCH_URL` on another host): its CPU is then not measured."""
    nodes = os_client.nodes.info(node_id="_local", metric="process").get("nodes", {})
    local = next(iter(nodes.values()), {})
    pid = local.get("process", {}).get("id")
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return int(pid) if b"org.opensearch.bootstrap" in cmdline else None


def stored_bytes(os_client: OpenSearch, pattern: str) -> int:
    """Bytes of the primaries of the indices matching `pattern` once merged to one
    segment each (sizes right after indexing vary with the merges in flight). Summed
    from the segments API: the store size of the index stats is cached for up to 10 s
    (``index.store.stats_refresh_interval``) and read stale right after a merge."""
    os_client.indices.forcemerge(index=pattern, max_num_segments=1, request_timeout=300)
    os_client.indices.refresh(index=pattern)
    answer = os_client.indices.segments(index=pattern)
    return sum(
        int(segment["size_in_bytes"])
        for index in answer["indices"].values()
        for copies in index["shards"].values()
        for shard in copies
        if shard["routing"]["primary"]
        for segment in shard["segments"].values()
        if segment.get("search")
    )


def client(url: str, *, timeout: float = 60.0, pool: int = 4) -> OpenSearch:
    return OpenSearch(hosts=[url], timeout=timeout, max_retries=0, pool_maxsize=pool)


def version(os_client: OpenSearch) -> str:
    info = os_client.info()
    return str(info.get("version", {}).get("number", "?"))


def count(os_client: OpenSearch, index: str, *, refresh: bool = True) -> int:
    """Documents in `index` (a pattern), 0 when none exists yet."""
    try:
        if refresh:
            os_client.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
        result = os_client.count(index=index, ignore_unavailable=True, allow_no_indices=True)
    except NotFoundError:
        return 0
    return int(result["count"])


@dataclass
class CountSamples:
    """(seconds since start, documents seen) samples of one wait."""

    samples: list[tuple[float, int]] = field(default_factory=list)


def wait_for_count(
    os_client: OpenSearch,
    index: str,
    target: int,
    *,
    started: float,
    timeout: float,
    watch: tuple[Proc, ...] = (),
    interval: float = 1.0,
    progress: CountSamples | None = None,
) -> float:
    """Poll refresh + count until `target` documents are searchable; return elapsed seconds.

    Polls once per `interval` (default 1 s, OpenSearch's own refresh interval, so the
    polling adds no more segments than the default refresh would) until `FINAL_SHARE`
    of `target` is searchable, then once per `FINAL_POLL_S`: the elapsed time is at
    most that much late, not up to a whole second (on average half a second, 4-6 % of a
    60,000-event run, which the ceiling's one final refresh does not pay). `started` is
    a `time.monotonic()` value. Gives up after `timeout`, or earlier when the count has
    not moved for `STALL_S`.
    """
    begun = time.monotonic()
    deadline = begun + timeout
    seen = 0
    last_change, last_seen = time.monotonic(), -1
    while True:
        try:
            seen = count(os_client, index)
        except TransportError as exc:
            # e.g. 503 while a just-created index's shard starts: ask again next poll
            problem = f"{exc.status_code} {exc.error}"
        else:
            problem = ""
            if progress is not None:
                progress.samples.append((time.monotonic() - started, seen))
        now = time.monotonic()
        if seen >= target and not problem:
            return now - started
        if seen != last_seen:
            last_change, last_seen = now, seen
        elif now - last_change > STALL_S:
            deadline = now  # nothing moves any more: give up now rather than at the timeout
        for proc in watch:
            proc.check_alive(f"waiting for {target} documents in {index} ({seen} so far)")
        if now > deadline:
            logs = "".join(f"\n--- {p.name} ({p.log_path}) ---\n{p.log_tail(1500)}" for p in watch)
            raise BenchError(
                f"only {seen} of {target} documents searchable in {index} after "
                f"{now - begun:.0f} s (unchanged for {now - last_change:.0f} s)"
                + (f" (last answer: {problem})" if problem else "")
                + logs
            )
        time.sleep(FINAL_POLL_S if seen >= FINAL_SHARE * target else interval)


def delete_prefix(os_client: OpenSearch, prefix: str) -> None:
    """Remove every index, index template and ISM policy named `prefix`-*."""
    with contextlib.suppress(TransportError):
        os_client.indices.delete(
            index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True
        )
    try:
        templates = os_client.transport.perform_request("GET", f"/_index_template/{prefix}-*")
    except TransportError:
        templates = {}
    for entry in templates.get("index_templates", []):
        with contextlib.suppress(TransportError):
            os_client.transport.perform_request("DELETE", f"/_index_template/{entry['name']}")
    with contextlib.suppress(TransportError):
        policies = os_client.transport.perform_request(
            "GET", "/_plugins/_ism/policies", params={"queryString": f"{prefix}-*"}
        )
        for policy in policies.get("policies", []):
            pid = str(policy.get("_id", ""))
            if pid.startswith(f"{prefix}-"):
                os_client.transport.perform_request("DELETE", f"/_plugins/_ism/policies/{pid}")


# Settings OpenSearch sets itself or that belong to one index's identity or lifecycle.
_NOT_COPIED = (
    "index.uuid",
    "index.version.",
    "index.creation_date",
    "index.provided_name",
    "index.routing.",
    "index.resize.",
    "index.history.",
    "index.verified_before_close",
    "index.plugins.",
    "index.opendistro.",
)


def index_definition(os_client: OpenSearch, index: str) -> dict[str, Any]:
    """Settings and mappings of `index`, fit to create an identical index from."""
    result = os_client.indices.get(index=index, flat_settings=True)[index]
    settings = {
        key: value for key, value in result["settings"].items() if not key.startswith(_NOT_COPIED)
    }
    return {"settings": settings, "mappings": result["mappings"]}


def put_index_template(os_client: OpenSearch, name: str, body: Mapping[str, Any]) -> None:
    os_client.transport.perform_request("PUT", f"/_index_template/{name}", body=dict(body))
