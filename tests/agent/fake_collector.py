"""A small in-test collector: a real gRPC server with mTLS that acks by a script."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.agent.certs import Pki

Decide = Callable[[pb.Batch, int], "pb.Ack.Status.ValueType"]


def always_ok(_batch: pb.Batch, _index: int) -> pb.Ack.Status.ValueType:
    return pb.Ack.STATUS_OK


def events(batch: pb.Batch) -> list[pb.AuditEvent]:
    """The events of a batch as objects, whatever its format (2: `event_bytes`)."""
    return list(batch.events) + [pb.AuditEvent.FromString(d) for d in batch.event_bytes]


class FakeCollector(pb_grpc.CollectorServicer):
    """Records every batch received (with the peer's certificate CN) and acks in order."""

    def __init__(self, decide: Decide = always_ok) -> None:
        self.decide = decide
        self.received: list[pb.Batch] = []
        self.peers: list[str] = []
        self.cond = threading.Condition()

    def Ship(self, request_iterator: Iterator[pb.Batch], context: Any) -> Iterator[pb.Ack]:
        cn = context.auth_context().get("x509_common_name", [b""])[0].decode()
        for batch in request_iterator:
            with self.cond:
                index = len(self.received)
                copy = pb.Batch()
                copy.CopyFrom(batch)
                self.received.append(copy)
                self.peers.append(cn)
                status = self.decide(copy, index)
                self.cond.notify_all()
            yield pb.Ack(
                batch_id=batch.batch_id,
                status=status,
                detail="" if status == pb.Ack.STATUS_OK else f"scripted {status}",
                indexed=len(batch.events) + len(batch.event_bytes),
            )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "condition not reached"

    def sequences(self) -> list[list[int]]:
        with self.cond:
            return [[e.sequence for e in events(b)] for b in self.received]


class Server:
    """Context manager: serve `servicer` on 127.0.0.1 with mTLS, stop on exit."""

    def __init__(self, servicer: FakeCollector, pki: Pki, max_message_bytes: int = 0) -> None:
        self.servicer = servicer
        options = (
            [("grpc.max_receive_message_length", max_message_bytes)] if max_message_bytes else []
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        pb_grpc.add_CollectorServicer_to_server(servicer, self._server)
        credentials = grpc.ssl_server_credentials(
            [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
            root_certificates=pki.ca.read_bytes(),
            require_client_auth=True,
        )
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)

    def __enter__(self) -> Server:
        self._server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop(grace=None).wait()
