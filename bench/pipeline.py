"""Set-up of what a scenario runs: PKI, configs from `bench/templates`, and the
agent, collector, null collector and rsyslog processes, each stopped on the way out.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
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


def start_agent(bench: Bench, directory: Path, glob: str, port: int) -> Proc:
    config = directory / "agent.yaml"
    config.write_text(
        render_file(
            "agent.yaml",
            agent_id=AGENT_ID,
            state_dir=directory / "agent-state",
            port=port,
            ca=bench.ca,
            cert=bench.pki / "agents" / f"{AGENT_ID}.crt",
            key=bench.pki / "agents" / f"{AGENT_ID}.key",
            glob=glob,
        ),
        encoding="utf-8",
    )
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
def agent(bench: Bench, directory: Path, glob: str, port: int) -> Iterator[Proc]:
    proc = start_agent(bench, directory, glob, port)
    try:
        yield proc
    finally:
        proc.stop()


def rsyslog_server(url: str) -> str:
    """The ``server`` value for omelasticsearch; only plain http without credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.username or parts.password:
        raise BenchError(
            "the rsyslog peer is only set up for a plain http:// OpenSearch URL without "
            f"credentials (got {parts.scheme}://…)"
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
