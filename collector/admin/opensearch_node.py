"""A single-node OpenSearch on loopback for development and tests ("embedded node").

What it does, in order:

1. Fetch the integ-test distribution zip and the job-scheduler plugin zip (required)
   and the index-management (ISM) plugin zip (optional) of one version from Maven
   Central with ``mvn dependency:copy`` into a cache directory, trying the versions
   newest first. ISM is not published on Maven Central; without it the node still
   runs, but ISM policies cannot be installed (`ism_available` tells callers).
2. Unpack the distribution into the node's home and install the plugins with
   ``bin/opensearch-plugin install --batch file:///…`` (job-scheduler first).
3. Write ``opensearch.yml`` (single-node, 127.0.0.1, data and logs under the home)
   and start OpenSearch detached, in its own session, with a pidfile in the home.
   OpenSearch refuses to run as root: as root the node runs as the system user
   ``crm-audit-os``, created on demand, which owns the home.

Layout of a home:

    HOME/install.json        what is installed (version, plugins, ISM or not)
    HOME/opensearch-V/       the unpacked distribution (config/opensearch.yml inside)
    HOME/data/, HOME/logs/, HOME/tmp/
    HOME/opensearch.pid      pid of the running node
    HOME/run.json            ports of the running node
    HOME/stdout.log          the node's console output

Nothing here reads the environment: `defaults_from_env` turns an environment mapping
(passed by the CLI or a test fixture) into the paths and Java home to use.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.admin.errors import (
    DownloadError,
    InstallError,
    NodeError,
    NodeSetupError,
    NodeStartError,
)
from collector.urls import redact_url

DEFAULT_VERSIONS: tuple[str, ...] = ("2.19.6", "2.19.5", "2.19.4")
DEFAULT_PORT = 9200
RUN_AS_USER = "crm-audit-os"
ROOT_DEFAULT_HOME = Path("/var/lib/crm-audit/opensearch-node")
CLUSTER_NAME = "crm-audit-embedded"
DEFAULT_NODE_NAME = "crm-audit-node-1"
JAVA_OPTS = "-Xms512m -Xmx512m"
STOP_GRACE_SECONDS = 30.0
MISS_TTL_SECONDS = 24 * 3600.0  # how long a plugin that did not resolve is not asked again

CORE_GROUP, CORE_ARTIFACT = "org.opensearch.distribution.integ-test-zip", "opensearch"
PLUGIN_GROUP = "org.opensearch.plugin"
JOB_SCHEDULER = "opensearch-job-scheduler"
ISM_PLUGIN = "opensearch-index-management"

# The node's processes get a fixed, small environment: nothing of the caller's leaks in.
_NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_JAVA_CANDIDATES = (Path("/usr/lib/jvm/java-17-openjdk-amd64"), Path("/usr/lib/jvm/java-17"))

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class NodeDefaults:
    """Where the node lives and what it runs on, derived from an environment."""

    home: Path
    cache_dir: Path
    java_home: Path | None
    run_as: str | None


def defaults_from_env(env: Mapping[str, str], euid: int) -> NodeDefaults:
    """Default home, download cache, Java home and run-as user for `env` and `euid`.

    As root the home is ``/var/lib/crm-audit/opensearch-node``: root's own
    ``~/.cache`` is not traversable by the unprivileged user the node runs as.
    """
    user_home = Path(env.get("HOME") or pwd.getpwuid(euid).pw_dir)
    cache = env.get("CRM_AUDIT_CACHE")
    cache_dir = Path(cache) if cache else user_home / ".cache" / "crm-audit" / "dist"
    home = ROOT_DEFAULT_HOME if euid == 0 else user_home / ".cache" / "crm-audit" / "node"
    return NodeDefaults(
        home=home,
        cache_dir=cache_dir,
        java_home=find_java_home(env),
        run_as=RUN_AS_USER if euid == 0 else None,
    )


def find_java_home(env: Mapping[str, str]) -> Path | None:
    """A Java home for OpenSearch 2.19.

    In order: $OPENSEARCH_JAVA_HOME, $JAVA_HOME, a Java 17 under /usr/lib/jvm, the
    ``java`` on PATH. None when there is none.
    """
    for key in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if env.get(key):
            return Path(env[key])
    candidates = list(_JAVA_CANDIDATES) + sorted(Path("/usr/lib/jvm").glob("*-17-*"))
    for candidate in candidates:
        if (candidate / "bin" / "java").is_file():
            return candidate
    java = shutil.which("java", path=env.get("PATH", _NODE_PATH))
    if java:
        return Path(java).resolve().parent.parent
    return None


# ---------------------------------------------------------------------------- download


@dataclass(frozen=True)
class Artifact:
    """A zip on Maven Central."""

    group: str
    artifact: str
    version: str

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}:zip"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.zip"


def core_artifact(version: str) -> Artifact:
    return Artifact(CORE_GROUP, CORE_ARTIFACT, version)


def plugin_artifact(name: str, core_version: str) -> Artifact:
    # Plugins are versioned as the core version plus ".0" and must match it exactly.
    return Artifact(PLUGIN_GROUP, name, f"{core_version}.0")


def fetch_artifact(
    artifact: Artifact, cache_dir: Path, *, mvn: str = "mvn"
) -> tuple[Path | None, str]:
    """Return the cached zip of `artifact`, downloading it with mvn when absent.

    Returns ``(path, "")`` or ``(None, reason)`` when it does not resolve.
    """
    target = cache_dir / artifact.filename
    if target.is_file():
        return target, ""
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download into a private directory and rename, so an interrupted download never
    # leaves a truncated zip that a later run would take as cached.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as staging:
        command = [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={artifact.coordinates}",
            f"-DoutputDirectory={staging}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=900
            )
        except FileNotFoundError as exc:
            raise NodeSetupError(
                f"{mvn} not found: Maven is needed to download OpenSearch (apt-get install maven)"
            ) from exc
        except subprocess.TimeoutExpired:
            return None, f"mvn timed out fetching {artifact.coordinates}"
        produced = Path(staging) / artifact.filename
        if result.returncode != 0 or not produced.is_file():
            return None, _mvn_reason(result.stdout + result.stderr)
        produced.replace(target)
    return target, ""


def _mvn_reason(output: str) -> str:
    for line in output.splitlines():
        if "[ERROR]" in line and ("Could not" in line or "Failed" in line):
            return _strip_ansi(line.split("[ERROR]", 1)[1].strip())[:300]
    lines = [_strip_ansi(line) for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "mvn failed without output"


def _strip_ansi(text: str) -> str:
    out, skip = [], False
    for char in text:
        if char == "\x1b":
            skip = True
        elif skip:
            skip = not char.isalpha()
        else:
            out.append(char)
    return "".join(out).replace("[ERROR]", "").strip()


@dataclass(frozen=True)
class Downloads:
    """The zips of one version: core and job-scheduler always, ISM when it resolved,
    and every extra plugin asked for (a version lacking one of them is skipped)."""

    version: str
    core: Path
    job_scheduler: Path
    ism: Path | None
    extras: tuple[tuple[str, Path], ...] = ()


def fetch_distribution(
    cache_dir: Path,
    versions: Sequence[str],
    *,
    log: Log = _stderr_log,
    mvn: str = "mvn",
    extra_plugins: Sequence[str] = (),
) -> Downloads:
    """Fetch core + job-scheduler (+ ISM if available) + `extra_plugins` of the newest
    version for which all required zips resolve."""
    problems: list[str] = []
    for version in versions:
        core, reason = fetch_artifact(core_artifact(version), cache_dir, mvn=mvn)
        if core is None:
            problems.append(f"{core_artifact(version).coordinates}: {reason}")
            continue
        required: list[tuple[str, Path]] = []
        for name in (JOB_SCHEDULER, *extra_plugins):
            artifact = plugin_artifact(name, version)
            zip_path, reason = fetch_artifact(artifact, cache_dir, mvn=mvn)
            if zip_path is None:
                problems.append(f"{artifact.coordinates}: {reason}")
                break
            required.append((name, zip_path))
        else:
            return _with_ism(version, core, required, cache_dir, log=log, mvn=mvn)
    raise DownloadError(
        "could not fetch OpenSearch for any of " + ", ".join(versions) + ": " + "; ".join(problems)
    )


def _with_ism(
    version: str,
    core: Path,
    required: list[tuple[str, Path]],
    cache_dir: Path,
    *,
    log: Log,
    mvn: str,
) -> Downloads:
    """`Downloads` of `version`, with the ISM zip when it resolves (optional).

    A miss is remembered for a day in the cache (``<zip>.missing``): asking Maven again
    costs seconds on every node install (tests install several) and the answer rarely
    changes; delete the marker to ask at once.
    """
    ism_artifact = plugin_artifact(ISM_PLUGIN, version)
    marker = cache_dir / f"{ism_artifact.filename}.missing"
    ism: Path | None = None
    if (cache_dir / ism_artifact.filename).is_file() or not _fresh(marker, MISS_TTL_SECONDS):
        ism, _ = fetch_artifact(ism_artifact, cache_dir, mvn=mvn)
        if ism is None:
            with contextlib.suppress(OSError):
                marker.write_text(f"{ism_artifact.coordinates} did not resolve\n")
    if ism is None:
        log(
            f"ISM plugin not available from Maven Central ({ism_artifact.coordinates}); "
            "the node runs without it and ISM policies cannot be installed"
        )
    return Downloads(
        version=version,
        core=core,
        job_scheduler=required[0][1],
        ism=ism,
        extras=tuple(required[1:]),
    )


def _fresh(path: Path, max_age_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < max_age_s
    except OSError:
        return False


# ---------------------------------------------------------------------------- install


def unpack_zip(archive: Path, destination: Path) -> None:
    """Extract `archive` into `destination`, keeping the Unix modes the zip records."""
    root = destination.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            target = (destination / info.filename).resolve()
            if target != root and root not in target.parents:
                raise InstallError(f"{archive}: member {info.filename!r} escapes the target")
            mode = (info.external_attr >> 16) & 0o7777
            file_type = (info.external_attr >> 16) & 0o170000
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if file_type == stat.S_IFLNK:
                target.symlink_to(bundle.read(info).decode())
                continue
            with bundle.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)
            target.chmod(mode & 0o777 or 0o644)


def render_config(
    *,
    http_port: int,
    transport_port: int,
    data_dir: Path,
    logs_dir: Path,
    ism: bool,
    cluster_name: str = CLUSTER_NAME,
    node_name: str = DEFAULT_NODE_NAME,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """The node's opensearch.yml.

    ISM settings appear only when the ISM plugin is installed: OpenSearch refuses to
    start on settings no installed plugin declares. `settings` add keys or override
    the defaults; a value of None removes a default (``discovery.type`` for a
    multi-node cluster). Values are written as JSON, which YAML reads as the same value.
    """
    values: dict[str, Any] = {
        "cluster.name": cluster_name,
        "node.name": node_name,
        "network.host": "127.0.0.1",
        "http.port": http_port,
        "transport.port": transport_port,
        "discovery.type": "single-node",
        "path.data": str(data_dir),
        "path.logs": str(logs_dir),
    }
    if ism:
        values["plugins.index_state_management.job_interval"] = 1
        values["plugins.index_state_management.jitter"] = 0.0
    for key, value in (settings or {}).items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    lines = ["# Written by `crm-audit opensearch`; rewritten on every start."]
    lines += [f"{key}: {_yaml_scalar(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


_PLAIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_YAML_SPECIAL = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _yaml_scalar(value: Any) -> str:
    # words YAML reads back as the same string stay plain (readable); the rest is JSON
    if (
        isinstance(value, str)
        and _PLAIN_WORD.fullmatch(value)
        and value.lower() not in _YAML_SPECIAL
        and not _is_number(value)
    ):
        return value
    return json.dumps(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- HTTP


def http_get_json(
    url: str, path: str, *, timeout: float = 5.0, cafile: Path | None = None
) -> tuple[int, Any]:
    """GET `url` + `path`; returns (status, parsed JSON or text).

    Credentials in the URL (``https://user:pass@host``) are sent as basic auth; TLS
    certificates are verified (against `cafile` when given, else the system store).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NodeSetupError(f"OpenSearch URL must be http:// or https://, got {url!r}")
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    # the scheme was checked above: only http(s), never file: or custom schemes
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})  # noqa: S310
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:" + urllib.parse.unquote(
            parts.password or ""
        )
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile is not None else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    text = body.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def cluster_health(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """``GET _cluster/health`` of the cluster at `url`; `NodeError` when unreachable."""
    try:
        status, body = http_get_json(url, "/_cluster/health", timeout=timeout)
    except (OSError, urllib.error.URLError) as exc:
        raise NodeError(f"OpenSearch at {redact_url(url)} is not reachable: {exc}") from exc
    if status != 200 or not isinstance(body, dict):
        raise NodeError(f"OpenSearch at {redact_url(url)}: _cluster/health answered {status}")
    return body


def ism_available(url: str, *, timeout: float = 10.0) -> bool:
    """Whether the cluster at `url` has the ISM plugin (``_plugins/_ism``) installed."""
    try:
        status, body = http_get_json(url, "/_cat/plugins?format=json&h=component", timeout=timeout)
    except (OSError, urllib.error.URLError) as exc:
        raise NodeError(f"OpenSearch at {redact_url(url)} is not reachable: {exc}") from exc
    if status != 200 or not isinstance(body, list):
        raise NodeError(f"OpenSearch at {redact_url(url)}: _cat/plugins answered {status}")
    return any(isinstance(row, dict) and row.get("component") == ISM_PLUGIN for row in body)


# ---------------------------------------------------------------------------- processes


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as OpenSearch itself does (network.tcp.reuse_address): only a listener blocks
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state follows the parenthesised command name, which may itself hold spaces
    state = stat_line.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _is_opensearch(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"org.opensearch.bootstrap.OpenSearch" in cmdline


def ensure_system_user(name: str = RUN_AS_USER) -> pwd.struct_passwd:
    """The system user `name`, created (nologin, no home) if it does not exist."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # exit 9: created concurrently by someone else, which is just as good
    if result.returncode not in (0, 9):
        raise NodeSetupError(f"cannot create system user {name}: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def check_traversable(path: Path, uid: int, gid: int) -> None:
    """Raise `NodeSetupError` unless user `uid` can reach `path` through every parent."""
    for parent in reversed(Path(path).resolve().parents):
        info = parent.stat()
        if info.st_uid == uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            raise NodeSetupError(
                f"node home {path} is not reachable for the node's user: {parent} is mode "
                f"{stat.S_IMODE(info.st_mode):04o}; choose a --home outside it"
            )


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            os.chown(Path(root) / entry, uid, gid, follow_symlinks=False)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- the node


@dataclass(frozen=True)
class Installation:
    """What `ensure_installed` put into a home."""

    version: str
    dist: Path
    plugins: tuple[str, ...]

    @property
    def ism(self) -> bool:
        return ISM_PLUGIN in self.plugins


_AUTO = "auto"


class EmbeddedOpenSearch:
    """One OpenSearch node on 127.0.0.1:`port`, installed in and run from `home`.

    `cache_dir` holds downloaded zips (default: ``home/../dist-cache``); `java_home`
    a Java 11/17/21 (default: found under /usr/lib/jvm or from ``java`` on PATH);
    `run_as` the user the node runs as: ``"auto"`` means ``crm-audit-os`` when this
    process is root (OpenSearch refuses root), else the current user.

    For tests of clusters and of the security plugin: `plugins` are extra plugins
    (required, same version, e.g. ``opensearch-security``); `settings` add to or
    override opensearch.yml (see `render_config`); `transport_port` and `node_name`
    let nodes name each other in ``discovery.seed_hosts`` /
    ``cluster.initial_cluster_manager_nodes``; `scheme`, `ca_file` and
    `probe_credentials` are how readiness is probed when HTTP is TLS with
    authentication. Files the node needs in its config directory (certificates,
    security config) are written to `config_dir` after `ensure_installed`.
    `java_opts` is the node's ``OPENSEARCH_JAVA_OPTS`` (the heap, by default).
    """

    def __init__(
        self,
        home: Path,
        port: int = DEFAULT_PORT,
        *,
        cache_dir: Path | None = None,
        java_home: Path | None = None,
        run_as: str | None = _AUTO,
        versions: Sequence[str] = DEFAULT_VERSIONS,
        log: Log = _stderr_log,
        mvn: str = "mvn",
        plugins: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        transport_port: int | None = None,
        node_name: str = DEFAULT_NODE_NAME,
        scheme: str = "http",
        ca_file: Path | None = None,
        probe_credentials: tuple[str, str] | None = None,
        java_opts: str = JAVA_OPTS,
    ) -> None:
        self.home = Path(home).absolute()
        self.java_opts = java_opts
        self.port = port
        self.plugins = tuple(plugins)
        self.settings = dict(settings or {})
        self.transport_port = transport_port
        self.node_name = node_name
        self.scheme = scheme
        self.ca_file = ca_file
        self.probe_credentials = probe_credentials
        self.cache_dir = Path(cache_dir) if cache_dir else self.home.parent / "dist-cache"
        self.java_home = java_home
        self.run_as = (RUN_AS_USER if os.geteuid() == 0 else None) if run_as == _AUTO else run_as
        self.versions = tuple(versions)
        self.log = log
        self.mvn = mvn
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        euid: int,
        *,
        home: Path | None = None,
        port: int = DEFAULT_PORT,
        log: Log = _stderr_log,
        java_opts: str = JAVA_OPTS,
    ) -> EmbeddedOpenSearch:
        """A node configured from an environment mapping (see `defaults_from_env`)."""
        defaults = defaults_from_env(env, euid)
        return cls(
            home or defaults.home,
            port,
            cache_dir=defaults.cache_dir,
            java_home=defaults.java_home,
            run_as=defaults.run_as,
            log=log,
            java_opts=java_opts,
        )

    # -- paths

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def _probe_url(self) -> str:
        if self.probe_credentials is None:
            return self.url
        user, password = (urllib.parse.quote(part, safe="") for part in self.probe_credentials)
        return f"{self.scheme}://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        """The installed distribution's config directory (after `ensure_installed`)."""
        installed = self.installation()
        if installed is None:
            raise NodeSetupError(f"OpenSearch is not installed in {self.home}")
        return installed.dist / "config"

    @property
    def pidfile(self) -> Path:
        return self.home / "opensearch.pid"

    @property
    def run_file(self) -> Path:
        return self.home / "run.json"

    @property
    def install_file(self) -> Path:
        return self.home / "install.json"

    @property
    def stdout_log(self) -> Path:
        return self.home / "stdout.log"

    # -- install

    def installation(self) -> Installation | None:
        """What is installed in the home, or None."""
        try:
            record = json.loads(self.install_file.read_text())
            installed = Installation(
                version=str(record["version"]),
                dist=self.home / str(record["dist"]),
                plugins=tuple(str(p) for p in record["plugins"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return installed if (installed.dist / "bin" / "opensearch").is_file() else None

    def ensure_installed(self) -> Installation:
        """Download (if not cached), unpack and install plugins unless already done."""
        owner = self._owner()
        self._prepare_home(owner)
        installed = self.installation()
        if installed is not None:
            missing = [name for name in self.plugins if name not in installed.plugins]
            if missing:
                raise NodeSetupError(
                    f"{self.home} has no {', '.join(missing)}; use a new home for that node"
                )
            return installed
        downloads = fetch_distribution(
            self.cache_dir,
            self.versions,
            log=self.log,
            mvn=self.mvn,
            extra_plugins=self.plugins,
        )
        self.log(f"installing OpenSearch {downloads.version} into {self.home}")
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.home))
        try:
            unpack_zip(downloads.core, staging)
            unpacked = [entry for entry in staging.iterdir() if entry.is_dir()]
            if len(unpacked) != 1 or not (unpacked[0] / "bin" / "opensearch").is_file():
                raise InstallError(f"{downloads.core}: unexpected layout (no */bin/opensearch)")
            dist = self.home / unpacked[0].name
            if dist.exists():
                shutil.rmtree(dist)
            unpacked[0].rename(dist)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        plugins = [JOB_SCHEDULER]
        self._install_plugin(dist, downloads.job_scheduler, JOB_SCHEDULER)
        for name, archive in downloads.extras:
            self._install_plugin(dist, archive, name)
            plugins.append(name)
        if downloads.ism is not None:
            try:
                self._install_plugin(dist, downloads.ism, ISM_PLUGIN)
                plugins.append(ISM_PLUGIN)
            except InstallError as exc:
                self.log(f"ISM plugin could not be installed, running without it: {exc}")
        for sub in ("data", "logs", "tmp"):
            (self.home / sub).mkdir(exist_ok=True)
        record = {"version": downloads.version, "dist": dist.name, "plugins": plugins}
        self.install_file.write_text(json.dumps(record, indent=2) + "\n")
        if owner is not None:
            _chown_tree(self.home, owner.pw_uid, owner.pw_gid)
        return Installation(version=downloads.version, dist=dist, plugins=tuple(plugins))

    def _owner(self) -> pwd.struct_passwd | None:
        if self.run_as is None:
            return None
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            if entry.pw_name == self.run_as:
                return None
            raise NodeSetupError(f"only root can run the node as {self.run_as}")
        return ensure_system_user(self.run_as)

    def _prepare_home(self, owner: pwd.struct_passwd | None) -> None:
        missing = [p for p in (self.home, *self.home.parents) if not p.exists()]
        try:
            # parents we create must let the node's user through
            for directory in reversed(missing):
                directory.mkdir(mode=0o755)
                directory.chmod(0o755)
        except OSError as exc:
            raise NodeSetupError(f"cannot create node home {self.home}: {exc}") from exc
        if not self.home.is_dir():
            raise NodeSetupError(f"node home {self.home} is not a directory")
        if owner is not None:
            check_traversable(self.home, owner.pw_uid, owner.pw_gid)
            os.chown(self.home, owner.pw_uid, owner.pw_gid)

    def _java(self) -> Path:
        java_home = self.java_home or find_java_home({})
        if java_home is None or not (java_home / "bin" / "java").is_file():
            raise NodeSetupError(
                f"no Java found for OpenSearch (looked at {java_home or '/usr/lib/jvm'}); "
                "install openjdk-17-jre-headless or set OPENSEARCH_JAVA_HOME"
            )
        return java_home

    def _node_env(self) -> dict[str, str]:
        return {
            "PATH": _NODE_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "OPENSEARCH_JAVA_HOME": str(self._java()),
            "OPENSEARCH_JAVA_OPTS": self.java_opts,
            "OPENSEARCH_TMPDIR": str(self.home / "tmp"),
        }

    def _install_plugin(self, dist: Path, archive: Path, name: str) -> None:
        self.log(f"installing plugin {name} from {archive.name}")
        result = subprocess.run(
            [
                str(dist / "bin" / "opensearch-plugin"),
                "install",
                "--batch",
                archive.resolve().as_uri(),
            ],
            env=self._node_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise InstallError(f"installing {name} failed: {' | '.join(output[-5:])}")

    # -- run

    def running_pid(self) -> int | None:
        """Pid of this home's running node, or None (a stale pidfile counts as not running)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return None
        return pid if pid_alive(pid) and _is_opensearch(pid) else None

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def recorded_port(self) -> int | None:
        """The HTTP port the running node of this home was started with."""
        try:
            return int(json.loads(self.run_file.read_text())["http_port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, timeout: float = 120.0) -> None:
        """Install if needed, start detached and wait for health yellow; idempotent."""
        if self.launch():
            self.wait_ready(timeout)

    def launch(self) -> bool:
        """Install if needed and start detached without waiting; False if already running.

        The nodes of a cluster are launched first and then waited for: none of them
        is ready before enough of them have found each other.
        """
        if self.is_running():
            self.port = self.recorded_port() or self.port
            return False
        installed = self.ensure_installed()
        if not port_is_free(self.port):
            raise NodeSetupError(
                f"port {self.port} on 127.0.0.1 is already in use; choose another with --port"
            )
        transport = self.transport_port or self.port + 100
        if self.transport_port is None and (transport > 65535 or not port_is_free(transport)):
            transport = free_port()
        owner = self._owner()
        config = installed.dist / "config" / "opensearch.yml"
        config.write_text(
            render_config(
                http_port=self.port,
                transport_port=transport,
                data_dir=self.home / "data",
                logs_dir=self.home / "logs",
                ism=installed.ism,
                node_name=self.node_name,
                settings=self.settings,
            )
        )
        for sub in ("data", "logs", "tmp"):
            (self.home / sub).mkdir(exist_ok=True)
            if owner is not None:
                os.chown(self.home / sub, owner.pw_uid, owner.pw_gid)
        if owner is not None:
            # files a test or an operator put into config/ since the install
            _chown_tree(installed.dist / "config", owner.pw_uid, owner.pw_gid)
        self.log(f"starting OpenSearch {installed.version} on {self.url} (home {self.home})")
        with self.stdout_log.open("ab") as console:
            self._proc = subprocess.Popen(
                [str(installed.dist / "bin" / "opensearch")],
                cwd=self.home,
                env=self._node_env(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
            )
        self.pidfile.write_text(f"{self._proc.pid}\n")
        self.run_file.write_text(
            json.dumps({"http_port": self.port, "transport_port": transport}) + "\n"
        )
        return True

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for health yellow of the node `launch` started; stop it on failure."""
        assert self._proc is not None, "wait_ready() follows launch()"
        try:
            self._wait_ready(timeout)
        except NodeStartError:
            self._terminate(self._proc.pid, grace=10.0)
            self._clear_run_files()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise NodeStartError(
                    f"OpenSearch exited with {self._proc.returncode} while starting; "
                    f"log tail ({self.stdout_log}):\n{tail(self.stdout_log)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeStartError(
                    f"OpenSearch did not reach health yellow within {timeout:.0f} s; "
                    f"log tail ({self.stdout_log}):\n{tail(self.stdout_log)}"
                )
            try:
                status, _ = http_get_json(self._probe_url, "/", timeout=2.0, cafile=self.ca_file)
                if status == 200:
                    wait = max(1, min(int(remaining), 30))
                    status, body = http_get_json(
                        self._probe_url,
                        f"/_cluster/health?wait_for_status=yellow&timeout={wait}s",
                        timeout=wait + 5,
                        cafile=self.ca_file,
                    )
                    if status == 200 and isinstance(body, dict) and not body.get("timed_out"):
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """SIGTERM the node, SIGKILL after `grace` seconds; False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            self._clear_run_files()
            return False
        self._terminate(pid, grace=grace)
        self._clear_run_files()
        return True

    def _terminate(self, pid: int, *, grace: float) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if self._wait_exit(pid, wait):
                return
        raise NodeStartError(f"OpenSearch (pid {pid}) did not exit after SIGKILL")

    def _wait_exit(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not pid_alive(pid):
                return True
            time.sleep(0.2)
        return False

    def _clear_run_files(self) -> None:
        for path in (self.pidfile, self.run_file):
            path.unlink(missing_ok=True)


def describe(url: str) -> Iterable[str]:
    """Lines describing the cluster at `url` (version, health), for `status`."""
    status, body = http_get_json(url, "/", timeout=5.0)
    if status == 200 and isinstance(body, dict):
        version = body.get("version", {}).get("number", "?")
        yield f"version: {version}"
    health = cluster_health(url)
    yield f"health: {health.get('status')} ({health.get('number_of_nodes')} node(s))"
    yield f"ism: {'available' if ism_available(url) else 'not installed'}"
