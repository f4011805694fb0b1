"""The agent against a real gRPC server over real mTLS (in-test fake collector)."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent import Agent, AgentConfig, Clock
from agent.checkpoint import CheckpointStore
from agent.config import CollectorConfig
from agent.ship import open_channel
from proto.v1 import audit_pb2 as pb
from tests.agent.certs import Pki, make_pki
from tests.agent.fake_collector import FakeCollector, Server, events

AGENT_ID = "crm-host-1"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", AGENT_ID)


def make_config(tmp_path: Path, pki: Pki, port: int, **batch: Any) -> AgentConfig:
    data = {
        "agent_id": AGENT_ID,
        "state_dir": "state",
        "collector": {
            "endpoint": f"127.0.0.1:{port}",
            "server_name": "localhost",
            "tls": {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)},
            "max_in_flight": 2,
            "retry": {"initial_s": 0.05, "max_s": 0.2},
        },
        "batch": {"max_events": 3, "max_wait_s": 0.2, **batch},
        "sources": [
            {
                "name": "crm_app",
                "format": "jsonlines",
                "paths": ["logs/*.jsonl"],
                "poll_interval_s": 0.05,
            }
        ],
    }
    return AgentConfig.model_validate(data, context={"config_dir": tmp_path})


def write_lines(path: Path, count: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        for i in range(start, start + count):
            out.write(json.dumps({"timestamp": 1772356500 + i, "event": "login", "n": i}) + "\n")


@contextmanager
def running(
    config: AgentConfig, channel_factory: Callable[[str], grpc.Channel] | None = None
) -> Iterator[Agent]:
    agent = Agent(
        config,
        clock=Clock(time.time_ns, time.monotonic),
        hostname="test-host",
        version="test",
        rng=random.Random(1),
        shutdown_grace_s=2.0,
        channel_factory=channel_factory,
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            agent.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "agent did not stop"
    assert not errors, errors


def all_sequences(collector: FakeCollector) -> list[int]:
    return [s for batch in collector.sequences() for s in batch]


def test_ships_over_mtls_and_checkpoints_after_ok(tmp_path: Path, pki: Pki) -> None:
    collector = FakeCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 7)
        with running(config) as agent:
            collector.wait_for(lambda: sum(len(events(b)) for b in collector.received) >= 7)
            store = agent.store
            # Saved after each OK ack; wait for the last one to land.
            deadline = time.monotonic() + 30
            while store.load().next_sequence != 8 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert all_sequences(collector) == [1, 2, 3, 4, 5, 6, 7]
    assert set(collector.peers) == {AGENT_ID}  # the identity is the client certificate CN
    first = collector.received[0]
    assert first.agent_id == AGENT_ID
    event = events(first)[0]
    assert event.observer.agent_id == AGENT_ID and event.observer.hostname == "test-host"
    assert event.log.file_path == str(tmp_path / "logs" / "a.jsonl")
    assert event.log.offset == 0 and event.log.source_name == "crm_app"
    assert event.log.format == "jsonlines" and event.observed_unix_nano > 0
    assert event.action == "login" and event.attributes["n"] == "0"
    checkpoint = CheckpointStore(config.state_dir).load()
    assert checkpoint.next_sequence == 8
    (position,) = checkpoint.files.values()
    assert position.offset == (tmp_path / "logs" / "a.jsonl").stat().st_size


def test_restart_resumes_without_resending(tmp_path: Path, pki: Pki) -> None:
    collector = FakeCollector()
    log_file = tmp_path / "logs" / "a.jsonl"
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(log_file, 4)
        with running(config):
            collector.wait_for(lambda: len(all_sequences(collector)) >= 4)
        write_lines(log_file, 2, start=4)
        with running(config):
            collector.wait_for(lambda: len(all_sequences(collector)) >= 6)
    assert all_sequences(collector) == [1, 2, 3, 4, 5, 6]
    assert CheckpointStore(config.state_dir).load().next_sequence == 7


def test_retry_resends_same_sequences_and_checkpoint_waits_for_ok(tmp_path: Path, pki: Pki) -> None:
    store = CheckpointStore(tmp_path / "state")
    seen_at_retry: list[int] = []

    def retry_first(_batch: pb.Batch, index: int) -> pb.Ack.Status.ValueType:
        if index == 0:
            seen_at_retry.append(store.load().next_sequence)
            return pb.Ack.STATUS_RETRY
        return pb.Ack.STATUS_OK

    collector = FakeCollector(retry_first)
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 3)  # exactly one batch
        with running(config):
            collector.wait_for(lambda: len(collector.received) >= 2)
            deadline = time.monotonic() + 30
            while store.load().next_sequence != 4 and time.monotonic() < deadline:
                time.sleep(0.05)
    first, second = collector.received[:2]
    assert [e.sequence for e in events(first)] == [1, 2, 3]
    assert [e.sequence for e in events(second)] == [1, 2, 3]
    assert [e.original for e in events(first)] == [e.original for e in events(second)]
    # Resent byte for byte: the same stored event bytes under the same seal.
    assert first.event_bytes == second.event_bytes and first.seal == second.seal
    assert seen_at_retry == [1]  # nothing checkpointed while the batch was unacked
    assert store.load().next_sequence == 4


def test_rejected_batch_is_logged_and_kept(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    def reject_twice(_batch: pb.Batch, index: int) -> pb.Ack.Status.ValueType:
        return pb.Ack.STATUS_REJECTED if index < 2 else pb.Ack.STATUS_OK

    collector = FakeCollector(reject_twice)
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 2)
        with running(config):
            collector.wait_for(lambda: len(collector.received) >= 3)
    assert collector.sequences()[:3] == [[1, 2], [1, 2], [1, 2]]
    rejected = [r for r in caplog.records if "REJECTED" in r.getMessage()]
    assert rejected and all(r.levelno == logging.ERROR for r in rejected)
    assert "scripted" in rejected[0].getMessage()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def counting(config: AgentConfig, calls: list[int]) -> Callable[[str], grpc.Channel]:
    def factory(endpoint: str) -> grpc.Channel:
        calls.append(1)
        return open_channel(config.collector, endpoint)

    return factory


def test_nothing_listening_is_logged_and_retried(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, pki, free_port())
    write_lines(tmp_path / "logs" / "a.jsonl", 2)
    calls: list[int] = []
    with running(config, counting(config, calls)):
        deadline = time.monotonic() + 30
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(calls) >= 3  # kept retrying
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.ship"]
    assert messages and messages[0].startswith(
        f"cannot ship to {config.collector.all_endpoints[0]}: UNAVAILABLE"
    )
    assert len(messages) < len(calls)  # rate limited: the same reason is not logged each time
    assert not CheckpointStore(config.state_dir).path.exists()


def test_wrong_ca_is_logged_and_retried(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_pki(tmp_path / "other-pki", AGENT_ID)
    collector = FakeCollector()
    with Server(collector, other) as server:  # the server's CA is not the one we trust
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 2)
        calls: list[int] = []
        with running(config, counting(config, calls)):
            deadline = time.monotonic() + 30
            while len(calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert len(calls) >= 2
    assert collector.received == []
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.ship"]
    assert messages and "UNAVAILABLE" in messages[0]
    print(messages[0])


def test_fails_over_to_the_next_endpoint(tmp_path: Path, pki: Pki) -> None:
    collector = FakeCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        collector_config = config.collector.model_dump()
        collector_config.pop("endpoint")
        collector_config["endpoints"] = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{server.port}"]
        config = config.model_copy(
            update={"collector": CollectorConfig.model_validate(collector_config)}
        )
        write_lines(tmp_path / "logs" / "a.jsonl", 4)
        tried: list[str] = []

        def factory(endpoint: str) -> grpc.Channel:
            tried.append(endpoint)
            return open_channel(config.collector, endpoint)

        with running(config, factory):
            collector.wait_for(lambda: len(all_sequences(collector)) >= 4)
    assert all_sequences(collector) == [1, 2, 3, 4]
    assert tried[:2] == list(config.collector.all_endpoints)


def test_endpoint_and_endpoints_are_exclusive(tmp_path: Path, pki: Pki) -> None:
    config = make_config(tmp_path, pki, 4317)
    data = config.collector.model_dump()
    data["endpoints"] = ["127.0.0.1:4318"]
    with pytest.raises(ValueError, match="either endpoint or endpoints"):
        CollectorConfig.model_validate(data)
    data.pop("endpoint")
    data.pop("endpoints")
    with pytest.raises(ValueError, match="set endpoints"):
        CollectorConfig.model_validate(data)
