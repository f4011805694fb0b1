"""The collector's configuration (`collector.yaml`), validated with pydantic.

`load_config(path)` returns a frozen `CollectorConfig` or raises `ConfigError` holding
every problem at once, one line each (``collector.yaml:LINE: key.path: message``).
Relative file paths resolve against the config file's directory. String values may use
``${NAME}`` / ``${file:PATH}`` substitution (proto.yamlconfig); the variables come from
the caller (`collector.cli` passes the environment, and reads ``OPENSEARCH_URL``).

Every field carries a ``description``: docs/config-reference.md is generated from them
(`make config-reference`), and a test fails when it is stale.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.detect.rules import load_rules
from collector.detect.settings import DetectionConfig
from collector.errors import ConfigError
from collector.retention_job.policy import phases_of
from proto import limits
from proto.yamlconfig import KeyPath, load

_LISTEN_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")
# Index names: lowercase, no wildcard/separator characters; we append "-events-..." to it.
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_CLASS_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,39}$")


def _resolve_file(value: Any, info: ValidationInfo) -> Path:
    """Resolve against the config dir and require an existing regular file."""
    if not isinstance(value, str | Path) or str(value) == "":
        raise ValueError("expected a file path")
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("config_dir")
        if base is not None:
            path = Path(base) / path
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from exc


class TlsConfig(_Model):
    """Server certificate, its key and the CA that signs agent certificates."""

    ca: Path = Field(description="PEM CA bundle that signed the agents' client certificates.")
    cert: Path = Field(description="The collector's PEM server certificate.")
    key: Path = Field(
        description="Its unencrypted PEM private key; must not be readable by other users."
    )

    _resolve = field_validator("ca", "cert", "key", mode="before")(_resolve_file)

    @field_validator("ca", "cert")
    @classmethod
    def _is_certificate(cls, path: Path) -> Path:
        try:
            x509.load_pem_x509_certificates(_read_pem(path, "certificate"))
        except ValueError as exc:
            if str(exc).startswith("cannot read"):
                raise
            raise ValueError(f"not a PEM certificate: {path}") from None
        return path

    @field_validator("key")
    @classmethod
    def _is_private_key(cls, path: Path) -> Path:
        try:
            serialization.load_pem_private_key(_read_pem(path, "private key"), password=None)
        except ValueError as exc:
            if str(exc).startswith("cannot read"):
                raise
            # Never echo the file content: it is key material.
            raise ValueError(f"not an unencrypted PEM private key: {path}") from None
        except TypeError:
            raise ValueError(f"encrypted private keys are not supported: {path}") from None
        mode = path.stat().st_mode
        if mode & stat.S_IROTH or mode & stat.S_IWOTH:
            raise ValueError(
                f"private key {path} is accessible to other users "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        return path

    @model_validator(mode="after")
    def _key_matches_cert(self) -> TlsConfig:
        cert = x509.load_pem_x509_certificates(self.cert.read_bytes())[0]
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
            raise ValueError(f"key {self.key} does not belong to cert {self.cert}")
        return self


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _check_url_list(urls: list[str]) -> list[str]:
    """Several nodes of one cluster: at least one, no repeats, one scheme for all (the
    TLS and credential settings apply to every node)."""
    if not urls:
        raise ValueError("list at least one node URL (or use url for a single one)")
    seen: set[str] = set()
    for url in urls:
        if url in seen:
            raise ValueError(f"{url} is listed twice")
        seen.add(url)
    schemes = {urlsplit(url).scheme for url in urls}
    if len(schemes) > 1:
        raise ValueError("all URLs must use the same scheme (all http:// or all https://)")
    return urls


def split_urls(value: str) -> list[str]:
    """``http://a:9200,http://b:9200`` -> the checked URLs (``OPENSEARCH_URL``,
    ``crm-audit --opensearch``); raises ValueError naming the bad one."""
    return _check_url_list([_check_url(part.strip()) for part in value.split(",") if part.strip()])


# Marks `urls` when the file sets `url` as well, so the error names opensearch.urls (and
# its line) rather than the whole section.
_URL_AND_URLS = object()

_REPLICA_RANGE_RE = re.compile(r"^(?P<min>\d{1,3})-(?P<max>\d{1,3}|all)$")
DEFAULT_REPLICAS = "0-1"


def _check_replicas(value: int | str) -> int | str:
    if isinstance(value, int):
        if not 0 <= value <= 100:
            raise ValueError(f"expected 0 to 100 replicas, got {value}")
        return value
    if value.isdigit():
        return _check_replicas(int(value))
    match = _REPLICA_RANGE_RE.match(value)
    if match is None:
        raise ValueError(
            f'expected a number of replicas or a range "MIN-MAX" / "MIN-all", got {value!r}'
        )
    if match["max"] != "all" and int(match["max"]) < int(match["min"]):
        raise ValueError(f"range {value!r}: MAX is below MIN")
    return value


class OpenSearchConfig(_Model):
    """Where and how to index, and how to authenticate to OpenSearch."""

    url: Annotated[str, AfterValidator(_check_url)] = Field(
        default="http://127.0.0.1:9200",
        description="OpenSearch base URL (http:// or https://); used when `urls` is not set "
        "(set one of them). The OPENSEARCH_URL environment variable overrides both "
        "(several URLs comma-separated).",
    )
    # Several nodes: a node that does not answer is skipped (and tried again later), so
    # losing one node of a cluster whose indices have replicas costs no batch.
    urls: list[Annotated[str, AfterValidator(_check_url)]] | None = Field(
        default=None,
        description="Several nodes of the one cluster, instead of `url`: requests are "
        "spread over them, and a node that does not answer is skipped until it answers "
        "again. Same scheme for all; TLS and credential settings apply to each.",
    )
    index_prefix: str = Field(
        default="crm-audit",
        description="Prefix of every index: <prefix>-events-<class>-<YYYY.MM>, "
        "<prefix>-batches-<class>-<YYYY.MM> (their events' signed bytes), "
        "<prefix>-deadletter, -alerts, -seals, -holds, -leases.",
    )
    # Limits of one _bulk request, which carries the writes of several batches (of any
    # agents) when they arrive while another is in flight (collector.bulkgroup).
    bulk_max_docs: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Documents per _bulk request (the writes of concurrent batches are "
        "merged up to this).",
    )
    bulk_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="Bytes per _bulk request (merged batches fill it: keep it within the "
        "cluster's http.max_content_length).",
    )
    request_timeout_s: float = Field(
        default=30, gt=0, le=600, description="Timeout of one OpenSearch request."
    )
    # _bulk requests in flight at once, over all agent streams (collector.index).
    bulk_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="_bulk requests in flight at once, shared by all agent streams.",
    )
    # Per batch: retries of 429/5xx/unreachable with exponential backoff, then
    # STATUS_RETRY to the agent (which resends: nothing is lost, only delayed).
    max_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Retries per batch of 429 / 5xx / unreachable answers (jittered "
        "exponential backoff) before the agent is told to resend later.",
    )
    retry_backoff_s: float = Field(
        default=0.5, gt=0, le=60, description="First retry delay; doubled per attempt."
    )
    retry_max_backoff_s: float = Field(
        default=8.0, gt=0, le=600, description="Upper bound of the retry delay."
    )
    # "0-1": no replica on one data node (nowhere to put it), one as soon as there are
    # two, so a cluster that loses a data node keeps every index writable.
    replicas: int | str = Field(
        default=DEFAULT_REPLICAS,
        description="Replicas of every index the collector creates (events, dead letters, "
        "seals, chain heads, alerts, holds, leases): a number, or a range "
        '"MIN-MAX" / "MIN-all" that OpenSearch fits to the number of data nodes '
        '(index.auto_expand_replicas). Default "0-1": none on a single node, one on two or '
        "more, so losing a data node leaves every index available. Caveat of ranges: "
        "while a node of a two-node cluster is away the remaining copies count as "
        "complete (health green) and the returning node copies its shards anew; a "
        "cluster that never shrinks to one data node can set 1. Applied to new indices; "
        "existing ones get it when setup installs a changed template (the single "
        "indices: at every setup).",
    )
    # Authentication (security plugin): basic auth and/or a client certificate.
    username: str | None = Field(
        default=None, description="Basic-auth user (security plugin); needs password_file."
    )
    password_file: Path | None = Field(
        default=None,
        description="File whose first line is the basic-auth password; chmod 600.",
    )
    ca: Path | None = Field(
        default=None,
        description="PEM CA bundle that signed the cluster's HTTP certificate "
        "(https:// URLs; verification is always on).",
    )
    client_cert: Path | None = Field(
        default=None, description="PEM client certificate for TLS client authentication."
    )
    client_key: Path | None = Field(
        default=None, description="Its unencrypted PEM private key; chmod 600."
    )
    # true: the collector installs templates and policies itself when it starts (needs
    # an admin-like role). false: it only checks that `crm-audit-collector setup` did,
    # and waits (batches get STATUS_RETRY) until it has — for the least-privilege
    # writer role of config/opensearch/security.
    setup_on_start: bool = Field(
        default=True,
        description="true: install templates and ISM policies on start (admin-like role). "
        "false: only check that `crm-audit-collector setup` did, answering STATUS_RETRY "
        "until then (for the crm_audit_writer role).",
    )

    _files = field_validator("password_file", "ca", "client_cert", "client_key", mode="before")(
        _resolve_file
    )

    @model_validator(mode="before")
    @classmethod
    def _url_or_urls(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "url" in data and "urls" in data:
            return {**data, "urls": _URL_AND_URLS}
        return data

    @field_validator("urls", mode="before")
    @classmethod
    def _not_with_url(cls, value: Any) -> Any:
        if value is _URL_AND_URLS:
            raise ValueError("set either url or urls, not both")
        return value

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_url_list(value)

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> int | str:
        # before pydantic's int|str union, which would take `true` for 1
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f'expected a number of replicas or a range "MIN-MAX", got {value!r}')
        return _check_replicas(value)

    @field_validator("password_file", "client_key")
    @classmethod
    def _secret_private(cls, path: Path) -> Path:
        mode = path.stat().st_mode
        if mode & stat.S_IROTH or mode & stat.S_IWOTH:
            raise ValueError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        return path

    @model_validator(mode="after")
    def _auth_consistent(self) -> OpenSearchConfig:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        uses_tls = any(v is not None for v in (self.ca, self.client_cert))
        if uses_tls and not self.all_urls[0].startswith("https://"):
            raise ValueError("ca / client_cert need an https:// url")
        return self

    @property
    def all_urls(self) -> tuple[str, ...]:
        """The nodes to use: `urls`, or the one `url`."""
        return tuple(self.urls) if self.urls is not None else (self.url,)

    def password(self) -> str | None:
        """The basic-auth password (first line of password_file), or None."""
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").splitlines()[0].strip()

    @field_validator("index_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError(
                "must be lowercase letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit, got {value!r}"
            )
        return value


def _load_policy(path: Path) -> Path:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read ISM policy {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON in {path}: line {exc.lineno}: {exc.msg}") from None
    policy = data.get("policy") if isinstance(data, dict) else None
    if not isinstance(policy, dict) or not isinstance(policy.get("states"), list):
        raise ValueError(f'{path}: expected {{"policy": {{"states": [...], ...}}}}')
    return path


class RetentionClass(_Model):
    """One retention class: its ISM policy file (the phases whoever enforces them) and
    the regulatory minimum no deletion may undercut."""

    policy: Path = Field(
        description='ISM policy JSON file ({"policy": {"states": [...]}}); the collector '
        "adds the ism_template for the class's indices. Its read_only/force_merge and "
        "delete ages are also what the collector's retention job applies."
    )
    minimum_days: float | None = Field(
        default=None,
        ge=0,
        description="Regulatory minimum retention in days (e.g. 2190 = 6 years): a policy "
        "deleting earlier is refused, and no index whose newest event is younger is ever "
        "deleted by the collector. Unset: no minimum.",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_file(cls, value: Any, info: ValidationInfo) -> Path:
        path = _load_policy(_resolve_file(value, info))
        try:
            phases_of(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return path

    @field_validator("minimum_days")
    @classmethod
    def _not_below_minimum(cls, value: float | None, info: ValidationInfo) -> float | None:
        policy = info.data.get("policy")
        if value is None or not isinstance(policy, Path):
            return value
        phases = phases_of(json.loads(policy.read_text(encoding="utf-8")))
        if phases.delete_days is not None and phases.delete_days < value:
            raise ValueError(
                f"the policy {policy.name} deletes after {phases.delete_days:g} days, "
                f"shorter than the minimum of {value:g} days"
            )
        return value

    def policy_body(self) -> dict[str, Any]:
        """The parsed policy file, ``{"policy": {...}}``."""
        data: dict[str, Any] = json.loads(self.policy.read_text(encoding="utf-8"))
        return data


_AUDIT_CATEGORY_NAMES = ("system_admin", "data_operation", "security", "unknown")


class RetentionRule(_Model):
    """Events matching every given condition go to `class`; the first matching rule wins.

    Within one condition the listed values are alternatives; ``source``, ``format`` and
    ``action`` are shell-style globs (``record.*``). A rule without conditions matches
    every event.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    retention_class: str = Field(
        alias="class", description="The retention class matching events go to."
    )
    audit_category: list[str] | None = Field(
        default=None,
        description="Audit categories: system_admin, data_operation, security, unknown.",
    )
    source: list[str] | None = Field(
        default=None, description="Globs on the source name (crm.source.name)."
    )
    format: list[str] | None = Field(
        default=None, description="Globs on the source format (crm.source.format)."
    )
    action: list[str] | None = Field(
        default=None, description='Globs on event.action, e.g. "record.*".'
    )

    @field_validator("audit_category")
    @classmethod
    def _categories(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in _AUDIT_CATEGORY_NAMES:
                raise ValueError(
                    f"unknown audit category {name!r} (one of {', '.join(_AUDIT_CATEGORY_NAMES)})"
                )
        return value


class RetentionConfig(_Model):
    """Retention classes, the rules routing events to them, and the index time cut."""

    default_class: str = Field(
        default="standard", description="Class of every event no rule matches."
    )
    granularity: Literal["monthly", "daily"] = Field(
        default="monthly",
        description="Index time cut by event time (UTC): <prefix>-events-<class>-YYYY.MM "
        "or -YYYY.MM.DD. Mind the shard budget over multi-year retention.",
    )
    classes: dict[str, RetentionClass] = Field(
        description="Retention classes by name (lowercase letters, digits, '_'; "
        "part of index names)."
    )
    enforcer: Literal["auto", "collector", "ism", "off"] = Field(
        default="auto",
        description="Who applies the classes' phases: ism (the cluster's ISM plugin), "
        "collector (the collector's retention job, one collector at a time), or auto: "
        "ism where every node has the plugin, collector otherwise. off: this process "
        "never runs the job (on a secured cluster the always-on collector, whose "
        "crm_audit_writer role may not delete; `retention run` from a timer with its "
        "own config and the crm_audit_retention role does it).",
    )
    interval_s: float = Field(
        default=3600,
        ge=1,
        le=7 * 86_400,
        description="How often the collector's retention job runs (and looks for "
        "deletions ISM made, to record them).",
    )
    lease_ttl_s: float = Field(
        default=900,
        ge=5,
        le=86_400,
        description="The retention job's lease in <prefix>-leases: another collector "
        "takes the job over once the holder was silent this long.",
    )
    dry_run: bool = Field(
        default=False,
        description="true: the job only logs what it would make read-only or delete.",
    )
    # First match wins; events no rule matches go to default_class.
    rules: list[RetentionRule] = Field(
        default=[],
        description="Routing rules; the first whose conditions all match wins. "
        "Changing them moves new events only.",
    )

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: dict[str, RetentionClass]) -> dict[str, RetentionClass]:
        if not value:
            raise ValueError("at least one retention class is required")
        for name in value:
            if not _CLASS_RE.match(name):
                raise ValueError(
                    f"class name {name!r} must be lowercase letters, digits or '_' "
                    "(it becomes part of index names)"
                )
        return value

    @model_validator(mode="after")
    def _default_exists(self) -> RetentionConfig:
        known = ", ".join(sorted(self.classes)) or "none"
        if self.default_class not in self.classes:
            raise ValueError(
                f"default_class {self.default_class!r} is not one of the classes ({known})"
            )
        for number, rule in enumerate(self.rules):
            if rule.retention_class not in self.classes:
                raise ValueError(
                    f"rules.{number}.class {rule.retention_class!r} is not one of the "
                    f"classes ({known})"
                )
        return self


class ServerConfig(_Model):
    """gRPC server limits."""

    max_concurrent_streams: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Open agent streams, one handler thread each (agents + slack).",
    )
    # Streams one agent (certificate CN) may hold open at once; more are refused with
    # RESOURCE_EXHAUSTED, so a noisy agent cannot take every handler thread.
    max_streams_per_agent: int = Field(
        default=2,
        ge=1,
        le=10_000,
        description="Streams one agent (certificate CN) may hold; more are refused with "
        "RESOURCE_EXHAUSTED and the agent retries.",
    )
    # Not below what agents are allowed to send (proto.limits): a smaller limit would
    # refuse a valid batch on every resend.
    max_message_bytes: int = Field(
        default=limits.MAX_MESSAGE_BYTES,
        ge=limits.MAX_MESSAGE_BYTES,
        le=1024 * 1024 * 1024,
        description="Largest Batch message accepted; at least the agents' wire limit "
        f"({limits.MAX_MESSAGE_BYTES} bytes).",
    )
    max_events_per_batch: int = Field(
        default=limits.MAX_BATCH_EVENTS,
        ge=1,
        le=1_000_000,
        description="Larger batches are refused (STATUS_REJECTED, 'batch too large'); "
        "the agent splits them in halves and sends them again.",
    )


def _resolve_path(value: Any, info: ValidationInfo) -> Path | None:
    """Resolve against the config dir; the path need not exist yet."""
    if value is None:
        return None
    if not isinstance(value, str | Path) or str(value) == "":
        raise ValueError("expected a path")
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("config_dir")
        if base is not None:
            path = Path(base) / path
    return path


def _resolve_dir(value: Any, info: ValidationInfo) -> Path | None:
    path = _resolve_path(value, info)
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(f"not a directory: {path}")
    return path


class IntegrityConfig(_Model):
    """Seal verification and signed checkpoints (see collector.gate)."""

    keys_dir: Path | None = Field(
        default=None,
        description="Directory of <agent_id>.pub files with the agents' Ed25519 public "
        "keys (`crm-audit keys register`); re-read when a file changes.",
    )
    require_seal: bool = Field(
        default=False,
        description="Unsealed batches (old agents): false = index them with an "
        '"unsealed" alert, true = reject them.',
    )
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Where signed checkpoints are appended (WORM storage in production); "
        "unset: no checkpoints.",
    )
    checkpoint_interval_s: float = Field(
        default=300, ge=1, le=86_400, description="How often a checkpoint is appended."
    )
    collector_key: Path | None = Field(
        default=None,
        description="The collector's Ed25519 checkpoint key, created 0600 on first start. "
        "Default: <checkpoint_dir>/collector-signing-key.pem.",
    )

    _dirs = field_validator("keys_dir", "checkpoint_dir", mode="before")(_resolve_dir)
    _key = field_validator("collector_key", mode="before")(_resolve_path)

    def checkpoint_key(self) -> Path | None:
        """The collector key path, or None when checkpoints are off."""
        if self.checkpoint_dir is None:
            return None
        return self.collector_key or self.checkpoint_dir / "collector-signing-key.pem"


def _listen_address(value: str) -> str:
    match = _LISTEN_RE.match(value)
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"expected HOST:PORT (IPv6 as [addr]:PORT), got {value!r}")
    return value


class MetricsConfig(_Model):
    """The health / Prometheus endpoint (collector.health); off unless `listen` is set."""

    listen: Annotated[str, AfterValidator(_listen_address)] | None = Field(
        default=None,
        description="HOST:PORT of /healthz and /metrics (plain HTTP), e.g. 127.0.0.1:9464; "
        "keep it on loopback or a management network. Unset: off.",
    )
    health_check_interval_s: float = Field(
        default=5, gt=0, le=600, description="/healthz re-checks OpenSearch at most this often."
    )


class CollectorConfig(_Model):
    """The whole `collector.yaml`."""

    listen: str = Field(
        default="127.0.0.1:4317",
        description="gRPC listen address HOST:PORT (IPv6 as [addr]:PORT); agents connect "
        "here with mTLS.",
    )
    tls: TlsConfig = Field(description="mTLS: server certificate, key and the agents' CA.")
    opensearch: OpenSearchConfig = Field(
        default=OpenSearchConfig(), description="Where and how to index."
    )
    retention: RetentionConfig = Field(
        description="Retention classes (ISM policies) and the rules routing events to them."
    )
    server: ServerConfig = Field(default=ServerConfig(), description="gRPC server limits.")
    integrity: IntegrityConfig = Field(
        default=IntegrityConfig(), description="Seal verification and signed checkpoints."
    )
    # Optional: absent (or without `rules`) means no detection (collector.detect).
    detection: DetectionConfig = Field(
        default=DetectionConfig(),
        description="Detection rules and notifiers; absent or without `rules`: off.",
    )
    metrics: MetricsConfig = Field(
        default=MetricsConfig(), description="Health and Prometheus metrics endpoint."
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen_address(value)


def load_config_and_secrets(
    path: Path, env: Mapping[str, str] | None = None
) -> tuple[CollectorConfig, frozenset[KeyPath]]:
    """Validate `path` (``${NAME}`` taken from `env`); return the config and the key
    paths whose values were substituted, for `proto.yamlconfig.dump_effective`.

    Raises `ConfigError` with every problem, one line each.
    """
    loaded = load(path, CollectorConfig, env)
    if loaded.config is None:
        raise ConfigError(loaded.problems)
    if loaded.config.detection.rules is not None:
        # The rules file reports its own problems (rules.yaml:LINE: rules.3.window: ...).
        load_rules(loaded.config.detection.rules)
    return loaded.config, loaded.secret_paths


def load_config(path: Path, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """Validate `path`; raise `ConfigError` with every problem, one line each."""
    return load_config_and_secrets(path, env)[0]


def with_opensearch_url(config: CollectorConfig, url: str) -> CollectorConfig:
    """Return `config` with ``opensearch.url`` / ``urls`` replaced by `url`, one URL or
    several comma-separated (validated like the file's values)."""
    try:
        checked = split_urls(url)
        if checked[0].startswith("http://") and any(
            v is not None for v in (config.opensearch.ca, config.opensearch.client_cert)
        ):
            raise ValueError("opensearch.ca / client_cert need https:// URLs")
    except ValueError as exc:
        raise ConfigError([f"OPENSEARCH_URL: {exc}"]) from None
    update: dict[str, Any] = (
        {"url": checked[0], "urls": None} if len(checked) == 1 else {"urls": checked}
    )
    return config.model_copy(update={"opensearch": config.opensearch.model_copy(update=update)})
