"""collector.index.make_client over several nodes, against real loopback HTTP servers:
a node that refuses connections is skipped at once, a node that answers (even 5xx) is
not set aside, and with every node away the caller sees "unreachable"."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collector.index import STATUS_UNREACHABLE, OpenSearchHttp, make_client
from collector.urls import redact_url
from tests.helpers import free_port


class Node:
    """A stand-in OpenSearch node answering every GET with `status`, counting requests."""

    def __init__(self, status: int = 200, port: int = 0, hang: bool = False) -> None:
        self.status = status
        self.requests = 0
        self.hang = threading.Event() if hang else None  # set: stop hanging
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls it by this name
                node.requests += 1
                if node.hang is not None:
                    node.hang.wait(30)  # a frozen node: the connection is open, no answer
                body = json.dumps({"status": node.status}).encode()
                self.send_response(node.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.hang is not None:
            self.hang.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    for node in made:
        node.close()


def test_a_node_refusing_connections_is_skipped(
    nodes: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    live = Node()
    nodes.append(live)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for order in ([dead, live.url], [live.url, dead]):
        live.requests = 0
        caplog.clear()
        http = OpenSearchHttp(make_client(order, timeout_s=5))
        with caplog.at_level(logging.INFO, logger="collector.index"):
            answers = [http("GET", "/").status for _ in range(10)]
        # the request that met the stopped node went on to the live one at once
        assert answers == [200] * 10
        assert live.requests == 10
        # set aside once, said once (not per request)
        assert [r.getMessage() for r in caplog.records if r.name == "collector.index"] == [
            f"OpenSearch node {dead} does not answer: using the other nodes, trying it "
            "again in 60 s"
        ]


def test_a_node_not_answering_in_time_is_skipped(
    nodes: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    hung, healthy = Node(hang=True), Node()
    nodes.extend([hung, healthy])
    http = OpenSearchHttp(make_client([hung.url, healthy.url], timeout_s=0.5))
    with caplog.at_level(logging.WARNING, logger="collector.index"):
        answers = [http("GET", "/").status for _ in range(6)]
    # the request the hung node held went on to the healthy one after the timeout, and
    # the hung node got no further request
    assert answers == [200] * 6
    assert (hung.requests, healthy.requests) == (1, 6)
    assert f"OpenSearch node {hung.url} does not answer" in caplog.text


def test_a_node_set_aside_is_used_again_once_it_answers(
    nodes: list[Node], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = free_port(), free_port()
    http = OpenSearchHttp(
        make_client([f"http://127.0.0.1:{first}", f"http://127.0.0.1:{second}"], timeout_s=5)
    )
    assert http("GET", "/").status == STATUS_UNREACHABLE  # both set aside
    nodes.append(Node(port=first))
    with caplog.at_level(logging.INFO, logger="collector.index"):
        # no node is left: the pool takes the set-aside ones back before their time
        assert http("GET", "/").status == 200
    assert f"OpenSearch node http://127.0.0.1:{first} answers again" in caplog.messages


def test_a_node_answering_5xx_is_not_set_aside(nodes: list[Node]) -> None:
    failing, healthy = Node(503), Node(200)
    nodes.extend([failing, healthy])
    http = OpenSearchHttp(make_client([failing.url, healthy.url], timeout_s=5))
    answers = [http("GET", "/").status for _ in range(10)]
    # round robin over both: each 503 reached the caller (whose retry policy decides),
    # and the node kept getting its share instead of being marked dead after the first
    assert answers.count(503) == failing.requests >= 2
    assert answers.count(200) == healthy.requests == 10 - failing.requests


def test_every_node_away_is_unreachable() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    response = OpenSearchHttp(make_client(urls, timeout_s=5))("GET", "/")
    assert response.status == STATUS_UNREACHABLE


def test_redact_url() -> None:
    assert redact_url("https://admin:s3cret@os:9200") == "https://os:9200"
    assert redact_url("http://os:9200") == "http://os:9200"
