"""`crm-audit`: the admin tool (PKI, embedded OpenSearch node, sample audit traffic).

    crm-audit pki init DIR [--san NAME ...] [--days N]
    crm-audit pki agent DIR NAME [--days N]
    crm-audit opensearch fetch|start|stop|status [--home DIR] [--port N] [--timeout S]
                     [--version V ...] [--plugin NAME ...]
    crm-audit sample --out FILE [--count N] [--seed S] [--start ISO8601] [--rate-per-sec X]
    crm-audit keys register KEYS_DIR AGENT_ID PUBFILE | keys list KEYS_DIR
    crm-audit verify --keys DIR [--opensearch URL[,URL...]] [AUTH] [--prefix P]
                     [--agent ID ...] [--from ISO8601] [--to ISO8601] [--checkpoints DIR]
                     [--checkpoint-key PUB] [--state FILE] [--retention-days N] [--grace SECONDS]
                     [--receipts DIR] [--jobs N] [--format text|json]
    crm-audit rules check --rules FILE [--opensearch URL[,URL...] [AUTH] [--prefix P]
                     [--days N] [--strict]]
    crm-audit rules test --rules FILE [--opensearch URL[,URL...]] [AUTH] [--prefix P]
                     --from ISO8601 [--to ISO8601] [--rule ID ...] [--format text|json]
    crm-audit rules backfill --rules FILE [--opensearch URL[,URL...]] [AUTH] [--prefix P]
                     --from ISO8601 [--to ISO8601] [--rule ID ...]
    crm-audit report --from DATE --to DATE --out FILE.html [--opensearch URL[,URL...]]
                     [AUTH] [--prefix P] [--keys DIR] [--checkpoints DIR] [--checkpoint-key PUB]
                     [--signing-key PEM] [--policies DIR] [--min-retention-days N]
                     [--silence-gap DURATION] [--max-rows N]
    crm-audit report-verify FILE --key PUB

AUTH, for a cluster with the security plugin: ``--ca PEM`` (the CA of its HTTPS
certificate; verification is always on), ``--user NAME --password-file FILE`` (basic
auth, e.g. an analyst mapped to the read-only ``crm_audit_analyst`` role) and/or
``--client-cert PEM --client-key PEM``.

`rules test` is a dry run: it shows what each enabled rule would raise over a past range
(with suppression) and writes nothing. `rules backfill` evaluates the same range against
the alerts already stored and writes the new ones (``alert.origin: backfill``; no
notifications or response hooks: the incidents are past); a second run, or a range the
live collectors already covered, writes nothing new. `rules check --opensearch` also
warns about rules naming a field or an action no event of the last ``--days`` (7) has
(exit 0; 1 with ``--strict``). A rules file problem reads
``rules.yaml:LINE: rules.3.window: message`` (exit 2).

`report` writes the compliance evidence pack (one self-contained HTML file, see
`collector.report`) and exits 0 once it is written, whatever it found; `report-verify`
exits 0 only when the file's digests and signature check out, 1 otherwise.

`verify` exits 0 only when everything checked is VALID (or PENDING), 1 when it found anything, 2 on
usage errors (and 1 when OpenSearch cannot be read). Each stream of an agent is verified
on its own; a second stream (an agent restarted without its state) is the finding
AGENT_RESTARTED: exit 1 even when both streams are VALID.

A user's mistake is one line on stderr, ``crm-audit: <message>``, and exit code 2.
This is the only module of the admin tool that reads the environment and the clock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from collector.admin import opensearch_node, pki, sample
from collector.admin.errors import AdminError, NodeError, SampleError, UsageError
from collector.errors import RetentionError
from collector.extras import missing_extra
from collector.keys import KeyRegistrationError, KeyRing, read_keys, register_key
from collector.urls import redact_url
from proto import integrity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from collector.detect.rules import RuleSet
    from collector.index import ClientAuth, Requester
    from collector.retention_job.records import RetentionRecords

PROG = "crm-audit"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become `UsageError` (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(PROG).strip() or 'usage'}: {message}".strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text}")
    return value


def _timestamp(text: str) -> dt.datetime:
    try:
        return sample.parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-27T09:00:00Z)"
        ) from None


def _add_opensearch_options(cmd: argparse.ArgumentParser) -> None:
    """--opensearch URL and how to authenticate to it (security plugin)."""
    cmd.add_argument(
        "--opensearch",
        metavar="URL[,URL...]",
        help="one node, or several of the cluster comma-separated; default: $OPENSEARCH_URL",
    )
    cmd.add_argument(
        "--ca", type=Path, metavar="PEM", help="CA bundle of the cluster's HTTPS certificate"
    )
    cmd.add_argument("--user", metavar="NAME", help="basic-auth user (with --password-file)")
    cmd.add_argument(
        "--password-file", type=Path, metavar="FILE", help="file whose first line is the password"
    )
    cmd.add_argument(
        "--client-cert", type=Path, metavar="PEM", help="TLS client certificate (with --client-key)"
    )
    cmd.add_argument("--client-key", type=Path, metavar="PEM", help="its private key")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="crm-audit admin tool")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pki_parser = commands.add_parser("pki", help="certificates for agent/collector mTLS")
    pki_commands = pki_parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = pki_commands.add_parser("init", help="create a CA and the collector certificate")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP of the collector (repeatable); localhost, 127.0.0.1, ::1 "
        "are always included",
    )
    init.add_argument("--days", type=_positive_int, default=pki.DEFAULT_CA_DAYS)
    agent = pki_commands.add_parser("agent", help="issue an agent client certificate")
    agent.add_argument("dir", type=Path, metavar="DIR")
    agent.add_argument("name", metavar="NAME", help="agent identity (certificate CN)")
    agent.add_argument("--days", type=_positive_int, default=pki.DEFAULT_CERT_DAYS)

    node = commands.add_parser("opensearch", help="embedded single-node OpenSearch")
    node.add_argument("action", choices=("fetch", "start", "stop", "status"))
    node.add_argument("--home", type=Path, help="node directory (default depends on the user)")
    node.add_argument("--port", type=_port, default=opensearch_node.DEFAULT_PORT)
    node.add_argument("--timeout", type=_positive_int, default=120, help="start timeout, s")
    node.add_argument(
        "--version",
        action="append",
        metavar="V",
        help="fetch: this OpenSearch version (repeatable, newest first; default: the 2.19 "
        "line this project runs on)",
    )
    node.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="fetch: also this plugin of the same version, required (e.g. opensearch-security)",
    )

    gen = commands.add_parser("sample", help="write sample CRM audit traffic as JSON lines")
    gen.add_argument("--out", required=True, metavar="FILE", help="output file ('-': stdout)")
    gen.add_argument("--count", type=_count, default=1000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument(
        "--start", type=_timestamp, default=None, help="first timestamp (default: now)"
    )
    gen.add_argument("--rate-per-sec", type=_rate, default=sample.DEFAULT_RATE)
    gen.add_argument("--append", action="store_true", help="append instead of overwrite")
    gen.add_argument(
        "--no-suspicious", action="store_true", help="ordinary traffic only, no attack patterns"
    )

    keys = commands.add_parser("keys", help="agent signing keys known to the collector")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    reg = keys_commands.add_parser(
        "register", help="register an agent's public key (its state_dir/signing-key.pub)"
    )
    reg.add_argument("keys_dir", type=Path, metavar="KEYS_DIR")
    reg.add_argument("agent_id", metavar="AGENT_ID", help="the agent's certificate CN")
    reg.add_argument("pubfile", type=Path, metavar="PUBFILE")
    lst = keys_commands.add_parser("list", help="list registered keys")
    lst.add_argument("keys_dir", type=Path, metavar="KEYS_DIR")

    ver = commands.add_parser(
        "verify",
        help="verify the stored audit trail (tamper evidence)",
        description="Exit 0 only when every stream is VALID or PENDING; 1 for any finding "
        "(a range verdict, MISSING_STREAM, AGENT_RESTARTED — an agent that started a new "
        "stream without its state, both streams judged on their own —, CHECKPOINT_*, "
        "RECEIPT_AHEAD, CHAIN_HEAD_ALTERED) or when OpenSearch cannot be read; 2 for usage "
        "errors.",
    )
    _add_opensearch_options(ver)
    ver.add_argument("--prefix", default="crm-audit", help="index prefix (default crm-audit)")
    ver.add_argument("--keys", type=Path, metavar="DIR", help="agents' public keys (required)")
    ver.add_argument("--agent", action="append", default=[], metavar="ID", help="repeatable")
    ver.add_argument("--from", dest="time_from", type=_timestamp, metavar="ISO8601")
    ver.add_argument("--to", dest="time_to", type=_timestamp, metavar="ISO8601")
    ver.add_argument("--checkpoints", type=Path, metavar="DIR")
    ver.add_argument(
        "--checkpoint-key",
        type=Path,
        metavar="PUB",
        help="collector public key (default: KEYS_DIR/collector.pub; never a *.pub of the "
        "checkpoint dir)",
    )
    ver.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="remember what the checkpoints attested; a later run seeing less is a finding",
    )
    ver.add_argument(
        "--retention-days",
        type=_rate,
        metavar="DAYS",
        help="retention in force: format 1, a deleted index younger than this is MISSING, "
        "not EXPIRED; format 2, absent events whose seal's signed event time is older are "
        "EXPIRED (younger: MISSING, whatever unsigned fields say)",
    )
    ver.add_argument(
        "--grace",
        type=_non_negative,
        default=120.0,
        metavar="SECONDS",
        help="unsealed events after the last seal ingested this recently are PENDING, "
        "not INSERTED (default 120; 0: none)",
    )
    ver.add_argument(
        "--receipts",
        type=Path,
        metavar="DIR",
        help="receipts exported by agents (*.jsonl): a stream they attest beyond what "
        "OpenSearch holds is TAIL_TRUNCATED, beyond the checkpoints RECEIPT_AHEAD",
    )
    ver.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="streams (and ranges of a large format 2 stream) verified in parallel, each "
        "in a process of its own (default: one per CPU, at most 4)",
    )
    ver.add_argument("--format", choices=("text", "json"), default="text")

    rules = commands.add_parser("rules", help="detection rules: validate, dry-run")
    rules_commands = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    rchk = rules_commands.add_parser(
        "check", help="validate a rules file (with --opensearch: against recent events)"
    )
    rchk.add_argument("--rules", type=Path, required=True, metavar="FILE")
    _add_opensearch_options(rchk)
    rchk.add_argument("--prefix", default="crm-audit", help="index prefix (default crm-audit)")
    rchk.add_argument(
        "--days",
        type=_positive_int,
        default=7,
        help="with --opensearch: look for each field and action in this many days (default 7)",
    )
    rchk.add_argument("--strict", action="store_true", help="exit 1 when there is any warning")
    rtest = rules_commands.add_parser(
        "test", help="show what each rule would fire on over a past range (writes nothing)"
    )
    rtest.add_argument("--rules", type=Path, required=True, metavar="FILE")
    _add_opensearch_options(rtest)
    rtest.add_argument("--prefix", default="crm-audit", help="index prefix (default crm-audit)")
    rtest.add_argument("--from", dest="time_from", type=_timestamp, required=True)
    rtest.add_argument("--to", dest="time_to", type=_timestamp, help="default: now")
    rtest.add_argument("--rule", action="append", default=[], metavar="ID", help="repeatable")
    rtest.add_argument("--format", choices=("text", "json"), default="text")
    rback = rules_commands.add_parser(
        "backfill", help="write the alerts of a past range (idempotent, marked backfill)"
    )
    rback.add_argument("--rules", type=Path, required=True, metavar="FILE")
    _add_opensearch_options(rback)
    rback.add_argument("--prefix", default="crm-audit", help="index prefix (default crm-audit)")
    rback.add_argument("--from", dest="time_from", type=_timestamp, required=True)
    rback.add_argument("--to", dest="time_to", type=_timestamp, help="default: now")
    rback.add_argument("--rule", action="append", default=[], metavar="ID", help="repeatable")

    rep = commands.add_parser(
        "report", help="compliance evidence pack for a period (self-contained HTML)"
    )
    _add_opensearch_options(rep)
    rep.add_argument("--prefix", default="crm-audit", help="index prefix (default crm-audit)")
    rep.add_argument("--from", dest="time_from", required=True, metavar="DATE")
    rep.add_argument(
        "--to", dest="time_to", required=True, metavar="DATE", help="a date includes that day"
    )
    rep.add_argument("--out", type=Path, required=True, metavar="FILE.html")
    rep.add_argument("--keys", type=Path, metavar="DIR", help="agents' public keys (to verify)")
    rep.add_argument("--checkpoints", type=Path, metavar="DIR")
    rep.add_argument("--checkpoint-key", type=Path, metavar="PUB")
    rep.add_argument(
        "--signing-key",
        type=Path,
        metavar="PEM",
        help="collector Ed25519 key that signs the report (collector-signing-key.pem)",
    )
    rep.add_argument("--policies", type=Path, metavar="DIR", help="ISM policy files ism-CLASS.json")
    rep.add_argument(
        "--min-retention-days",
        type=_rate,
        default=2190.0,
        metavar="DAYS",
        help="regulatory minimum retention (default 2190 = 6 years, SEC 17a-4)",
    )
    rep.add_argument(
        "--silence-gap",
        default="15m",
        metavar="DURATION",
        help="a source silent longer than this is reported (default 15m)",
    )
    rep.add_argument("--max-rows", type=_positive_int, default=1000, metavar="N")
    repv = commands.add_parser("report-verify", help="check a report's digests and signature")
    repv.add_argument("file", type=Path, metavar="FILE")
    repv.add_argument("--key", type=Path, required=True, metavar="PUB", help="collector key")
    return parser


def _say(message: str) -> None:
    print(message, flush=True)


def _log(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _cmd_pki(args: argparse.Namespace) -> int:
    if args.pki_command == "init":
        layout = pki.init_ca(args.dir, sans=args.san, days=args.days)
        _say(f"CA:        {layout.ca_cert}")
        _say(f"collector: {layout.collector_cert} (key {layout.collector_key})")
        return 0
    issued = pki.issue_agent(args.dir, args.name, days=args.days)
    _say(f"agent {args.name}: {issued.cert} (key {issued.key})")
    return 0


def _cmd_opensearch(args: argparse.Namespace) -> int:
    external = os.environ.get("OPENSEARCH_URL")
    if external:
        # several nodes' URLs comma-separated: the cluster is described through the first
        nodes = [url.strip() for url in external.split(",") if url.strip()] or [external]
        shown = ", ".join(redact_url(url) for url in nodes)
        if args.action != "status":
            _say(f"OPENSEARCH_URL is set: using the cluster at {shown}; nothing to {args.action}")
            return 0
        return _status_lines(shown, nodes[0], pid=None)

    node = opensearch_node.EmbeddedOpenSearch.from_env(
        os.environ, os.geteuid(), home=args.home, port=args.port, log=_log
    )
    if args.action == "fetch":
        # Download only (make test / make demo call this first so a missing Maven or
        # network problem shows up before any test starts).
        downloads = opensearch_node.fetch_distribution(
            node.cache_dir,
            args.version or node.versions,
            log=_log,
            extra_plugins=args.plugin,
        )
        plugins = "".join(f" + {name}" for name, _ in downloads.extras)
        _say(f"OpenSearch {downloads.version}{plugins} cached in {node.cache_dir}")
        return 0
    pid = node.running_pid()
    if pid is not None:
        node.port = node.recorded_port() or node.port
    if args.action == "start":
        if pid is not None:
            _say(f"OpenSearch already running at {node.url} (pid {pid}, home {node.home})")
            return 0
        node.start(timeout=args.timeout)
        _say(f"OpenSearch running at {node.url} (pid {node.running_pid()}, home {node.home})")
        return 0
    if args.action == "stop":
        if node.stop():
            _say(f"OpenSearch stopped (pid {pid}, home {node.home})")
        else:
            _say(f"OpenSearch not running (home {node.home})")
        return 0
    if pid is None:
        _say(f"OpenSearch not running (home {node.home})")
        return 1
    return _status_lines(node.url, node.url, pid=pid)


def _status_lines(shown: str, url: str, *, pid: int | None) -> int:
    _say(f"url: {shown}")
    if pid is not None:
        _say(f"pid: {pid}")
    try:
        for line in opensearch_node.describe(url):
            _say(line)
    except (NodeError, OSError) as exc:
        _say(f"health: unreachable ({exc})")
        return 1
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    start = args.start or dt.datetime.now(dt.UTC).replace(microsecond=0)
    events = sample.generate(
        args.count,
        args.seed,
        start,
        rate_per_sec=args.rate_per_sec,
        suspicious=not args.no_suspicious,
    )
    if args.out == "-":
        sample.write_lines(sys.stdout, events)
        return 0
    out = Path(args.out)
    try:
        written = sample.write_jsonl(out, events, append=args.append)
    except OSError as exc:
        raise SampleError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"{PROG}: wrote {written} records to {out}", file=sys.stderr)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "register":
        try:
            pem = args.pubfile.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.pubfile}: {exc.strerror}") from None
        try:
            pki.validate_agent_name(args.agent_id)
            kid, added = register_key(args.keys_dir, args.agent_id, pem)
        except KeyRegistrationError as exc:
            raise UsageError(f"{args.pubfile}: {exc}") from None
        state = "registered" if added else "already registered"
        _say(f"agent {args.agent_id}: key {kid} {state} in {args.keys_dir}")
        return 0
    if not args.keys_dir.is_dir():
        raise UsageError(f"not a directory: {args.keys_dir}")
    for path in sorted(args.keys_dir.glob("*.pub")):
        try:
            for kid in read_keys(path):
                _say(f"{path.stem} {kid}")
        except ValueError as exc:
            _say(f"{path.stem} unreadable: {exc}")
    return 0


def opensearch_auth(
    command: str,
    url: str,
    *,
    ca: Path | None = None,
    user: str | None = None,
    password_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> ClientAuth | None:
    """The credentials the options name, checked; None when none were given.

    `UsageError` (one line, exit 2) for options that do not go together or a file that
    cannot be read. The password comes from a file, never from the command line, where
    every user of the machine could read it.
    """
    from collector.index import ClientAuth

    if (user is None) != (password_file is None):
        raise UsageError(f"{command}: --user and --password-file go together")
    if (client_cert is None) != (client_key is None):
        raise UsageError(f"{command}: --client-cert and --client-key go together")
    if all(value is None for value in (ca, user, client_cert)):
        return None
    if not url.startswith("https://"):
        raise UsageError(f"{command}: --ca, --user and --client-cert need an https:// URL")
    for option, path in (
        ("--ca", ca),
        ("--client-cert", client_cert),
        ("--client-key", client_key),
    ):
        if path is not None and not path.is_file():
            raise UsageError(f"{command}: {option}: no such file: {path}")
    password = None
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{command}: --password-file: cannot read {password_file}: {exc}"
            ) from None
        password = lines[0].strip() if lines else ""
        if not password:
            raise UsageError(f"{command}: --password-file: {password_file} is empty")
    return ClientAuth(
        username=user, password=password, ca=ca, client_cert=client_cert, client_key=client_key
    )


def _opensearch(command: str, args: argparse.Namespace) -> Requester:
    """The cluster of --opensearch (or $OPENSEARCH_URL): one URL or several nodes' URLs
    comma-separated, as the collector takes them; authenticated as the options say."""
    return _connector(command, args)()


def _connector(
    command: str, args: argparse.Namespace, serializer: object = None
) -> Callable[[], Requester]:
    """A new connection to the cluster of `_opensearch` per call (options checked now):
    verify's worker processes each open their own."""
    from collector.config import split_urls
    from collector.index import OpenSearchHttp, make_client

    value = args.opensearch or os.environ.get("OPENSEARCH_URL")
    if not value:
        raise UsageError(f"{command}: --opensearch URL (or $OPENSEARCH_URL) is required")
    try:
        urls = split_urls(value)
    except ValueError as exc:
        raise UsageError(f"{command}: --opensearch: {exc}") from None
    auth = opensearch_auth(
        command,
        urls[0],  # one scheme for all (split_urls)
        ca=args.ca,
        user=args.user,
        password_file=args.password_file,
        client_cert=args.client_cert,
        client_key=args.client_key,
    )

    def connect() -> Requester:
        return OpenSearchHttp(make_client(urls, timeout_s=60, auth=auth, serializer=serializer))

    return connect


def _retention_records(
    opensearch: Requester, args: argparse.Namespace, pinned: Mapping[str, Ed25519PublicKey]
) -> RetentionRecords | None:
    """Signed retention records (``{prefix}-retention`` and the checkpoint dir's record
    files) that verify with the pinned collector keys (`collector.verify.anchors`:
    --checkpoint-key or ``<keys>/collector.pub``). Without one no record is trusted:
    None (`verify`: nothing is EXPIRED; the report says the records were not checked).

    Raises `RetentionError` when OpenSearch cannot be read (the caller reports it like
    its other reads)."""
    from collector.retention_job.records import load_records

    if not pinned:
        return None
    return load_records(opensearch, args.prefix, pinned, args.checkpoints)


def _cmd_verify(args: argparse.Namespace) -> int:
    from collector.verify import Verifier, VerifyError, anchors
    from collector.verify.reading import FastJson
    from collector.verify.receipts import read_receipts
    from collector.verify.verifier import default_jobs

    connect = _connector("verify", args, FastJson())
    opensearch = connect()
    if args.keys is None or not args.keys.is_dir():
        raise UsageError("verify: --keys DIR (the agents' registered public keys) is required")
    if args.state is not None and args.checkpoints is None:
        raise UsageError("verify: --state FILE compares checkpoints: it needs --checkpoints DIR")
    # Trust roots from the keys directory only (see `collector.verify_anchors`).
    try:
        pinned = anchors.collector_keys(args.keys, args.checkpoint_key)
        if args.checkpoints is not None and not pinned:
            raise UsageError(
                f"verify: --checkpoints needs the collector's public key: --checkpoint-key PUB "
                f"or {args.keys / anchors.COLLECTOR_KEY_FILE} (a *.pub in the checkpoint "
                "directory is not trusted)"
            )
        view = anchors.checkpoint_view(args.checkpoints, pinned) if args.checkpoints else None
        previous = anchors.load_state(args.state) if args.state is not None else None
    except anchors.AnchorError as exc:
        raise UsageError(f"verify: {exc}") from None
    counts = anchors.line_counts(args.checkpoints) if args.checkpoints is not None else {}
    seen = anchors.Comparison()
    if view is not None and previous is not None:
        seen = anchors.compare(previous, view, counts)
        view.problems.extend(seen.problems)
    ring = KeyRing(args.keys)
    progress = None
    if sys.stderr.isatty():

        def progress(line: str) -> None:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)

    try:
        records = _retention_records(opensearch, args, pinned)
    except RetentionError as exc:
        _log(f"verify: {exc}")
        return 1
    receipts = None
    if args.receipts is not None:
        if not pinned:
            raise UsageError(
                "verify: --receipts needs the collector's public key: --checkpoint-key PUB "
                f"or {args.keys / anchors.COLLECTOR_KEY_FILE}"
            )
        receipts = read_receipts(args.receipts, pinned)
    verifier = Verifier(
        opensearch,
        args.prefix,
        ring.keys_for,
        checkpoints=view,
        retention_records=records,
        time_from=args.time_from,
        time_to=args.time_to,
        retention_days=args.retention_days,
        now=dt.datetime.now(dt.UTC),
        grace=dt.timedelta(seconds=args.grace) if args.grace > 0 else None,
        progress=progress,
        expected=anchors.registered_agents(args.keys),
        stream_findings=seen.agents,
        checkpoint_every_agent=view is not None,
        receipts=receipts,
        workers=args.jobs if args.jobs is not None else default_jobs(),
        reopen=connect,
    )
    try:
        report = verifier.run(args.agent)
    except VerifyError as exc:
        _log(f"verify: {exc}")
        return 1
    if progress is not None:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    if args.state is not None and view is not None and previous is not None:
        try:
            anchors.save_state(args.state, anchors.updated(previous, view, counts))
        except anchors.AnchorError as exc:
            _log(f"verify: {exc}")
            return 1
    if args.format == "json":
        import json

        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text())
    return 0 if report.valid else 1


def _to_ns(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1e6) * 1000


def _cmd_rules(args: argparse.Namespace) -> int:
    from collector.detect.errors import RulesError
    from collector.detect.rules import load_rules

    try:
        ruleset = load_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    if args.rules_command == "check":
        enabled = ruleset.enabled()
        _say(f"{args.rules}: OK ({len(enabled)} of {len(ruleset.rules)} rules enabled)")
        if args.opensearch is None:
            return 0
        return _rules_presence(args, ruleset)
    command = f"rules {args.rules_command}"
    opensearch = _opensearch(command, args)
    unknown = sorted(set(args.rule) - {r.id for r in ruleset.rules})
    if unknown:
        raise UsageError(f"{command}: no such rule(s) in {args.rules}: {', '.join(unknown)}")
    time_to = args.time_to or dt.datetime.now(dt.UTC)
    if time_to <= args.time_from:
        raise UsageError(f"{command}: --to must be after --from")
    if args.rules_command == "backfill":
        return _rules_backfill(args, ruleset, opensearch, time_to)
    return _rules_test(args, ruleset, opensearch, time_to)


def _rules_test(
    args: argparse.Namespace, ruleset: RuleSet, opensearch: Requester, time_to: dt.datetime
) -> int:
    from collector.detect.engine import Engine
    from collector.detect.errors import DetectionError
    from collector.detect.search import Searcher

    engine = Engine(ruleset, Searcher(opensearch, args.prefix))
    try:
        found = engine.dry_run(_to_ns(args.time_from), _to_ns(time_to), args.rule)
    except DetectionError as exc:
        _log(f"rules test: {exc}")
        return 1
    now = _to_ns(dt.datetime.now(dt.UTC))
    if args.format == "json":
        import json

        out = {rid: [a.to_json(now) for a in alerts] for rid, alerts in found.items()}
        print(json.dumps(out, indent=2))
        return 0
    for rule_id, alerts in found.items():
        _say(f"{rule_id}: {len(alerts)} alert(s)")
        for alert in alerts:
            doc = alert.document(now)["alert"]
            _say(
                f"  {doc['window']['end']} [{alert.severity}] key={alert.key} "
                f"events={len(alert.event_ids)}: {alert.reason}"
            )
            _say(f"    event ids: {', '.join(alert.event_ids[:10])}")
    return 0


def _rules_backfill(
    args: argparse.Namespace, ruleset: RuleSet, opensearch: Requester, time_to: dt.datetime
) -> int:
    from collector.detect.alerts import Alert
    from collector.detect.engine import Engine
    from collector.detect.search import Searcher, alert_docs, alerts_index
    from collector.errors import CollectorError

    searcher = Searcher(opensearch, args.prefix)
    engine = Engine(ruleset, searcher, origin="backfill")

    def write(alerts: Sequence[Alert]) -> list[bool]:
        now = _to_ns(dt.datetime.now(dt.UTC))
        return searcher.write_alerts(alert_docs(alerts, now))

    try:
        exists = opensearch("HEAD", f"/{alerts_index(args.prefix)}")
        if exists.status == 404:
            _log(
                f"rules backfill: no index {alerts_index(args.prefix)}: run the collector "
                "(or crm-audit-collector setup) first"
            )
            return 1
        searcher.ensure_mapping()
        counts = engine.backfill(_to_ns(args.time_from), _to_ns(time_to), write, args.rule)
    except CollectorError as exc:
        _log(f"rules backfill: {exc}")
        return 1
    for rule_id, (created, existing) in counts.items():
        _say(f"{rule_id}: {created} new alert(s), {existing} already raised")
    total = sum(c for c, _ in counts.values())
    _say(f"backfill {args.time_from.isoformat()} .. {time_to.isoformat()}: {total} new alert(s)")
    return 0


def _rules_presence(args: argparse.Namespace, ruleset: RuleSet) -> int:
    """Warn about rules that name fields or actions no recent event has."""
    from collector.detect.errors import DetectionError
    from collector.detect.rules import referenced
    from collector.detect.search import Searcher

    opensearch = _opensearch("rules check", args)
    wanted = {rule.id: referenced(rule) for rule in ruleset.enabled()}
    fields = sorted({f for names, _ in wanted.values() for f in names})
    actions = sorted({a for _, names in wanted.values() for a in names})
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.days)
    try:
        counts = Searcher(opensearch, args.prefix).presence(fields, actions, _to_ns(since))
    except DetectionError as exc:
        _log(f"rules check: {exc}")
        return 1
    warnings = 0
    for rule_id, (names, acts) in wanted.items():
        missing = [f for f in names if not counts.get(f"field:{f}")]
        unseen = [a for a in acts if not counts.get(f"action:{a}")]
        for name in missing:
            _log(
                f"rules check: warning: rule {rule_id}: no event of the last {args.days} "
                f"day(s) has field {name}"
            )
        for action in unseen:
            _log(
                f"rules check: warning: rule {rule_id}: no event of the last {args.days} "
                f"day(s) has event.action {action!r}"
            )
        warnings += len(missing) + len(unseen)
    _say(f"{args.rules}: {warnings} warning(s) against the events of the last {args.days} day(s)")
    return 1 if warnings and args.strict else 0


def _cmd_report(args: argparse.Namespace) -> int:
    import time

    from collector.checkpoints import load_or_create_key
    from collector.errors import StartupError
    from collector.report.build import ReportOptions, build_report, parse_duration, parse_period
    from collector.report.errors import ReportError, ReportInputError
    from collector.report.retention import read_policy_files

    opensearch = _opensearch("report", args)
    try:
        period = parse_period(args.time_from, args.time_to)
        gap = parse_duration(args.silence_gap)
    except ValueError as exc:
        raise UsageError(f"report: {exc}") from None
    except ReportInputError as exc:
        raise UsageError(str(exc)) from None
    from collector.verify import anchors

    keys = registered = None
    if args.keys is not None:
        if not args.keys.is_dir():
            raise UsageError(f"report: --keys: not a directory: {args.keys}")
        keys = KeyRing(args.keys).keys_for
        # as verify: collector.pub there is the collector's key, not an agent
        registered = frozenset(anchors.registered_agents(args.keys))
    # Trust roots as verify takes them (`collector.verify.anchors`): the collector key
    # from --checkpoint-key or <keys>/collector.pub, never a *.pub in the checkpoint
    # directory (whoever writes there could sign their own checkpoints and records).
    try:
        if args.keys is not None:
            pinned = anchors.collector_keys(args.keys, args.checkpoint_key)
        elif args.checkpoint_key is not None:
            pinned = anchors.collector_keys(args.checkpoint_key.parent, args.checkpoint_key)
        else:
            pinned = {}
        if args.checkpoints is not None and not pinned:
            where = args.keys / anchors.COLLECTOR_KEY_FILE if args.keys else "--keys DIR"
            raise UsageError(
                "report: --checkpoints needs the collector's public key: --checkpoint-key PUB "
                f"or {where} (a *.pub in the checkpoint directory is not trusted)"
            )
        view = anchors.checkpoint_view(args.checkpoints, pinned) if args.checkpoints else None
    except anchors.AnchorError as exc:
        raise UsageError(f"report: {exc}") from None
    signing_key = None
    if args.signing_key is not None:
        # The collector's checkpoint key, loaded as the collector does; never created here.
        if not args.signing_key.is_file():
            raise UsageError(f"report: --signing-key: no such file: {args.signing_key}")
        try:
            signing_key = load_or_create_key(args.signing_key)
        except StartupError as exc:
            raise UsageError(f"report: {exc}") from None
    try:
        policies = read_policy_files(args.policies) if args.policies is not None else {}
    except ReportInputError as exc:
        raise UsageError(f"report: {exc}") from None
    try:
        records = _retention_records(opensearch, args, pinned)
    except RetentionError as exc:
        _log(f"report: {exc}")
        return 1
    options = ReportOptions(
        prefix=args.prefix,
        period=period,
        now=dt.datetime.now(dt.UTC),
        gap=gap,
        min_retention_days=args.min_retention_days,
        max_rows=args.max_rows,
        keys=keys,
        registered=registered,
        checkpoints=view,
        policy_files=policies,
        signing_key=signing_key,
        retention_records=records,
    )
    started = time.monotonic()
    try:
        document, data = build_report(opensearch, options)
        args.out.write_text(document, encoding="utf-8")
    except ReportError as exc:
        _log(f"report: {exc}")
        return exc.exit_code
    except OSError as exc:
        raise UsageError(f"report: cannot write {args.out}: {exc.strerror or exc}") from None
    verdict = "NOT VERIFIED"
    if data.integrity.report is not None:
        verdict = "VALID" if data.integrity.report.valid else "FINDINGS"
    _say(
        f"report written to {args.out} in {time.monotonic() - started:.1f} s: "
        f"integrity {verdict}, {len(data.coverage.silent)} silent period(s), "
        f"{data.access.changes_total} privileged change(s), {data.alerts.total} alert(s)"
        + ("" if signing_key is not None else "; NOT SIGNED (no --signing-key)")
    )
    return 0


def _cmd_report_verify(args: argparse.Namespace) -> int:
    from collector.report.errors import SignatureError
    from collector.report.signing import verify

    try:
        loaded = integrity.load_public_keys(args.key.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"report-verify: {args.key}: {exc}") from None
    try:
        document = args.file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"report-verify: cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        _say(f"{args.file}: INVALID: not UTF-8 text (altered or not a report)")
        return 1
    try:
        payload = verify(document, {integrity.key_id(k): k for k in loaded})
    except SignatureError as exc:
        _say(f"{args.file}: INVALID: {exc}")
        return 1
    _say(
        f"{args.file}: VALID: signed by collector key {payload['key_id']}, generated "
        f"{payload['generated']}, period {payload['period']['from']} to {payload['period']['to']}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `crm-audit` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "pki":
            return _cmd_pki(args)
        if args.command == "opensearch":
            return _cmd_opensearch(args)
        if args.command == "keys":
            return _cmd_keys(args)
        if args.command == "verify":
            return _cmd_verify(args)
        if args.command == "rules":
            return _cmd_rules(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "report-verify":
            return _cmd_report_verify(args)
        return _cmd_sample(args)
    except AdminError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"{PROG}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
