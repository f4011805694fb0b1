"""`crm-audit-agent run|check|key|parse -c agent.yaml` — the only module touching the environment.

- `run`: the agent (under systemd: READY=1 once running, WATCHDOG=1 while healthy,
  STOPPING=1 on SIGTERM — proto.sdnotify);
- `check`: validate the config;
- `key`: create the signing key if needed, print the public key file and key id (for
  `crm-audit keys register KEYS_DIR AGENT_ID PUBFILE` on the collector side);
- `parse [--source NAME] [FILE...]`: print what the parsers make of the files (ships
  nothing, writes no state).

Exit codes: 0 success (including a clean SIGTERM/SIGINT shutdown), 1 runtime failure
(unusable checkpoint, internal error), 2 user mistake (bad arguments or config), with
one line per problem on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from types import FrameType

from agent.config import AgentConfig, load_config
from agent.errors import AgentError, CheckpointError, ConfigError
from agent.integrity import PUBLIC_KEY_FILE, AgentKey
from agent.parse_command import run_parse
from proto.sdnotify import Notifier

log = logging.getLogger("agent")

STALL_FLOOR_S = 10.0  # well above the read loop's longest idle wait (agent.pipeline)


class OneLineFormatter(logging.Formatter):
    """Every record on one line: newlines in messages and tracebacks are folded."""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-audit-agent", description="Tail CRM audit logs and ship them to the collector."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the agent"),
        ("check", "validate the config and exit"),
        ("key", "create the signing key if needed; print its public key file and key id"),
        ("parse", "print the events the configured parsers make of log files; ship nothing"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("-c", "--config", required=True, type=Path, help="agent YAML config")
        sub.add_argument(
            "--log-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="default INFO",
        )
        if name == "parse":
            sub.add_argument(
                "--source", help="the source whose settings apply (default: every source)"
            )
            sub.add_argument(
                "files",
                nargs="*",
                type=Path,
                help="files to parse (default: the files the source's paths match now)",
            )
    return parser


def _environment_problems(config: AgentConfig) -> list[str]:
    """Checks beyond the file itself: can the state directory be used?"""
    state = config.state_dir
    probe = state if state.exists() else next((p for p in state.parents if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK | os.X_OK):
        return [f"state_dir: cannot create or write {state}"]
    return []


def _version() -> str:
    try:
        return metadata.version("crm-audit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if args.command == "parse":
        # Reads only the files: no state directory, no collector.
        return run_parse(config, args.source, args.files, sys.stdout)
    problems = _environment_problems(config)
    if problems:
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(
            f"{args.config}: ok (agent {config.agent_id}, {len(config.sources)} sources, "
            f"collectors {', '.join(config.collector.all_endpoints)})"
        )
        return 0
    if args.command == "key":
        return _key(config)
    return _run(config)


def _key(config: AgentConfig) -> int:
    try:
        key = AgentKey.load_or_create(config.state_dir)
    except AgentError as exc:
        print(f"crm-audit-agent: {exc}", file=sys.stderr)
        return 1
    public = config.state_dir / PUBLIC_KEY_FILE
    print(f"public key: {public}")
    print(f"key id: {key.key_id}")
    print(
        f"register it on the collector: crm-audit keys register KEYS_DIR {config.agent_id} {public}"
    )
    return 0


def _run(config: AgentConfig) -> int:
    # grpc's C core logs (e.g. each failed TLS handshake) in its own multi-field format;
    # we log the reason ourselves, one line. Must be set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from agent.runtime import Agent, Clock

    stop = threading.Event()
    notifier = Notifier.from_env(os.environ, os.getpid())

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        notifier.stopping()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(
        config,
        clock=Clock(wall_ns=time.time_ns, monotonic=time.monotonic),
        hostname=socket.gethostname(),
        version=_version(),
    )
    watchdog_s = notifier.watchdog_interval_s
    unhealthy = False

    def tick() -> None:
        nonlocal unhealthy
        assert watchdog_s is not None
        # The read loop goes round at least every second or so; one stuck for the whole
        # watchdog period (twice the ping interval, at least STALL_FLOOR_S) is hung: stop
        # pinging, let systemd restart the agent. A dead thread stops the pings at once.
        if agent.healthy(stall_s=max(2 * watchdog_s, STALL_FLOOR_S)):
            if unhealthy:
                log.info("agent threads healthy again; watchdog pings resumed")
            unhealthy = False
            notifier.watchdog()
        elif not unhealthy:
            unhealthy = True
            log.error("an agent thread died or hangs; watchdog pings stopped")

    def ready() -> None:
        notifier.ready(f"shipping to {', '.join(config.collector.all_endpoints)}")
        if watchdog_s is not None:
            tick()

    try:
        agent.run(
            stop,
            on_ready=ready,
            on_tick=tick if watchdog_s is not None else None,
            tick_s=watchdog_s if watchdog_s is not None else 1.0,
        )
    except CheckpointError as exc:
        print(f"crm-audit-agent: {exc}", file=sys.stderr)
        return 1
    except AgentError as exc:
        log.critical("%s", exc)
        return 1
    except OSError as exc:
        print(f"crm-audit-agent: {exc}", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
