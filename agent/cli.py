"""`crm-audit-agent run|check|key|parse|status|receipts -c agent.yaml` — the only module touching
the environment.

- `run`: the agent (under systemd: READY=1 once running, WATCHDOG=1 while healthy,
  STOPPING=1 on SIGTERM — proto.sdnotify). SIGHUP re-reads the config: an invalid one
  is rejected (every problem logged, one line each) and the agent runs on unchanged;
  a valid one is applied (agent.runtime.Agent.reload; logging settings too);
- `check [--print]`: validate the config; `--print` also prints the effective config
  (defaults filled in, secrets and ${...}-substituted values masked);
- `key`: create the signing key if needed, print the public key file and key id (for
  `crm-audit keys register KEYS_DIR AGENT_ID PUBFILE` on the collector side);
- `parse [--source NAME] [--strict] [FILE...]`: print what the parsers make of the
  files and, per source, what did not map (ships nothing, writes no state, needs no
  TLS files); `--strict` exits 1 when anything did not map;
- `status [--format text|json]`: per file offset vs size, spool depth, sequences and
  last ack, stream id and acked head, read from state_dir (agent.status); the agent
  need not run;
- `receipts [--out DIR]`: the collector's signed receipts kept in state_dir
  (agent.receipts), as JSON lines on stdout or into `DIR/<agent_id>.receipts.jsonl`
  (docs/receipts.md), for `crm-audit verify --receipts DIR`.

Logging: `--log-format text|json` and `--log-level` override `logging.format|level`.

Exit codes: 0 success (including a clean SIGTERM/SIGINT shutdown), 1 runtime failure
(unusable checkpoint, internal error), 2 user mistake (bad arguments or config), with
one line per problem on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import json
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

from agent import footprint, logs
from agent.config import AgentConfig, load_config, load_config_and_secrets
from agent.errors import AgentError, CheckpointError, ConfigError
from agent.parse_command import run_parse
from agent.sealing import PUBLIC_KEY_FILE, AgentKey
from proto import yamlconfig
from proto.sdnotify import Notifier

log = logging.getLogger("agent")

STALL_FLOOR_S = 10.0  # well above the read loop's longest idle wait (agent.pipeline)
TICK_S = 0.5  # main loop: SIGHUP is acted on within this
LIVE_TIMEOUT_S = 1.0  # `status` asking a running agent's metrics endpoint


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
        ("status", "per file offset vs size, spool depth and last ack, from state_dir"),
        ("receipts", "export the collector's signed receipts kept in state_dir"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("-c", "--config", required=True, type=Path, help="agent YAML config")
        sub.add_argument(
            "--log-level",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="default: logging.level of the config, else INFO",
        )
        sub.add_argument(
            "--log-format",
            choices=["text", "json"],
            help="default: logging.format of the config, else text",
        )
        if name == "status":
            sub.add_argument("--format", choices=["text", "json"], default="text")
        if name == "receipts":
            sub.add_argument(
                "--out",
                type=Path,
                help="write DIR/<agent_id>.receipts.jsonl (default: JSON lines on stdout)",
            )
        if name == "check":
            sub.add_argument(
                "--print",
                action="store_true",
                help="print the effective config (defaults filled in, secrets masked)",
            )
        if name == "parse":
            sub.add_argument(
                "--source", help="the source whose settings apply (default: every source)"
            )
            sub.add_argument(
                "--strict",
                action="store_true",
                help="exit 1 when any event has a mapping error or an unknown action, "
                "or any record key was left unmapped",
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
    logs.setup(args.log_format or "text", args.log_level or "INFO")
    try:
        # `parse` sends nothing: the TLS files need not exist on this host.
        config, secret_paths = load_config_and_secrets(
            args.config, os.environ, tls_files=args.command != "parse"
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    _apply_logging(args, config)
    if args.command == "parse":
        # Reads only the files: no state directory, no collector.
        return run_parse(config, args.source, args.files, sys.stdout, strict=args.strict)
    if args.command == "status":
        return _status(config, args.format)
    if args.command == "receipts":
        return _receipts(config, args.out)
    problems = _environment_problems(config)
    if problems:
        for problem in problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    if args.command == "check":
        if args.print:
            sys.stdout.write(yamlconfig.dump_effective(config, secret_paths))
        print(
            f"{args.config}: ok (agent {config.agent_id}, {len(config.sources)} sources, "
            f"collectors {', '.join(config.collector.all_endpoints)})"
        )
        return 0
    if args.command == "key":
        return _key(config)
    return _run(config, args)


def _apply_logging(args: argparse.Namespace, config: AgentConfig) -> None:
    logs.setup(args.log_format or config.logging.format, args.log_level or config.logging.level)


def _fetch(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=LIVE_TIMEOUT_S) as response:  # noqa: S310 - http URL built from metrics.listen
            body: bytes = response.read()
            return body.decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None  # not running, or not answering: the state on disk is the answer


def _status(config: AgentConfig, fmt: str) -> int:
    from agent.status import collect, render_text

    try:
        status = collect(config, now=time.time(), fetch=_fetch)
    except CheckpointError as exc:
        print(f"crm-audit-agent: {exc}", file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(render_text(status))
    return 0


def _receipts(config: AgentConfig, out: Path | None) -> int:
    from agent.receipts import ReceiptStore, export

    store = ReceiptStore(config.state_dir)
    if out is None:
        for line in store.lines():
            print(line)
        return 0
    try:
        target, count = export(store, out, config.agent_id)
    except OSError as exc:
        print(
            f"crm-audit-agent: cannot write receipts to {out}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    print(f"{count} receipts written to {target}")
    return 0


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


def _run(config: AgentConfig, args: argparse.Namespace) -> int:
    # grpc's C core logs (e.g. each failed TLS handshake) in its own multi-field format;
    # we log the reason ourselves, one line. Must be set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    footprint.limit_malloc_arenas()  # before any thread (ours or grpc's) allocates
    from agent.runtime import Agent, Clock

    stop = threading.Event()
    notifier = Notifier.from_env(os.environ, os.getpid())

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        notifier.stopping()
        stop.set()

    hup = threading.Event()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        hup.set()  # acted on by the main loop (tick), not inside the handler

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    agent = Agent(
        config,
        clock=Clock(wall_ns=time.time_ns, monotonic=time.monotonic),
        hostname=socket.gethostname(),
        version=_version(),
    )
    watchdog_s = notifier.watchdog_interval_s
    unhealthy = False

    def reload() -> None:
        log.info("SIGHUP: reloading %s", args.config)
        try:
            new = load_config(args.config, os.environ)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload rejected: %s", problem)
            log.error(
                "config reload rejected (%d problems); still running with the previous config",
                len(exc.problems),
            )
            agent.metrics.config_reloads.labels(result="rejected").inc()
            return
        try:
            lines = agent.reload(new)
        except Exception as exc:  # noqa: BLE001 - a reload must never stop the agent
            log.error("config reload failed (%r); still running with the previous config", exc)
            agent.metrics.config_reloads.labels(result="rejected").inc()
            return
        _apply_logging(args, new)
        for line in lines:
            (log.warning if "restart" in line else log.info)("%s", line)
        agent.metrics.config_reloads.labels(result="applied").inc()

    def tick() -> None:
        if hup.is_set():
            hup.clear()
            reload()
        if watchdog_s is not None:
            ping()

    def ping() -> None:
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
        footprint.settle_after_startup()
        notifier.ready(f"shipping to {', '.join(config.collector.all_endpoints)}")
        if watchdog_s is not None:
            ping()

    try:
        agent.run(
            stop,
            on_ready=ready,
            on_tick=tick,
            tick_s=min(watchdog_s, TICK_S) if watchdog_s is not None else TICK_S,
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
