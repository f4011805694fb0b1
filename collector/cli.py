"""`crm-audit-collector`: run the collector service or check its config.

    crm-audit-collector check -c collector.yaml   # validate; "OK" and exit 0, else exit 2
    crm-audit-collector run -c collector.yaml     # serve until SIGTERM/SIGINT, exit 0

Every problem is one line on stderr; config problems read
``collector.yaml:LINE: key.path: message`` and exit with code 2. This is the only
collector module that reads the environment (``OPENSEARCH_URL`` overrides
``opensearch.url``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from collector.config import CollectorConfig, load_config, with_opensearch_url
from collector.errors import CollectorError, ConfigError
from proto.sdnotify import Notifier

PROG = "crm-audit-collector"
SHUTDOWN_GRACE_S = 30.0

log = logging.getLogger("collector")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not usage + message.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class OneLineFormatter(logging.Formatter):
    """Log records (including exception text) always on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(part.strip() for part in super().format(record).splitlines() if part)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs each failed connection attempt with a traceback-like text at WARNING.
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _load(path: Path) -> CollectorConfig:
    config = load_config(path)
    url = os.environ.get("OPENSEARCH_URL")
    if url:
        config = with_opensearch_url(config, url)
    return config


def _check(path: Path) -> int:
    _load(path)
    print(f"{path}: OK")
    return 0


def _run(path: Path) -> int:
    from collector.server import CollectorServer  # grpc import only when serving

    config = _load(path)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = Notifier.from_env(os.environ, os.getpid())
    server = CollectorServer(config)
    server.start()
    notifier.ready(f"listening on {config.listen}")
    # Feed the systemd watchdog only while the gRPC server still serves: if it died,
    # systemd notices the silence and restarts the unit (Restart=on-failure).
    tick = min(1.0, notifier.watchdog_interval_s or 1.0)
    try:
        while not stop.wait(tick):
            if server.serving():
                notifier.watchdog()
    finally:
        notifier.stopping()
        server.stop(SHUTDOWN_GRACE_S)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="crm-audit collector (mTLS gRPC -> OpenSearch)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log threshold (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (
        ("run", "serve until SIGTERM/SIGINT"),
        ("check", "validate the config file and exit"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("-c", "--config", required=True, type=Path, help="collector.yaml")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "check":
            return _check(args.config)
        return _run(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except CollectorError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
