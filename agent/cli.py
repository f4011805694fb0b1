"""`crm-audit-agent run|check -c agent.yaml` — the only module touching the environment.

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

log = logging.getLogger("agent")


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
    for name, text in (("run", "run the agent"), ("check", "validate the config and exit")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("-c", "--config", required=True, type=Path, help="agent YAML config")
        sub.add_argument(
            "--log-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="default INFO",
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
    return _run(config)


def _run(config: AgentConfig) -> int:
    # grpc's C core logs (e.g. each failed TLS handshake) in its own multi-field format;
    # we log the reason ourselves, one line. Must be set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from agent.runtime import Agent, Clock

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(
        config,
        clock=Clock(wall_ns=time.time_ns, monotonic=time.monotonic),
        hostname=socket.gethostname(),
        version=_version(),
    )
    try:
        agent.run(stop)
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
