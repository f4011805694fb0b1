"""The mTLS gRPC collector: receives batches, indexes them, acks after OpenSearch confirmed.

Programmatic use::

    config = load_config(Path("collector.yaml"))
    server = CollectorServer(config)        # or CollectorServer(config, request=...)
    port = server.start()                   # "127.0.0.1:0" in `listen` picks a free port
    ...
    server.stop(grace_s=30)                 # finish in-flight batches, then close

Identity: the agent id is the CN of the verified client certificate. A batch naming
another agent is rejected (`STATUS_REJECTED`), and every event's ``agent.id`` comes from
the certificate, never from the payload. So is a batch whose seal names another agent.
Seal, chain and continuity checks, seals, alerts and chain heads: `collector.gate`;
signed checkpoints: `collector.checkpoints`. Detection (optional ``detection:`` section):
inline rules run on each batch once indexed, windowed rules in a thread
(`collector.detect.engine.Detection`). Handshake failures (no certificate, foreign
CA, expired certificate) never reach this code: gRPC core refuses them during TLS.

Flow control: a stream is processed one batch at a time (the next is read only once the
previous batch's Ack is sent; what the agent pipelines waits in HTTP/2 flow control),
each agent (certificate CN) may hold at most ``server.max_streams_per_agent`` streams
(more are refused with RESOURCE_EXHAUSTED and the agent retries with backoff), and all
streams share at most ``opensearch.bulk_concurrency`` _bulk requests in flight, the
writes of batches that arrive while every one of them is busy merged into the next
(`collector.index`, `collector.bulkgroup`). So one noisy agent holds at most that many
handler threads and one batch per stream, and the others' batches queue beside it, not
behind its backlog.

Events go to the index of their retention class (`collector.retention`). Metrics and
/healthz: `collector.metrics`, `collector.health` (``metrics.listen``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import native, setup
from collector.checkpoints import CheckpointFile, CheckpointWriter, load_or_create_key
from collector.config import CollectorConfig
from collector.detect.engine import Detection
from collector.detect.rules import load_rules
from collector.documents import (
    DocumentBytes,
    EventDocument,
    Granularity,
    index_name,
    to_document,
)
from collector.errors import (
    IndexingError,
    LifecycleError,
    PermanentIndexingError,
    StartupError,
)
from collector.forks import ForkCheck
from collector.formatv2 import batch_writes, documents_v2, event_count, signed_bytes
from collector.gate import IntegrityGate, event_integrity_fields
from collector.health import HealthCheck, HealthServer
from collector.index import BulkIndexer, IndexRequest, IndexResult, Requester
from collector.keys import KeyRing
from collector.lifecycle import LifecycleInstaller, LifecycleReport, deadletter_index
from collector.metrics import CollectorMetrics
from collector.pipeline import Stop, StreamPipeline, wait_turn
from collector.receipts import receipt_for
from collector.retention import RetentionRouter
from collector.retention_job.runner import RetentionRunner, build_job
from collector.urls import redact_url
from collector.verified import VerifiedHeads
from proto import integrity, limits
from proto.v1 import audit_pb2, audit_pb2_grpc

log = logging.getLogger(__name__)

# Batches of one stream processed at once (collector.pipeline); the agent's default
# window (collector.max_in_flight) is 4.
PIPELINE_DEPTH = 4

Ack = audit_pb2.Ack


class Installer(Protocol):
    """What `Readiness` runs: `LifecycleInstaller` or a verify-only wrapper."""

    def install(self) -> LifecycleReport: ...


class Readiness:
    """Installs templates/policies once; until that succeeded, batches get STATUS_RETRY.

    Events must never reach OpenSearch before the strict template exists (they would
    get a dynamic mapping), so indexing waits for a successful `install`. Failed
    attempts are retried at most every `retry_interval_s`.
    """

    def __init__(
        self,
        installer: Installer,
        *,
        retry_interval_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.installer = installer
        self.retry_interval_s = retry_interval_s
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._ready = False
        self._last_failure: tuple[float, str] | None = None

    def ensure(self) -> None:
        """Return when installed; raise `LifecycleError` otherwise."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            now = self.monotonic()
            if self._last_failure and now - self._last_failure[0] < self.retry_interval_s:
                raise LifecycleError(self._last_failure[1])
            try:
                self.installer.install()
            except LifecycleError as exc:
                self._last_failure = (now, str(exc))
                raise
            self._ready = True

    @property
    def ready(self) -> bool:
        """Whether setup (templates, policies) has succeeded."""
        return self._ready


def index_requests(
    documents: Sequence[tuple[EventDocument | DocumentBytes, str]],
    identity: str,
    prefix: str,
    granularity: Granularity,
    router: RetentionRouter,
) -> list[IndexRequest]:
    """One create per document, into the index of its retention class and event time."""
    classify = router.classify
    # Without retention rules every document takes the default class: a serialized
    # document is parsed only when rules must read it.
    default = None if router.has_rules else router.default_class
    requests: list[IndexRequest] = []
    append = requests.append
    for doc, original in documents:
        if isinstance(doc, DocumentBytes):
            retention_class = default or classify(orjson.loads(doc.body))
            index = index_name(prefix, retention_class, granularity, doc.timestamp_unix_nano)
            append(
                IndexRequest(index, doc.doc_id, None, identity, doc.sequence, original, doc.body)
            )
        else:
            source = doc.source
            index = index_name(prefix, classify(source), granularity, doc.timestamp_unix_nano)
            append(IndexRequest(index, doc.doc_id, source, identity, doc.sequence, original))
    return requests


class BatchProcessor:
    """One batch in, one Ack out (see `proto/v1/audit.proto` for the Ack contract)."""

    def __init__(
        self,
        indexer: BulkIndexer,
        readiness: Readiness,
        *,
        prefix: str,
        retention_class: str,
        granularity: Granularity,
        clock_ns: Callable[[], int] = time.time_ns,
        gate: IntegrityGate | None = None,
        detection: Callable[[Sequence[tuple[str, Mapping[str, Any]]]], object] | None = None,
        router: RetentionRouter | None = None,
        metrics: CollectorMetrics | None = None,
        receipt_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.indexer = indexer
        self.gate = gate
        # The collector's checkpoint key signs receipts in OK acks (collector.receipts).
        self.receipt_key = receipt_key
        # Inline detection rules over the batch's documents once they are indexed
        # (collector.detect; never raises, so it cannot cost the batch its ack).
        self.detection = detection
        self.readiness = readiness
        self.prefix = prefix
        self.retention_class = retention_class
        # Without a router every event goes to `retention_class`.
        self.router = router or RetentionRouter([], retention_class)
        self.granularity = granularity
        self.clock_ns = clock_ns
        self.metrics = metrics
        # Format 2 re-deliveries that differ from the stored event (collector.forks).
        self.forks = ForkCheck(indexer.request, prefix)

    def process(self, batch: audit_pb2.Batch, *, identity: str, peer: str = "") -> audit_pb2.Ack:
        """Index `batch` for the certificate identity `identity`; never raises."""
        metrics = self.metrics
        if metrics is None:
            return self._process(batch, identity, peer)[0]
        metrics.batch_received(identity, event_count(batch))
        metrics.batches_in_flight.inc()
        try:
            ack, result = self._process(batch, identity, peer)
        finally:
            metrics.batches_in_flight.dec()
        status = {Ack.STATUS_OK: "ok", Ack.STATUS_RETRY: "retry"}.get(ack.status, "rejected")
        metrics.batch_answered(status, result)
        return ack

    def _process(
        self, batch: audit_pb2.Batch, identity: str, peer: str
    ) -> tuple[audit_pb2.Ack, IndexResult | None]:
        if batch.agent_id != identity:
            log.warning(
                "batch %d rejected: agent_id %r in the batch differs from the client "
                "certificate identity %r (peer %s)",
                batch.batch_id,
                batch.agent_id,
                identity,
                peer,
            )
            return Ack(
                batch_id=batch.batch_id,
                status=Ack.STATUS_REJECTED,
                detail=(
                    f"batch agent_id {batch.agent_id!r} does not match the client "
                    f"certificate identity {identity!r}"
                ),
            ), None
        verdict = self.gate.verify(batch, identity) if self.gate else None
        if verdict is not None:
            refusal = self._refusal(batch, verdict, identity, peer)
            if refusal is not None:
                return refusal, None
        if not event_count(batch) and not batch.HasField("seal"):
            return Ack(batch_id=batch.batch_id, status=Ack.STATUS_OK), None
        try:
            self.readiness.ensure()
            received = self.clock_ns()
            documents, unparsed, signed = self._documents(batch, verdict, identity, received)
            requests = index_requests(
                documents, identity, self.prefix, self.granularity, self.router
            )
            companions = (
                batch_writes(
                    requests,
                    signed,
                    prefix=self.prefix,
                    agent_id=identity,
                    received_unix_nano=received,
                )
                if signed
                else []
            )
            writes = [*requests, *companions, *unparsed]
            result = self.indexer.index(writes) if writes else IndexResult()
            forked: list[integrity.Finding] = []
            if batch.format_version == integrity.FORMAT_V2 and result.conflicts:
                fork_writes, forked = self.forks.forks(
                    result.conflicts, signed_bytes(requests, signed)
                )
                if fork_writes:
                    self.indexer.index(fork_writes)
            wait_turn()  # seal, chain head, alerts, detection: in the stream's batch order
            receipt = None
            if self.gate is not None and verdict is not None:
                findings = self.gate.after_indexing(
                    batch,
                    verdict,
                    identity=identity,
                    peer=peer,
                    indices=[r.index for r in requests],
                    last_doc=(requests[-1].index, requests[-1].doc_id) if requests else None,
                    now_unix_nano=received,
                    extra=forked,
                )
                receipt = receipt_for(
                    batch,
                    verdict,
                    findings,
                    agent_id=identity,
                    key=self.receipt_key,
                    received_unix_nano=received,
                )
            if self.detection is not None and requests:
                self.detection([(r.doc_id, r.document()) for r in requests])
        except LifecycleError as exc:
            log.warning(
                "batch %d from %s not indexed: collector not ready: %s",
                batch.batch_id,
                identity,
                exc,
            )
            return self._retry(batch, f"collector not ready: {exc}"), None
        except PermanentIndexingError as exc:
            log.error("batch %d from %s not indexed: %s", batch.batch_id, identity, exc)
            return self._retry(batch, str(exc)), None
        except IndexingError as exc:
            log.warning("batch %d from %s not indexed: %s", batch.batch_id, identity, exc)
            return self._retry(batch, str(exc)), None
        except Exception as exc:  # noqa: BLE001 - a bug must cost a resend, not the stream
            log.error(
                "batch %d from %s: internal error %s: %s",
                batch.batch_id,
                identity,
                type(exc).__name__,
                " ".join(str(exc).split()),
            )
            return self._retry(batch, f"internal error: {type(exc).__name__}"), None
        detail = f"{result.dead_lettered} dead-lettered" if result.dead_lettered else ""
        log.debug(
            "batch %d from %s: %d indexed, %d duplicates%s",
            batch.batch_id,
            identity,
            result.indexed,
            result.duplicates,
            f", {detail}" if detail else "",
        )
        return Ack(
            batch_id=batch.batch_id,
            status=Ack.STATUS_OK,
            indexed=result.indexed,
            duplicates=result.duplicates,
            detail=detail,
            receipt=receipt,
        ), result

    def _documents(
        self,
        batch: audit_pb2.Batch,
        verdict: integrity.BatchVerdict | None,
        identity: str,
        received: int,
    ) -> tuple[
        list[tuple[EventDocument | DocumentBytes, str]],
        list[IndexRequest],
        list[tuple[bytes, bytes]],
    ]:
        """(document, original line) per event in batch order, dead letters of format 2
        event bytes that do not parse, and per format 2 document its event's (bytes,
        hash), stored per batch (collector.formatv2)."""
        if batch.format_version == integrity.FORMAT_V2:
            v2 = documents_v2(
                batch,
                verdict
                if verdict is not None
                else integrity.verify_batch(batch, identity, {}, scanner=native.SCANNER),
                agent_id=identity,
                received_unix_nano=received,
                deadletter_index=deadletter_index(self.prefix),
            )
            return v2.events, v2.unparsed, v2.signed
        documents: list[tuple[EventDocument | DocumentBytes, str]] = []
        for position, event in enumerate(batch.events):
            doc = to_document(event, agent_id=identity, received_unix_nano=received)
            if verdict is not None:
                doc.source.setdefault("integrity", {}).update(
                    event_integrity_fields(
                        verdict.canonical[position],
                        verdict.hashes[position] if verdict.hashes else None,
                    )
                )
            documents.append((doc, event.original))
        return documents, [], []

    def _refusal(
        self,
        batch: audit_pb2.Batch,
        verdict: integrity.BatchVerdict,
        identity: str,
        peer: str,
    ) -> audit_pb2.Ack | None:
        """Ack STATUS_REJECTED for a seal of another identity, or a missing required seal."""
        kinds = {f.kind for f in verdict.findings}
        if integrity.AGENT_MISMATCH in kinds:
            detail = next(f.detail for f in verdict.findings if f.kind == integrity.AGENT_MISMATCH)
        elif integrity.UNSEALED in kinds and self.gate is not None and self.gate.require_seal:
            detail = "batch carries no seal and integrity.require_seal is set"
        else:
            return None
        log.warning(
            "batch %d from %s (peer %s) rejected: %s", batch.batch_id, identity, peer, detail
        )
        return Ack(batch_id=batch.batch_id, status=Ack.STATUS_REJECTED, detail=detail)

    @staticmethod
    def _retry(batch: audit_pb2.Batch, detail: str) -> audit_pb2.Ack:
        return Ack(batch_id=batch.batch_id, status=Ack.STATUS_RETRY, detail=detail[:1000])


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """CN of the verified client certificate, or None."""
    values: Any = context.auth_context().get("x509_common_name") or []
    first = next(iter(values), None)
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else None


class _Streams:
    """Open streams and whether each is processing a batch, for a graceful shutdown.

    Shutdown (`drain`) cancels the idle streams at once (they wait for a batch that
    has not been sent: nothing is lost) and lets busy ones finish their batch, send its
    Ack and close. `busy` and `drain` share a lock, so a stream is either marked busy
    before draining starts (and finishes) or sees the drain and answers STATUS_RETRY.
    """

    def __init__(self, max_per_agent: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._idle: dict[int, Any] = {}
        self._per_agent: dict[str, int] = {}
        self.max_per_agent = max_per_agent
        self.draining = False

    def open(self, context: Any, identity: str = "") -> bool:
        """Register a stream; False (not registered) when `identity` has too many."""
        with self._lock:
            if self._per_agent.get(identity, 0) >= self.max_per_agent:
                return False
            self._per_agent[identity] = self._per_agent.get(identity, 0) + 1
            self._idle[id(context)] = context
            return True

    def close(self, context: Any, identity: str = "") -> None:
        with self._lock:
            self._idle.pop(id(context), None)
            left = self._per_agent.get(identity, 0) - 1
            if left > 0:
                self._per_agent[identity] = left
            else:
                self._per_agent.pop(identity, None)

    def busy(self, context: Any) -> bool:
        """Mark the stream busy; False when draining (the batch must not start)."""
        with self._lock:
            self._idle.pop(id(context), None)
            return not self.draining

    def idle(self, context: Any) -> bool:
        """Mark the stream idle again; False when draining (the stream should end)."""
        with self._lock:
            if self.draining:
                return False
            self._idle[id(context)] = context
            return True

    def drain(self) -> int:
        """Start draining; cancel idle streams; return how many were cancelled."""
        with self._lock:
            self.draining = True
            idle = list(self._idle.values())
            self._idle.clear()
        for context in idle:
            context.cancel()
        return len(idle)


class Garbage:
    """A message on the Ship stream that is not a Batch (see `parse_batch`)."""

    def __init__(self, size: int, error: str) -> None:
        self.size = size
        self.error = error


def parse_batch(data: bytes) -> audit_pb2.Batch | Garbage:
    """The request deserializer: gRPC's own would abort the stream with a bare INTERNAL
    and a log line naming nobody; handing the failure to `Ship` lets it name the agent."""
    try:
        return audit_pb2.Batch.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        return Garbage(len(data), type(exc).__name__)


def add_service(service: CollectorService, server: grpc.Server) -> None:
    """Register `Collector.Ship` like the generated code does, with `parse_batch`."""
    handlers = {
        "Ship": grpc.stream_stream_rpc_method_handler(
            service.Ship,
            request_deserializer=parse_batch,
            response_serializer=audit_pb2.Ack.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("crm_audit.v1.Collector", handlers),)
    )


class CollectorService(audit_pb2_grpc.CollectorServicer):
    """`Collector.Ship`: an Ack per Batch, in order.

    A batch of more than `max_events_per_batch` events is refused (STATUS_REJECTED,
    detail starting with proto.limits.BATCH_TOO_LARGE) before anything is indexed, and
    the stream ends there, so the batches the agent pipelined behind it are not
    processed out of order: the agent splits the refused one and sends all again.
    """

    def __init__(
        self,
        processor: BatchProcessor,
        *,
        max_streams_per_agent: int = 1_000_000,
        max_events_per_batch: int = limits.MAX_BATCH_EVENTS,
        metrics: CollectorMetrics | None = None,
        pipeline_depth: int = PIPELINE_DEPTH,
    ) -> None:
        self.processor = processor
        self.streams = _Streams(max_streams_per_agent)
        self.max_events_per_batch = max_events_per_batch
        self.metrics = metrics
        self.pipeline_depth = pipeline_depth

    def _too_large(self, batch: audit_pb2.Batch, identity: str, peer: str) -> Ack | None:
        count = event_count(batch)
        if count <= self.max_events_per_batch:
            return None
        log.warning(
            "batch %d from agent %s (%s) refused: %d events, more than "
            "server.max_events_per_batch %d; the agent splits it",
            batch.batch_id,
            identity,
            peer,
            count,
            self.max_events_per_batch,
        )
        return Ack(
            batch_id=batch.batch_id,
            status=Ack.STATUS_REJECTED,
            detail=(
                f"{limits.BATCH_TOO_LARGE}: {count} events, this collector accepts at most "
                f"{self.max_events_per_batch} (server.max_events_per_batch); split it"
            ),
        )

    def Ship(
        self, request_iterator: Iterator[audit_pb2.Batch | Garbage], context: Any
    ) -> Iterator[audit_pb2.Ack]:
        identity = peer_identity(context)
        peer = context.peer()
        if identity is None:
            log.warning("stream from %s refused: client certificate has no common name", peer)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "client certificate has no CN")
            return
        if not self.streams.open(context, identity):
            log.warning(
                "stream from agent %s (%s) refused: it already has %d open "
                "(server.max_streams_per_agent)",
                identity,
                peer,
                self.streams.max_per_agent,
            )
            if self.metrics is not None:
                self.metrics.streams_refused.labels(reason="per_agent_limit").inc()
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"agent {identity} has {self.streams.max_per_agent} streams open already",
            )
            return
        log.info("stream opened: agent %s from %s", identity, peer)
        if self.metrics is not None:
            self.metrics.streams_open.inc()
        pipeline = self._pipeline(context, identity, peer)
        try:
            yield from pipeline.acks(request_iterator)
            stop = pipeline.stopped
            if stop is not None and isinstance(stop.reason, Garbage):
                garbage = stop.reason
                log.warning(
                    "stream from agent %s (%s) aborted: message %d of %d bytes is not a Batch (%s)",
                    identity,
                    peer,
                    pipeline.batches + 1,
                    garbage.size,
                    garbage.error,
                )
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message is not a Batch")
        except grpc.RpcError:
            pipeline.how = "cancelled"
        finally:
            self.streams.close(context, identity)
            if self.metrics is not None:
                self.metrics.streams_open.dec()
            log.info(
                "stream %s: agent %s from %s, %d batches",
                pipeline.how,
                identity,
                peer,
                pipeline.batches,
            )

    def _pipeline(self, context: Any, identity: str, peer: str) -> StreamPipeline:
        """Up to `pipeline_depth` batches of this stream in flight (collector.pipeline);
        a batch that arrives while the collector shuts down is answered STATUS_RETRY."""
        return StreamPipeline(
            lambda batch: self.processor.process(batch, identity=identity, peer=peer),
            depth=self.pipeline_depth,
            admit=lambda: self.streams.busy(context),
            settle=lambda: self.streams.idle(context),
            refuse=lambda batch: Ack(
                batch_id=batch.batch_id,
                status=Ack.STATUS_RETRY,
                detail="collector shutting down; send again",
            ),
            screen=lambda batch: self._screen(batch, identity, peer),
        )

    def _screen(self, batch: audit_pb2.Batch | Garbage, identity: str, peer: str) -> Stop | None:
        """What ends the stream before `batch` is processed: a message that is not a
        Batch (the stream is aborted, naming the agent), or a batch over
        `max_events_per_batch` (refused; the agent splits it and sends the rest again,
        so nothing behind it is processed out of order)."""
        if isinstance(batch, Garbage):
            return Stop("aborted: not a Batch message", reason=batch)
        refusal = self._too_large(batch, identity, peer)
        if refusal is not None:
            return Stop("ended: batch too large", ack=refusal)
        return None


class _VerifyOnly:
    """``opensearch.setup_on_start: false``: check what `setup` installed, change nothing.

    For a collector whose OpenSearch role may write events but not templates or
    policies: it is ready once a dry run of the installer finds nothing to do.
    """

    def __init__(self, dry: LifecycleInstaller) -> None:
        self.dry = dry

    def install(self) -> LifecycleReport:
        report = self.dry.install()
        if report.changed:
            todo = "; ".join(line for line in report.lines() if "would be" in line)
            raise LifecycleError(
                f"OpenSearch is not set up for this config ({todo}): run "
                "`crm-audit-collector setup -c FILE` with admin credentials"
            )
        return report


class CollectorServer:
    """The collector service bound to `config.listen` with mTLS."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        request: Requester | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        os_cfg = config.opensearch
        self.metrics = CollectorMetrics()
        if request is None:
            request = setup.requester(
                config, pool_maxsize=config.server.max_concurrent_streams + os_cfg.bulk_concurrency
            )
        self.request = request
        self.installer = setup.installer(config, request, dry_run=not os_cfg.setup_on_start)
        self.readiness = Readiness(
            self.installer if os_cfg.setup_on_start else _VerifyOnly(self.installer)
        )
        self.metrics.ready.set_function(lambda: 1.0 if self.readiness.ready else 0.0)
        indexer = BulkIndexer(
            request,
            deadletter_index=deadletter_index(os_cfg.index_prefix),
            max_docs=os_cfg.bulk_max_docs,
            max_bytes=os_cfg.bulk_max_bytes,
            max_retries=os_cfg.max_retries,
            backoff_s=os_cfg.retry_backoff_s,
            max_backoff_s=os_cfg.retry_max_backoff_s,
            concurrency=os_cfg.bulk_concurrency,
            # Full jitter on the upper half: several collectors do not retry in step.
            jitter=lambda delay: delay * random.uniform(0.5, 1.0),  # noqa: S311 - timing, not crypto
            observer=self.metrics,
        )
        self.indexer = indexer
        integ = config.integrity
        # The heads checkpoints sign: only those this collector verified itself.
        self.verified = VerifiedHeads()
        self.gate = IntegrityGate(
            request,
            indexer,
            KeyRing(integ.keys_dir),
            prefix=os_cfg.index_prefix,
            require_seal=integ.require_seal,
            verified=self.verified,
        )
        self.checkpoints: CheckpointWriter | None = None
        key_path = integ.checkpoint_key()
        collector_key: Ed25519PrivateKey | None = None
        if integ.checkpoint_dir is not None and key_path is not None:
            collector_key = load_or_create_key(key_path)
            checkpoint_file = CheckpointFile(integ.checkpoint_dir, collector_key)
            self.verified.seed(checkpoint_file.last_heads())
            self.checkpoints = CheckpointWriter(
                self.verified.snapshot,
                checkpoint_file,
                interval_s=integ.checkpoint_interval_s,
                clock_ns=clock_ns,
            )
        self.detection: Detection | None = None
        if config.detection.rules is not None:
            self.detection = Detection(
                load_rules(config.detection.rules),
                config.detection,
                request,
                os_cfg.index_prefix,
                prepare=self.readiness.ensure,
                clock_ns=clock_ns,
                replicas=os_cfg.replicas,
            )
        # Retention by event time where the cluster has no ISM (collector.retention_job).
        self.retention = RetentionRunner(
            build_job(config, request, clock_ns=clock_ns, observer=self.metrics),
            interval_s=config.retention.interval_s,
            dry_run=config.retention.dry_run,
        )
        self.service = CollectorService(
            BatchProcessor(
                indexer,
                self.readiness,
                prefix=os_cfg.index_prefix,
                retention_class=config.retention.default_class,
                granularity=config.retention.granularity,
                clock_ns=clock_ns,
                gate=self.gate,
                detection=self.detection.on_indexed if self.detection else None,
                router=RetentionRouter.from_config(config.retention),
                metrics=self.metrics,
                receipt_key=collector_key,
            ),
            max_streams_per_agent=config.server.max_streams_per_agent,
            max_events_per_batch=config.server.max_events_per_batch,
            metrics=self.metrics,
        )
        self.health: HealthServer | None = None
        if config.metrics.listen is not None:
            self.health = HealthServer(
                config.metrics.listen,
                HealthCheck(
                    request,
                    lambda: self.readiness.ready,
                    check_interval_s=config.metrics.health_check_interval_s,
                ),
                self.metrics.registry,
            )
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.port = 0

    def start(self) -> int:
        """Install templates (failure is not fatal), bind, start; return the bound port."""
        if self.health is not None:
            self.health.start()
        try:
            self.readiness.ensure()
        except LifecycleError as exc:
            log.error("OpenSearch setup failed, batches get STATUS_RETRY until it works: %s", exc)
        tls = self.config.tls
        try:
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.ca.read_bytes(),
                require_client_auth=True,
            )
        except OSError as exc:
            raise StartupError(f"cannot read TLS files: {exc}") from None
        limits = self.config.server
        # A sync server holds one thread per open stream.
        self._executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent_streams, thread_name_prefix="collector-ship"
        )
        server = grpc.server(
            self._executor,
            maximum_concurrent_rpcs=limits.max_concurrent_streams,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_service(self.service, server)
        try:
            port = server.add_secure_port(self.config.listen, credentials)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {self.config.listen}: {exc}") from None
        if port == 0:
            raise StartupError(f"cannot listen on {self.config.listen}")
        server.start()
        if self.checkpoints is not None:
            self.checkpoints.start()
        if self.detection is not None:
            self.detection.start()
        self.retention.start()
        self._server = server
        self.port = port
        log.info(
            "collector listening on %s (port %d, mTLS, max %d streams), indexing into %s",
            self.config.listen,
            port,
            limits.max_concurrent_streams,
            ", ".join(redact_url(url) for url in self.config.opensearch.all_urls),
        )
        log.info("%s", native.DESCRIPTION)
        return port

    def serving(self) -> bool:
        """True while the gRPC server runs (what the systemd watchdog pings vouch for)."""
        server = self._server
        # wait_for_termination returns True when it timed out, i.e. still running.
        return server is not None and bool(server.wait_for_termination(timeout=0))

    def stop(self, grace_s: float = 30.0) -> None:
        """Refuse new streams, let in-flight batches finish (up to `grace_s`), close."""
        server = self._server
        if server is None:
            return
        self._server = None
        stopped = server.stop(grace_s)  # new RPCs refused; the rest aborted after grace
        idle = self.service.streams.drain()
        log.info(
            "shutting down: %d idle streams closed, waiting up to %.0fs for in-flight batches",
            idle,
            grace_s,
        )
        if not stopped.wait(grace_s + 5):
            log.warning("shutdown: handlers still running after %.0fs", grace_s)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self.indexer.close()
        if self.checkpoints is not None:
            self.checkpoints.stop()  # a last checkpoint with the final heads
        if self.detection is not None:
            self.detection.stop()  # pending notifications sent, leases released
        self.retention.stop()
        if self.health is not None:
            self.health.stop()
        log.info("collector stopped")


__all__ = [
    "BatchProcessor",
    "CollectorServer",
    "CollectorService",
    "Readiness",
    "peer_identity",
]
