"""A tiny plain-HTTP GET endpoint in a daemon thread, for metrics and health checks.

Both programs expose one (agent: /metrics; collector: /healthz and /metrics). Routes map
a path to a function returning (status, body, content type); anything else is 404.
Requests are not logged: a scrape every few seconds would flood the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Response = tuple[int, bytes, str]
Route = Callable[[], Response]

_NOT_FOUND: Response = (404, b"not found\n", "text/plain; charset=utf-8")


def split_listen(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" (IPv6 as "[addr]:PORT") → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HttpEndpoint:
    """Serves GET `routes` on `listen` until `stop()`."""

    def __init__(self, listen: str, routes: Mapping[str, Route], thread_name: str) -> None:
        self.listen = listen
        self.routes = dict(routes)
        self.thread_name = thread_name
        self.host, _ = split_listen(listen)
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port. OSError when it cannot bind."""
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, body, ctype = route() if route is not None else _NOT_FOUND
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(split_listen(self.listen), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
