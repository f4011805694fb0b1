"""Set-up of what a scenario runs: PKI, configs from `bench/templates`, and the
agent, collector, null collector and rsyslog processes, each stopped on the way out.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from opensearchpy import OpenSearch

from bench.nullcollector import NullCollector
from bench.processes import BenchError, Proc, free_port, port_open, wait_until
from bench.search import delete_prefix, put_index_template

TEMPLATES = Path(__file__).resolve().parent / "templates"
AGENT_ID = "bench-agent"


def render(template: str, **values: object) -> str:
    """Fill ``{{name}}`` placeholders; every placeholder must be given a value."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"template placeholder {{{{{name}}}}} has no value")
        return str(values[name])

    return re.sub(r"\{\{(\w+)\}\}", fill, template)


def render_file(name: str, **values: object) -> str:
    return render((TEMPLATES / name).read_text(encoding="utf-8"), **values)


@dataclass
class Bench:
    """What every scenario shares: OpenSearch, the PKI, paths, the child environment."""

    url: str
    os: OpenSearch
    work: Path  # scratch directory of this benchmark run
    pki: Path
    bin_dir: Path  # where crm-audit-agent / crm-audit-collector live
    repo: Path
    child_env: Mapping[str, str]
    rsyslogd: str | None = None
    syslog_ng: Path | None = None  # the tree bench/install-syslog-ng.sh unpacked
    # The OpenSearch node's pid when it runs on this machine: its CPU per event is
    # measured beside the shippers' (the two cores are shared, so what it spends per
    # document bounds the events/s as much as the shippers do).
    node_pid: int | None = None

    def __post_init__(self) -> None:
        self.token = uuid.uuid4().hex[:6]
        self._serial = 0

    def new_run(self, what: str) -> tuple[str, Path]:
        """A fresh index prefix and scratch directory for one run of `what`."""
        self._serial += 1
        name = f"{what}-{self._serial}"
        directory = self.work / "runs" / name
        directory.mkdir(parents=True)
        return f"bench-{self.token}-{name}", directory

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"


def make_pki(directory: Path) -> Path:
    from collector.admin.pki import init_ca, issue_agent

    init_ca(directory)
    issue_agent(directory, AGENT_ID)
    return directory


@contextlib.contextmanager
def run_scope(bench: Bench, what: str, *, indices: bool = True) -> Iterator[tuple[str, Path]]:
    """A run's prefix and directory; its files (and, with `indices`, its indices,
    templates and policies in OpenSearch) are removed after."""
    prefix, directory = bench.new_run(what)
    try:
        yield prefix, directory
    finally:
        if indices:
            delete_prefix(bench.os, prefix)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Integrity:
    """The collector's tamper-evidence set-up as production runs it (docs/operations.md):
    the agent's signing key registered in `keys`, unsealed batches refused, signed
    checkpoints written to `checkpoints`."""

    keys: Path
    checkpoints: Path
    # Shorter than the shipped 300 s so that a run of tens of seconds writes checkpoints
    # at all (more checkpoint work than production, not less).
    checkpoint_interval_s: float = 5.0

    @classmethod
    def under(cls, directory: Path) -> Integrity:
        keys, checkpoints = directory / "keys", directory / "checkpoints"
        keys.mkdir()
        checkpoints.mkdir()
        return cls(keys, checkpoints)

    def collector_yaml(self) -> str:
        return (
            f"\nintegrity:\n  keys_dir: {self.keys}\n  require_seal: true\n"
            f"  checkpoint_dir: {self.checkpoints}\n"
            f"  checkpoint_interval_s: {self.checkpoint_interval_s}\n"
        )


def enroll(
    bench: Bench, config: Path, state_dir: Path, keys: Path, agent_id: str = AGENT_ID
) -> None:
    """Enrollment as an operator does it: `crm-audit-agent key` creates the agent's
    signing key, `crm-audit keys register` registers its public key with the collector."""
    for argv in (
        [str(bench.bin_dir / "crm-audit-agent"), "key", "-c", str(config)],
        [
            str(bench.bin_dir / "crm-audit"), "keys", "register",
            str(keys), agent_id, str(state_dir / "signing-key.pub"),
        ],
    ):  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=dict(bench.child_env)
        )
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-500:]}")


def start_agent(
    bench: Bench,
    directory: Path,
    glob: str,
    port: int,
    *,
    keys: Path | None = None,
    agent_id: str = AGENT_ID,
) -> Proc:
    """The agent, shipping `glob` to the collector on `port`; with `keys`, its signing key
    is created and registered there first (`enroll`). An `agent_id` other than AGENT_ID
    needs its certificate issued first (`collector.admin.pki.issue_agent`)."""
    config = directory / "agent.yaml"
    config.write_text(
        render_file(
            "agent.yaml",
            agent_id=agent_id,
            state_dir=directory / "agent-state",
            port=port,
            ca=bench.ca,
            cert=bench.pki / "agents" / f"{agent_id}.crt",
            key=bench.pki / "agents" / f"{agent_id}.key",
            glob=glob,
        ),
        encoding="utf-8",
    )
    if keys is not None:
        enroll(bench, config, directory / "agent-state", keys, agent_id)
    return Proc(
        [str(bench.bin_dir / "crm-audit-agent"), "run", "-c", str(config)],
        directory / "agent.log",
        env=bench.child_env,
    )


@contextlib.contextmanager
def collector(
    bench: Bench, directory: Path, prefix: str, *, extra: str = ""
) -> Iterator[tuple[Proc, int]]:
    """A real collector indexing into `prefix`-*, listening on a free port.

    `extra` is YAML appended to the config (e.g. an ``integrity:`` or ``detection:``
    section); relative paths in it resolve against `directory`.
    """
    port = free_port()
    config = directory / "collector.yaml"
    config.write_text(
        render_file(
            "collector.yaml",
            port=port,
            ca=bench.ca,
            cert=bench.pki / "collector.crt",
            key=bench.pki / "collector.key",
            url=bench.url,
            prefix=prefix,
            policy=bench.repo / "config" / "opensearch" / "ism-standard.json",
        )
        + extra,
        encoding="utf-8",
    )
    proc = Proc(
        [str(bench.bin_dir / "crm-audit-collector"), "run", "-c", str(config)],
        directory / "collector.log",
        env=bench.child_env,
    )
    try:
        wait_until(lambda: port_open(port), "the collector to listen", timeout=60, watch=(proc,))
        yield proc, port
    finally:
        proc.stop()


@contextlib.contextmanager
def null_collector(bench: Bench) -> Iterator[NullCollector]:
    server = NullCollector(
        ca=bench.ca, cert=bench.pki / "collector.crt", key=bench.pki / "collector.key"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def agent(
    bench: Bench,
    directory: Path,
    glob: str,
    port: int,
    *,
    keys: Path | None = None,
    agent_id: str = AGENT_ID,
) -> Iterator[Proc]:
    proc = start_agent(bench, directory, glob, port, keys=keys, agent_id=agent_id)
    try:
        yield proc
    finally:
        proc.stop()


def rsyslog_server(url: str) -> str:
    """The ``server`` value for omelasticsearch; only plain http without credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.username or parts.password:
        raise BenchError(
            "the rsyslog and syslog-ng peers are only set up for a plain http:// OpenSearch URL "
            f"without credentials (got {parts.scheme}://…)"
        )
    return f"http://{parts.hostname}:{parts.port or 9200}"


@contextlib.contextmanager
def rsyslog(bench: Bench, directory: Path, index: str, glob: str) -> Iterator[Proc]:
    """rsyslogd in the foreground with the benchmark's config, shipping to `index`."""
    if bench.rsyslogd is None:
        raise BenchError("rsyslogd not found")
    put_index_template(
        bench.os,
        index,
        json.loads(render_file("rsyslog-index-template.json", index=index)),
    )
    work_dir = directory / "rsyslog-work"
    work_dir.mkdir()
    config = directory / "rsyslog.conf"
    config.write_text(
        render_file(
            "rsyslog.conf",
            work_dir=work_dir,
            server=rsyslog_server(bench.url),
            index=index,
            glob=glob,
        ),
        encoding="utf-8",
    )
    proc = Proc(
        [bench.rsyslogd, "-n", "-f", str(config), "-i", str(directory / "rsyslogd.pid")],
        directory / "rsyslogd.log",
        env=bench.child_env,
    )
    try:
        yield proc
    finally:
        proc.stop()


def syslog_ng_version(root: Path) -> str | None:
    """The version of the syslog-ng unpacked under `root`, None when it does not run."""
    try:
        done = subprocess.run(
            [str(root / "usr" / "sbin" / "syslog-ng"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            env={"LD_LIBRARY_PATH": str(root / "usr" / "lib" / "syslog-ng")},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Installer-Version:\s*(\S+)", done.stdout)
    return match.group(1) if done.returncode == 0 and match else None


@contextlib.contextmanager
def syslog_ng(
    bench: Bench, directory: Path, index: str, logs: Path, pattern: str
) -> Iterator[Proc]:
    """syslog-ng in the foreground with the benchmark's config, shipping to `index`.

    Same index template as the rsyslog peer (strings as keywords, the raw line stored
    but not indexed).
    """
    root = bench.syslog_ng
    if root is None:
        raise BenchError("syslog-ng not unpacked (bash bench/install-syslog-ng.sh)")
    put_index_template(
        bench.os,
        index,
        json.loads(render_file("rsyslog-index-template.json", index=index)),
    )
    work_dir = directory / "syslog-ng-work"
    work_dir.mkdir()
    modules = sorted((root / "usr" / "lib" / "syslog-ng").glob("*/libhttp.so"))
    if not modules:
        raise BenchError(f"no syslog-ng http module under {root}")
    config = directory / "syslog-ng.conf"
    config.write_text(
        render_file(
            "syslog-ng.conf",
            scl=root / "usr" / "share" / "syslog-ng" / "include" / "scl",
            dir=logs,
            pattern=pattern,
            server=rsyslog_server(bench.url),
            index=index,
        ),
        encoding="utf-8",
    )
    argv = [
        str(root / "usr" / "sbin" / "syslog-ng"), "-F", "-e", "--no-caps",
        "-f", str(config), f"--module-path={modules[0].parent}",
        "-R", str(work_dir / "syslog-ng.persist"), "-p", str(work_dir / "syslog-ng.pid"),
        "-c", str(work_dir / "syslog-ng.ctl"),
    ]  # fmt: skip
    proc = Proc(
        argv,
        directory / "syslog-ng.log",
        env={**bench.child_env, "LD_LIBRARY_PATH": str(root / "usr" / "lib" / "syslog-ng")},
    )
    try:
        yield proc
    finally:
        proc.stop()
