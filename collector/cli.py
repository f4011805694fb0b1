"""`crm-audit-collector`: run the collector service, check its config, set up OpenSearch,
manage legal holds.

    crm-audit-collector check -c collector.yaml   # validate; "OK" and exit 0, else exit 2
    crm-audit-collector check -c collector.yaml --print
                                                  # ... and print the effective config
                                                  # (defaults filled in, secrets masked)
    crm-audit-collector run -c collector.yaml     # serve until SIGTERM/SIGINT, exit 0
    crm-audit-collector setup -c collector.yaml [--dry-run]
                                                  # install/upgrade templates + policies
        [--dashboards URL [--dashboards-user U --dashboards-password-file F]
         [--dashboards-ca PEM] [--dashboards-file NDJSON]]
                                                  # ... and import the Dashboards objects
    crm-audit-collector hold place --class C --from YYYY.MM --to YYYY.MM --reason TEXT -c F
    crm-audit-collector hold release --id ID --reason TEXT -c F
    crm-audit-collector hold list -c F
    crm-audit-collector retention status -c F     # per class: indices, event times, phase,
                                                  # next action and when, holds
    crm-audit-collector retention run [--dry-run] -c F
                                                  # one run of the retention job now

Every problem is one line on stderr; config problems read
``collector.yaml:LINE: key.path: message`` and exit with code 2. This is the only
collector module that reads the environment (``OPENSEARCH_URL`` overrides
``opensearch.url`` / ``urls``: one URL, or several comma-separated; ``${NAME}`` in
collector.yaml is resolved from it).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from collector.config import CollectorConfig, load_config_and_secrets, with_opensearch_url
from collector.errors import CollectorError, ConfigError, HoldError, RetentionError
from collector.extras import missing_extra
from proto.sdnotify import Notifier
from proto.yamlconfig import KeyPath, dump_effective

if TYPE_CHECKING:
    from collector.hold import HoldManager
    from collector.retention_job.job import BatchesStatus

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


def _load_with_secrets(path: Path) -> tuple[CollectorConfig, frozenset[KeyPath]]:
    config, secrets = load_config_and_secrets(path, os.environ)
    url = os.environ.get("OPENSEARCH_URL")
    if url:
        config = with_opensearch_url(config, url)
    return config, secrets


def _load(path: Path) -> CollectorConfig:
    return _load_with_secrets(path)[0]


def _check(path: Path, show: bool) -> int:
    config, secrets = _load_with_secrets(path)
    if show:
        # Secrets (substituted values, password/token/key fields) are masked: this
        # output ends up in tickets and chat.
        print(f"# effective config of {path} (defaults filled in, secrets masked)")
        print(dump_effective(config, secrets), end="")
        return 0
    print(f"{path}: OK")
    return 0


def _run(path: Path) -> int:
    from collector.gctune import tune_for_serving
    from collector.server import CollectorServer  # grpc import only when serving

    config = _load(path)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # Python's default for SIGHUP is to die; a stray `kill -HUP` (or a reload
        # habit) must not take the collector down mid-batch.
        log.warning("received SIGHUP: the collector does not reload its config; restart it")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    notifier = Notifier.from_env(os.environ, os.getpid())
    server = CollectorServer(config)
    server.start()
    tune_for_serving()
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


def _dashboards_file(given: Path | None) -> Path:
    if given is not None:
        return given
    # Installed (scripts/install.sh): PREFIX/share/crm-audit; from a checkout: config/.
    candidates = [
        Path(sys.prefix) / "share" / "crm-audit" / "dashboards" / "crm-audit.ndjson",
        Path(__file__).resolve().parents[1] / "config" / "dashboards" / "crm-audit.ndjson",
    ]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _import_dashboards(args: argparse.Namespace, config: CollectorConfig) -> None:
    from collector import dashboards

    source = _dashboards_file(args.dashboards_file)
    try:
        ndjson = source.read_bytes()
        password = None
        if args.dashboards_password_file is not None:
            lines = args.dashboards_password_file.read_text(encoding="utf-8").splitlines()
            password = lines[0].strip() if lines else ""
    except OSError as exc:
        raise ConfigError([f"{exc.filename}: cannot read: {exc.strerror}"]) from None
    prefix = config.opensearch.index_prefix
    ndjson = dashboards.with_prefix(ndjson, prefix)
    patterns = ", ".join(dashboards.index_pattern_titles(ndjson))
    if args.dry_run:
        print(f"dashboards: would import {source} into {args.dashboards} ({patterns})")
        return
    result = dashboards.import_saved_objects(
        args.dashboards,
        ndjson,
        username=args.dashboards_user,
        password=password,
        ca_file=args.dashboards_ca,
    )
    print(f"dashboards: {result.success_count} saved objects imported ({patterns})")


def _setup(args: argparse.Namespace) -> int:
    from collector import setup

    config = _load(args.config)
    dry_run = args.dry_run
    report = setup.installer(config, setup.requester(config), dry_run=dry_run).install()
    for line in report.lines():
        print(line)
    if args.dashboards is not None:
        _import_dashboards(args, config)
    if dry_run:
        print("dry run: nothing changed" if not report.changed else "dry run: changes above")
    return 0


def _dashboards_url(value: str) -> str:
    from collector.dashboards import check_url

    try:
        return check_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _holds(config: CollectorConfig) -> HoldManager:
    from collector import setup
    from collector.hold import HoldManager

    return HoldManager(
        setup.requester(config),
        prefix=config.opensearch.index_prefix,
        classes=sorted(config.retention.classes),
        clock_ns=time.time_ns,
        replicas=config.opensearch.replicas,
    )


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _hold(args: argparse.Namespace) -> int:
    config = _load(args.config)
    holds = _holds(config)
    if args.hold_command == "place":
        hold = holds.place(
            args.retention_class, args.first, args.last, args.reason, _actor(args.by)
        )
        print(f"hold {hold.id} placed on {len(hold.indices)} indices")
        for index in hold.indices:
            print(f"  {index}")
        if not hold.indices:
            print("  (no index of that class and range exists yet)")
        return 0
    if args.hold_command == "release":
        hold, freed = holds.release(args.id, args.reason, _actor(args.by))
        print(f"hold {hold.id} released; {len(freed)} indices back under their policy")
        for index in freed:
            print(f"  {index}")
        return 0
    for hold in holds.holds():
        print(
            f"{hold.id}\t{hold.status}\t{hold.retention_class}\t{hold.first}..{hold.last}\t"
            f"{len(hold.indices)} indices\tby {hold.placed_by} at {hold.placed_at}\t{hold.reason}"
        )
    return 0


def _when(unix_nano: int | None) -> str:
    from collector.documents import iso_nanos

    return "-" if unix_nano is None else iso_nanos(unix_nano)[:19] + "Z"


def _retention(args: argparse.Namespace) -> int:
    from collector import setup
    from collector.retention_job.runner import build_job, collector_id

    config = _load(args.config)
    job = build_job(
        config, setup.requester(config), clock_ns=time.time_ns, holder=collector_id("cli")
    )
    enforcer = job.enforcer()
    how = (
        f"retention.enforcer {config.retention.enforcer}"
        if config.retention.enforcer != "auto"
        else "auto: " + ("ISM on every node" if enforcer == "ism" else "no ISM plugin")
    )
    if args.retention_command == "run":
        if enforcer == "off":
            print(
                f"{PROG}: {args.config}: retention.enforcer is off: this config does not run "
                "the retention job (use the retention job's own config, with enforcer auto)",
                file=sys.stderr,
            )
            return 2
        report = job.run(dry_run=args.dry_run)
        print(f"enforcer: {enforcer} ({how}){' - dry run' if args.dry_run else ''}")
        if report.skipped:
            print(f"skipped: {report.skipped}", file=sys.stderr)
            return 1
        for line in report.actions:
            print(line)
        for line in report.kept:
            print(f"kept: {line}")
        for line in report.errors:
            print(f"error: {line}", file=sys.stderr)
        if not (report.actions or report.kept or report.errors):
            print("nothing due")
        return 1 if report.errors else 0
    print(f"enforcer: {enforcer} ({how})")
    if enforcer == "ism":
        print("ISM applies the phases by index creation age; the columns below are by event time")
    for row in job.status():
        policy = row.policy
        minimum = f", minimum {policy.minimum_days:g}d" if policy.minimum_days else ""
        print(
            f"class {policy.name}: {policy.source}: {policy.phases.describe()}{minimum}; "
            f"{len(row.indices)} indices, oldest event {_when(row.oldest_ns)}"
        )
        print("  index\tdocs\toldest event\tnewest event\tphase\tnext action\twhen\tholds")
        for i in row.indices:
            nxt = i.next_action or "none"
            when = _when(i.next_at_ns) + (" (due)" if i.due else "")
            if i.blocked:
                when += f" [{i.blocked}]"
            print(
                f"  {i.name}\t{i.documents}\t{_when(i.oldest_ns)}\t{_when(i.newest_ns)}\t"
                f"{i.phase}\t{nxt}\t{when}\t{', '.join(i.holds) or '-'}"
            )
            if i.batches is not None:  # follows the line above: same phase and action
                print(f"    + {i.batches.name}\t{i.batches.documents} batch documents")
        _print_orphans(row.orphans)
    return 0


def _print_orphans(orphans: list[BatchesStatus]) -> None:
    """Batches indices whose events index is gone: deleted by their period."""
    if orphans:
        print("  batches index without its events index\tdocs\tnext action\twhen\tholds")
    for o in orphans:
        when = _when(o.delete_at_ns) + (" (due)" if o.due else "")
        if o.blocked:
            when += f" [{o.blocked}]"
        nxt = "delete" if o.delete_at_ns is not None else "none"
        print(f"  {o.name}\t{o.documents}\t{nxt}\t{when}\t{', '.join(o.holds) or '-'}")


def _month(value: str) -> str:
    from collector.hold import check_month

    try:
        return check_month(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        if name == "check":
            cmd.add_argument(
                "--print",
                dest="show",
                action="store_true",
                help="print the effective config as YAML (defaults filled in, secrets masked)",
            )
    cmd = sub.add_parser(
        "setup", help="install or upgrade index templates and ISM policies; print what changed"
    )
    cmd.add_argument("-c", "--config", required=True, type=Path, help="collector.yaml")
    cmd.add_argument("--dry-run", action="store_true", help="only say what would change")
    cmd.add_argument(
        "--dashboards",
        metavar="URL",
        type=_dashboards_url,
        help="also import the saved objects into OpenSearch Dashboards at URL "
        "(index patterns renamed for opensearch.index_prefix)",
    )
    cmd.add_argument("--dashboards-user", help="Dashboards basic-auth user")
    cmd.add_argument(
        "--dashboards-password-file", type=Path, help="file whose first line is its password"
    )
    cmd.add_argument(
        "--dashboards-ca", type=Path, help="PEM CA bundle of Dashboards' HTTPS certificate"
    )
    cmd.add_argument(
        "--dashboards-file",
        type=Path,
        help="NDJSON to import (default: the crm-audit.ndjson shipped with crm-audit)",
    )
    hold = sub.add_parser("hold", help="legal holds: place, release, list")
    hold_sub = hold.add_subparsers(dest="hold_command", required=True, parser_class=_Parser)
    place = hold_sub.add_parser("place", help="put a class's indices of a month range on hold")
    place.add_argument("--class", dest="retention_class", required=True, help="retention class")
    place.add_argument("--from", dest="first", required=True, type=_month, help="YYYY.MM")
    place.add_argument("--to", dest="last", required=True, type=_month, help="YYYY.MM")
    release = hold_sub.add_parser("release", help="release a hold (see hold list)")
    release.add_argument("--id", required=True, help="hold id")
    for cmd in (place, release):
        cmd.add_argument("--reason", required=True, help="why (recorded with the hold)")
        cmd.add_argument("--by", help="who (default: the login name)")
    listing = hold_sub.add_parser("list", help="show holds")
    for cmd in (place, release, listing):
        cmd.add_argument("-c", "--config", required=True, type=Path, help="collector.yaml")
    retention = sub.add_parser("retention", help="retention job: status, run now")
    ret_sub = retention.add_subparsers(
        dest="retention_command", required=True, parser_class=_Parser
    )
    status = ret_sub.add_parser(
        "status", help="per class: indices, event times, phase, next action, holds"
    )
    run_now = ret_sub.add_parser("run", help="run the retention job once now (under its lease)")
    run_now.add_argument(
        "--dry-run", action="store_true", help="only say what would be made read-only or deleted"
    )
    for cmd in (status, run_now):
        cmd.add_argument("-c", "--config", required=True, type=Path, help="collector.yaml")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "check":
            return _check(args.config, args.show)
        if args.command == "setup":
            return _setup(args)
        if args.command == "hold":
            return _hold(args)
        if args.command == "retention":
            return _retention(args)
        return _run(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except HoldError as exc:
        print(f"{PROG}: hold: {exc}", file=sys.stderr)
        return exc.exit_code
    except RetentionError as exc:
        print(f"{PROG}: retention: {exc}", file=sys.stderr)
        return exc.exit_code
    except CollectorError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"{PROG}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
