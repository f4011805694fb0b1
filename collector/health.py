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

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from collector.errors import StartupError
from collector.index import Requester
from proto.httpendpoint import HttpEndpoint, Response

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


class HealthServer(HttpEndpoint):
    """Serves /healthz and /metrics on `listen` in a daemon thread."""

    def __init__(self, listen: str, check: HealthCheck, registry: CollectorRegistry) -> None:
        def healthz() -> Response:
            problem = check.problem()
            body = b"ok\n" if problem is None else f"{problem}\n".encode()
            return (200 if problem is None else 503), body, "text/plain; charset=utf-8"

        super().__init__(
            listen,
            {
                "/healthz": healthz,
                "/metrics": lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST),
            },
            "collector-health",
        )

    def start(self) -> int:
        try:
            port = super().start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {self.listen} (metrics): {exc.strerror}"
            ) from None
        log.info("health and metrics on http://%s:%d (/healthz, /metrics)", self.host, port)
        return port
