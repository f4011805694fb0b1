"""A collector that acks without indexing: isolates the agent from OpenSearch.

Implements `Collector.Ship` over real mTLS (the same certificates as the collector):
every batch is answered at once with STATUS_OK. It counts distinct event sequence
numbers, so a re-sent batch is not counted twice, and records when a target is reached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from proto.v1 import audit_pb2, audit_pb2_grpc


class NullCollector(audit_pb2_grpc.CollectorServicer):
    """gRPC servicer + server on 127.0.0.1:`port` (0: any free port)."""

    def __init__(self, *, ca: Path, cert: Path, key: Path) -> None:
        self._credentials = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=ca.read_bytes(),
            require_client_auth=True,
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sequences: set[int] = set()
        self.batches = 0
        self.port = 0
        self._server: grpc.Server | None = None
        # (time.monotonic(), distinct events) per batch, for the steady-state rate
        self.samples: list[tuple[float, int]] = []

    # -- servicer

    def Ship(
        self, request_iterator: Iterator[audit_pb2.Batch], context: Any
    ) -> Iterator[audit_pb2.Ack]:
        for batch in request_iterator:
            numbers = _sequences(batch)
            with self._lock:
                self._sequences.update(numbers)
                self.batches += 1
                self.samples.append((time.monotonic(), len(self._sequences)))
                self._changed.notify_all()
            yield audit_pb2.Ack(
                batch_id=batch.batch_id,
                status=audit_pb2.Ack.STATUS_OK,
                indexed=len(numbers),
            )

    # -- server

    def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port); the port."""
        server = grpc.server(
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="null-collector"),
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        audit_pb2_grpc.add_CollectorServicer_to_server(self, server)
        self.port = server.add_secure_port(f"127.0.0.1:{port}", self._credentials)
        server.start()
        self._server = server
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=1.0).wait(10)
            self._server = None

    # -- observations

    @property
    def events(self) -> int:
        with self._lock:
            return len(self._sequences)

    def reset(self) -> None:
        with self._lock:
            self._sequences.clear()
            self.samples.clear()
            self.batches = 0

    def wait_for(self, target: int, timeout: float) -> float | None:
        """Block until `target` distinct events were acked; the monotonic time, or None."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._sequences) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(min(remaining, 0.5))
            return self.samples[-1][0] if self.samples else time.monotonic()


def _sequences(batch: audit_pb2.Batch) -> list[int]:
    """The sequence numbers a batch carries: format 1 events, or format 2 event bytes
    (decoded, as a collector would parse them; a heartbeat carries none)."""
    if batch.events:
        return [event.sequence for event in batch.events]
    return [audit_pb2.AuditEvent.FromString(raw).sequence for raw in batch.event_bytes]
