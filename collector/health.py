"""The collector's health and metrics endpoint (``metrics.listen``; off by default).

    GET /healthz   200 "ok" only when setup is done (templates/policies installed) and
                   OpenSearch answered within the last check; 503 with the reason else
    GET /metrics   Prometheus text format (collector.metrics)

OpenSearch is probed (``GET /``) at most every ``check_interval_s``, so a scraper polling
/healthz often does not add load to the cluster. Plain HTTP: bind it to loopback or a
management network (it shows agent names, nothing else).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.errors import StartupError
from collector.index import Requester

log = logging.getLogger(__name__)


class HealthCheck:
    """Ready = setup done and OpenSearch reachable (cached for `check_interval_s`)."""

    def __init__(
        self,
        request: Requester,
        setup_done: Callable[[], bool],
        *,
        check_interval_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request = request
        self.setup_done = setup_done
        self.check_interval_s = check_interval_s
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._last: tuple[float, str | None] | None = None

    def _opensearch_problem(self) -> str | None:
        with self._lock:
            now = self.monotonic()
            if self._last is not None and now - self._last[0] < self.check_interval_s:
                return self._last[1]
            response = self.request("GET", "/")
            problem = None if response.status == 200 else f"OpenSearch: HTTP {response.status}"
            if response.status == 0:
                problem = "OpenSearch unreachable"
            self._last = (now, problem)
            return problem

    def problem(self) -> str | None:
        """None when healthy, else one line saying why not."""
        if not self.setup_done():
            return "setup not done (templates/policies not installed yet)"
        return self._opensearch_problem()


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HealthServer:
    """Serves /healthz and /metrics on `listen` in a daemon thread."""

    def __init__(self, listen: str, check: HealthCheck, registry: CollectorRegistry) -> None:
        self.listen = listen
        self.check = check
        self.registry = registry
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        check, registry = self.check, self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    problem = check.problem()
                    status, body = (
                        (200, b"ok\n") if problem is None else (503, f"{problem}\n".encode())
                    )
                    ctype = "text/plain; charset=utf-8"
                elif path == "/metrics":
                    status, body, ctype = 200, generate_latest(registry), CONTENT_TYPE_LATEST
                else:
                    status, body, ctype = 404, b"not found\n", "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds would flood the log

        host, port = _split(self.listen)
        try:
            httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {self.listen} (metrics): {exc.strerror}"
            ) from None
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="collector-health", daemon=True
        )
        self._thread.start()
        log.info("health and metrics on http://%s:%d (/healthz, /metrics)", host, self.port)
        return self.port

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
