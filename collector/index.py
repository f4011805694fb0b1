"""Idempotent bulk indexing into OpenSearch, with per-item outcome accounting.

Every write is ``op_type=create`` with the event's deterministic ``_id``, so a
re-delivered event answers 409 and counts as already delivered. Per item of a bulk
response:

    201              indexed
    409              duplicate (already there: delivered)
    429, 5xx         retried, only those items, with exponential backoff (bounded);
    (no answer)      still failing -> RetryableIndexingError (the batch is not acked OK,
                     the agent re-sends it later: nothing is lost)
    other 4xx        refused by the mapping: the document and the error are written to
                     the dead-letter index (same _id); delivered only once that write
                     is confirmed (201 or 409)

Callers share their requests (`collector.bulkgroup`, group commit): a caller that finds
a free slot (fewer than ``concurrency`` _bulk requests in flight) sends at once; the
writes of callers that arrive while every slot is busy (other agent streams, seals and
alerts, dead letters) are merged, in arrival order, into the next _bulk of at most
``max_docs`` documents and ``max_bytes`` bytes, and each caller gets back its own items'
answers, retrying and dead-lettering them as if it had sent them alone. At most
``concurrency`` _bulk requests are in flight per collector however many agent streams
are busy: OpenSearch sees a bounded load of large bulks and answers 429 rather than
falling over.

`OpenSearchHttp` is the one place that talks to opensearch-py; everything else takes
a `Requester`, which unit tests replace with a fake that records request bodies.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson
from opensearchpy import ConnectionPool, OpenSearch
from opensearchpy.exceptions import ConnectionError as OsConnectionError
from opensearchpy.exceptions import TransportError
from opensearchpy.serializer import JSONSerializer

from collector.bulkgroup import BulkGroup
from collector.documents import Document, iso_nanos
from collector.errors import PermanentIndexingError, RetryableIndexingError

log = logging.getLogger(__name__)

#: Pseudo status for "no HTTP answer at all" (connection refused, timeout).
STATUS_UNREACHABLE = 0

#: What a bulk answer carries back (``filter_path``): each item's status, and its error
#: when it has one. Items stay in request order, one per document, so the answer still
#: pairs with the chunk; `_id`, `_seq_no`, `_shards` etc. of every created item (~200 B
#: each, unused) are not sent.
BULK_FILTER_PATH = "errors,items.*.status,items.*.error"


@dataclass(frozen=True)
class Response:
    """An HTTP answer from OpenSearch: status (0 when unreachable) and parsed body."""

    status: int
    body: Any


class Requester(Protocol):
    """Performs one HTTP request against OpenSearch; never raises for HTTP errors."""

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response: ...


@dataclass(frozen=True)
class ClientAuth:
    """How to authenticate to OpenSearch: basic auth and/or a client certificate.

    ``ca`` verifies the cluster's certificate (https); verification is never turned off.
    """

    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class _NodePool(ConnectionPool):
    """opensearch-py's pool of nodes, saying in the collector's log when a node is set
    aside because it did not answer, and when it answers again. (opensearch-py's own
    messages go to the ``opensearch`` logger, which the CLIs silence for the traceback
    it logs with every failed request.) Only used with more than one node."""

    def mark_dead(self, connection: Any, now: float | None = None) -> None:
        was_live = connection in self.connections
        super().mark_dead(connection, now)
        if was_live and connection not in self.connections:
            failures = self.dead_count.get(connection, 1)
            retry_in = self.dead_timeout * 2 ** min(failures - 1, self.timeout_cutoff)
            log.warning(
                "OpenSearch node %s does not answer: using the other nodes, trying it again "
                "in %.0f s",
                connection.host,
                retry_in,
            )

    def mark_live(self, connection: Any) -> None:
        was_failing = connection in self.dead_count
        super().mark_live(connection)
        if was_failing:
            log.info("OpenSearch node %s answers again", connection.host)


class _FastJson(JSONSerializer):
    """opensearch-py's JSON serializer, reading answers with orjson: a bulk answer is
    parsed for every batch, and the standard library's parser was a twentieth of the
    collector's CPU. Requests are written as before (the bulk body is bytes already,
    passed through untouched)."""

    def loads(self, s: str) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return super().loads(s)  # its SerializationError, as before


def make_client(
    urls: str | Sequence[str],
    *,
    timeout_s: float,
    pool_maxsize: int = 10,
    auth: ClientAuth | None = None,
    serializer: Any = None,
) -> OpenSearch:
    """An opensearch-py client for the nodes of one cluster (one URL or several).

    Retries on HTTP answers are off: `BulkIndexer` retries itself, per item, with
    backoff, and knows which items are safe to resend. The one retry the transport does
    is a request that got no answer from a node (refused, reset, or none within
    `timeout_s`: a stopped or hung node) going to the next node at once, each node
    once: the failed node is set aside for a while (opensearch-py's connection pool:
    60 s, doubling while it stays down), so a lost node costs one failed attempt, not a
    retry of every batch. That resend is safe for every request this package makes:
    writes are op_type=create with a fixed _id, conditional (if_seq_no) or idempotent
    settings. A node that answers, even 5xx, is not set aside (``retry_on_status=()``):
    it is up, and the caller decides about its answer. With one node nothing is resent
    (`max_retries` 0). No sniffing: the listed URLs are the nodes to use (node
    addresses a cluster publishes need not be reachable from here, and _nodes may be
    forbidden). `serializer`: answers read with orjson unless given (verify passes its
    own decoder, which keeps integers beyond 64 bits exact).
    """
    hosts = [urls] if isinstance(urls, str) else list(urls)
    extra: dict[str, Any] = {}
    if auth is not None:
        if auth.username is not None:
            extra["http_auth"] = (auth.username, auth.password or "")
        if hosts[0].startswith("https://"):
            extra["use_ssl"] = True
            extra["verify_certs"] = True
            extra["ssl_show_warn"] = True
            if auth.ca is not None:
                extra["ca_certs"] = str(auth.ca)
            if auth.client_cert is not None and auth.client_key is not None:
                extra["client_cert"] = str(auth.client_cert)
                extra["client_key"] = str(auth.client_key)
    return OpenSearch(
        hosts=hosts,
        timeout=timeout_s,
        max_retries=len(hosts) - 1,
        retry_on_timeout=True,
        retry_on_status=(),
        connection_pool_class=_NodePool,
        pool_maxsize=pool_maxsize,
        serializer=_FastJson() if serializer is None else serializer,
        **extra,
    )


class IndexObserver(Protocol):
    """Receives indexing measurements (collector.metrics implements it)."""

    def bulk_done(self, seconds: float, docs: int, status: int) -> None: ...

    def retried(self, docs: int) -> None: ...

    def bulk_in_flight(self, delta: int) -> None: ...


class _NoObserver:
    def bulk_done(self, seconds: float, docs: int, status: int) -> None:
        pass

    def retried(self, docs: int) -> None:
        pass

    def bulk_in_flight(self, delta: int) -> None:
        pass


class OpenSearchHttp:
    """`Requester` over an opensearch-py client's transport."""

    def __init__(self, client: OpenSearch) -> None:
        self.client = client

    def __call__(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        headers = {"content-type": "application/x-ndjson"} if path.endswith("_bulk") else None
        try:
            result = self.client.transport.perform_request(
                method, path, params=params, body=body, headers=headers
            )
        except OsConnectionError as exc:  # includes ConnectionTimeout
            return Response(STATUS_UNREACHABLE, {"error": _one_line(exc)})
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else STATUS_UNREACHABLE
            return Response(status, exc.info if exc.info is not None else {"error": str(exc)})
        if method == "HEAD":  # the transport answers HEAD with True / False
            return Response(200 if result else 404, result)
        return Response(200, result)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _json(value: object) -> bytes:
    """Compact JSON as UTF-8 bytes (non-ASCII kept as is), as the bulk body carries it."""
    return orjson.dumps(value)


class IndexRequest(NamedTuple):
    """One document to create: target index, stable ``_id`` and body.

    A named tuple: one is made per event on the collector's hot path, at a third of the
    cost of a frozen dataclass, and immutable all the same. (Its ``index`` field hides
    the tuple method of that name, which nothing here calls.)"""

    index: str  # type: ignore[assignment]
    doc_id: str
    # The document as a dict, or None when it came serialized (`body`).
    source: Document | None
    agent_id: str = ""
    sequence: int = 0
    original: str = ""
    # The document as the JSON the bulk body carries, when it was built serialized
    # (the compiled kernel, `collector.native`); b"" otherwise.
    body: bytes = b""
    # Written beside the events (a batch's bytes, `collector.batchbytes`): confirmed,
    # retried and dead-lettered like them, never counted as an event.
    companion: bool = False

    def document(self) -> Document:
        """The document as a dict (parsed from `body` when it came serialized)."""
        if self.source is not None:
            return self.source
        parsed: Document = orjson.loads(self.body)
        return parsed


@dataclass
class IndexResult:
    """What OpenSearch confirmed for a set of requests."""

    indexed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0  # also counted in `indexed` / `duplicates` (of the DLQ write)
    dead_letter_duplicates: int = 0  # of those, DLQ writes that were already there (409)
    errors: list[str] = field(default_factory=list)
    # The requests answered 409 (an _id already there), for a caller that compares them
    # with what is stored (collector.forks); dead-letter writes are not in it.
    conflicts: list[IndexRequest] = field(default_factory=list)


def is_retryable(status: int) -> bool:
    """429 and 5xx (and no answer at all) may succeed later; other 4xx never will."""
    return status in (STATUS_UNREACHABLE, 429) or status >= 500


def _item_error(item: Mapping[str, Any]) -> tuple[str, str]:
    error = item.get("error")
    if isinstance(error, Mapping):
        reason = str(error.get("reason", ""))
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            reason = f"{reason}: {caused.get('reason')}"
        return str(error.get("type", "unknown")), _one_line(reason)
    return "unknown", _one_line(error)


class BulkIndexer:
    """Writes documents with ``_bulk`` and accounts for each item (see module doc)."""

    def __init__(
        self,
        request: Requester,
        *,
        deadletter_index: str,
        max_docs: int = 2000,
        max_bytes: int = 10 * 1024 * 1024,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
        concurrency: int = 1,
        jitter: Callable[[float], float] | None = None,
        observer: IndexObserver | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.deadletter_index = deadletter_index
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.clock_ns = clock_ns
        self.concurrency = concurrency
        # Spreads retries of several collectors apart: delay -> jitter(delay).
        self.jitter = jitter
        self.observer: IndexObserver = observer or _NoObserver()
        self.monotonic = monotonic
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._group: BulkGroup[IndexRequest, tuple[int, Mapping[str, Any]]] = BulkGroup(
            self._exchange,
            self._executor,
            max_docs=max_docs,
            max_bytes=max_bytes,
            concurrency=concurrency,
        )

    def close(self) -> None:
        """Stop the bulk pool (waits for requests in flight)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # -- public --------------------------------------------------------------------

    def index(self, requests: Sequence[IndexRequest]) -> IndexResult:
        """Create every document; return only when OpenSearch confirmed all of them.

        Raises `RetryableIndexingError` when some items still fail transiently after the
        retries, `PermanentIndexingError` when even a dead-letter write is refused.
        """
        result = IndexResult()
        if not requests:
            return result
        rejected: list[tuple[IndexRequest, int, str, str]] = []

        def on_item(req: IndexRequest, status: int, item: Mapping[str, Any]) -> None:
            if req.companion and status in (201, 409):
                return  # a 409: the same _id holds the same bytes (batchbytes.batch_doc_id)
            if status == 201:
                result.indexed += 1
            elif status == 409:
                result.duplicates += 1
                result.conflicts.append(req)
            else:
                err_type, reason = _item_error(item)
                rejected.append((req, status, err_type, reason))

        self._write_all(requests, on_item, what="events")
        if rejected:
            self._dead_letter(rejected, result)
        return result

    # -- internals -----------------------------------------------------------------

    def _dead_letter(
        self, rejected: Sequence[tuple[IndexRequest, int, str, str]], result: IndexResult
    ) -> None:
        now = iso_nanos(self.clock_ns())
        letters: list[IndexRequest] = []
        for req, status, err_type, reason in rejected:
            log.warning(
                "document %s refused by %s (%d %s: %s); writing it to %s",
                req.doc_id,
                req.index,
                status,
                err_type,
                reason,
                self.deadletter_index,
            )
            result.errors.append(f"{req.doc_id}: {err_type}: {reason}")
            body: Document = {
                "@timestamp": now,
                "deadletter": {
                    "index": req.index,
                    "status": status,
                    "error_type": err_type,
                    "reason": reason,
                    "document": req.document(),
                },
                "event": {"sequence": req.sequence},
            }
            if req.agent_id:
                body["agent"] = {"id": req.agent_id}
            if req.original:
                body["event"]["original"] = req.original
            letters.append(
                IndexRequest(self.deadletter_index, req.doc_id, body, companion=req.companion)
            )

        def on_letter(req: IndexRequest, status: int, item: Mapping[str, Any]) -> None:
            if req.companion and status in (201, 409):
                return
            if status == 201:
                result.indexed += 1
                result.dead_lettered += 1
            elif status == 409:
                result.duplicates += 1
                result.dead_lettered += 1
                result.dead_letter_duplicates += 1
            else:
                err_type, reason = _item_error(item)
                raise PermanentIndexingError(
                    f"dead-letter index {self.deadletter_index} refused {req.doc_id}: "
                    f"{status} {err_type}: {reason}"
                )

        self._write_all(letters, on_letter, what="dead letters")

    def _write_all(
        self,
        requests: Sequence[IndexRequest],
        on_item: Callable[[IndexRequest, int, Mapping[str, Any]], None],
        *,
        what: str,
    ) -> None:
        """Bulk-create `requests`, retrying transient failures of items or requests."""
        pending = list(requests)
        attempt = 0
        while True:
            retry: list[IndexRequest] = []
            last_error = ""
            for part in self._group.send(pending, self._entries(pending)):
                items = part.answers
                if isinstance(items, str):
                    if part.status != 200 and not is_retryable(part.status):
                        raise PermanentIndexingError(f"bulk request refused: {items}")
                    retry.extend(part.requests)
                    last_error = items
                    continue
                for req, (status, item) in zip(part.requests, items, strict=True):
                    if is_retryable(status):
                        retry.append(req)
                        last_error = f"{status} {_item_error(item)[0]}"
                    else:
                        on_item(req, status, item)
            if not retry:
                return
            attempt += 1
            if attempt > self.max_retries:
                raise RetryableIndexingError(
                    f"{len(retry)} of {len(requests)} {what} not confirmed after "
                    f"{attempt} attempts (last error: {last_error})"
                )
            self.observer.retried(len(retry))
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            if self.jitter is not None:
                delay = self.jitter(delay)
            log.info(
                "retrying %d %s in %.1fs (attempt %d/%d; last error: %s)",
                len(retry),
                what,
                delay,
                attempt,
                self.max_retries,
                last_error,
            )
            self.sleep(delay)
            pending = retry

    def _exchange(
        self, body: bytes, docs: int
    ) -> tuple[int, list[tuple[int, Mapping[str, Any]]] | str]:
        """POST one (merged) bulk body; its status and per-item answers (`_items`)."""
        response = self._post(body, docs)
        return response.status, self._items(response, docs)

    def _post(self, body: bytes, docs: int) -> Response:
        self.observer.bulk_in_flight(1)
        started = self.monotonic()
        try:
            response = self.request(
                "POST",
                "/_bulk",
                body=body,
                params={"refresh": "false", "filter_path": BULK_FILTER_PATH},
            )
        finally:
            self.observer.bulk_in_flight(-1)
        self.observer.bulk_done(self.monotonic() - started, docs, response.status)
        return response

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="collector-bulk"
                )
            return self._pool

    @staticmethod
    def _items(response: Response, expected: int) -> list[tuple[int, Mapping[str, Any]]] | str:
        """The per-item (status, item) list, or a one-line reason the request failed."""
        if response.status != 200:
            return f"HTTP {response.status}: {_one_line(json.dumps(response.body))[:500]}"
        body = response.body
        items = body.get("items") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or len(items) != expected:
            # Cannot tell which items landed; resending is safe (create + stable _id).
            return f"malformed bulk response ({expected} items sent)"
        out: list[tuple[int, Mapping[str, Any]]] = []
        for entry in items:
            item: Mapping[str, Any] = (
                next(iter(entry.values()), {}) if isinstance(entry, Mapping) else {}
            )
            status = item.get("status") if isinstance(item, Mapping) else None
            out.append((status if isinstance(status, int) else STATUS_UNREACHABLE, item))
        return out

    def _entries(self, requests: Sequence[IndexRequest]) -> list[bytes]:
        """Each request's NDJSON bulk entry (action line and document).

        Each document is serialized once, straight to the UTF-8 bytes that are sent (its
        length is its size, as the bulk limits count it), or sent as it came serialized
        (`IndexRequest.body`); a bulk body is such entries joined (`collector.bulkgroup`).
        """
        entries: list[bytes] = []
        actions: dict[str, bytes] = {}  # per index: the action line up to the _id
        for req in requests:
            head = actions.get(req.index)
            if head is None:
                head = actions[req.index] = b'{"create":{"_index":' + _json(req.index) + b',"_id":'
            body = req.body if req.source is None else _json(req.source)
            entries.append(b"%s%s}}\n%s\n" % (head, _json(req.doc_id), body))
        return entries
