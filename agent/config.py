"""The agent's YAML config: pydantic models (defaults live here) plus `load_config`.

Every problem is reported at once, one line each, as `file:line: key.path: message`
(proto.yamlconfig). Relative paths resolve against the config file's directory. TLS
files are checked here — present, readable, parseable PEM — and the client
certificate's CN must equal `agent_id`, because the collector takes the agent's
identity from that certificate and rejects batches claiming another.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.errors import ConfigError
from agent.parsers import FORMATS
from agent.parsers.mapping import check as mapping_check
from proto import limits, yamlconfig

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _config_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("config_dir", Path.cwd()))


def _resolve(value: Path, info: ValidationInfo) -> Path:
    return value if value.is_absolute() else _config_dir(info) / value


def _readable_file(path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable: {path}")
    return path


def _read(path: Path) -> bytes:
    try:
        return _readable_file(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"not readable: {path}: {exc.strerror}") from None


# False while loading for a command that sends nothing (`parse`): the TLS files of the
# host the config was written for need not exist where the admin tries the mapping.
_CHECK_TLS_FILES: ContextVar[bool] = ContextVar("check_tls_files", default=True)


@contextmanager
def _tls_files_checked(check: bool) -> Iterator[None]:
    token = _CHECK_TLS_FILES.set(check)
    try:
        yield
    finally:
        _CHECK_TLS_FILES.reset(token)


class TLSConfig(_Model):
    """Client side of mTLS: CA bundle to verify the collector, our certificate and key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    @field_validator("ca", "cert")
    @classmethod
    def _certificate(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not _CHECK_TLS_FILES.get():
            return path
        data = _read(path)
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ValueError(f"not a PEM certificate: {path}") from None
        return path

    @field_validator("key")
    @classmethod
    def _private_key(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not _CHECK_TLS_FILES.get():
            return path
        data = _read(path)
        try:
            load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            # Never echo the content: it is (or resembles) key material.
            raise ValueError(f"not an unencrypted PEM private key: {path}") from None
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(
                f"private key {path} is accessible to group or other users "
                f"(mode {mode:04o}); chmod 600 it"
            )
        return path


class RetryConfig(_Model):
    """Exponential backoff with jitter between reconnects / resends."""

    initial_s: float = Field(0.5, gt=0, le=60)
    max_s: float = Field(30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


def _endpoint(value: str) -> str:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})", value)
    if match is None or not 0 < int(match.group(2)) < 65_536:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


def endpoint_host(endpoint: str) -> str:
    """The host part of "host:port" (brackets of an IPv6 literal removed)."""
    return endpoint.rsplit(":", 1)[0].strip("[]")


class CollectorConfig(_Model):
    """Where and how to ship: `endpoints` are tried in order, failing over to the next
    one whenever the current one fails; `endpoint` is the one-element shorthand."""

    endpoint: Annotated[str, AfterValidator(_endpoint)] | None = None
    endpoints: list[Annotated[str, AfterValidator(_endpoint)]] = []
    server_name: str | None = None  # TLS name to verify; default: host part of each endpoint
    tls: TLSConfig
    max_in_flight: int = Field(4, ge=1, le=64)
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _one_way_to_name_endpoints(self) -> CollectorConfig:
        if self.endpoint is None and not self.endpoints:
            raise ValueError("set endpoints (a list of host:port) or endpoint")
        if self.endpoint is not None and self.endpoints:
            raise ValueError("set either endpoint or endpoints, not both")
        return self

    @property
    def all_endpoints(self) -> tuple[str, ...]:
        return (self.endpoint,) if self.endpoint is not None else tuple(self.endpoints)

    def tls_name(self, endpoint: str) -> str:
        return self.server_name or endpoint_host(endpoint)


class BatchConfig(_Model):
    """A batch is closed by whichever limit is reached first."""

    # Bounded by what every collector accepts (proto.limits): a batch always fits the
    # collector's gRPC message limit, even a lone maximal event.
    max_events: int = Field(500, ge=1, le=limits.MAX_BATCH_EVENTS)
    max_bytes: int = Field(1_048_576, ge=1024, le=limits.MAX_BATCH_BYTES)
    max_wait_s: float = Field(1.0, gt=0, le=1.0)


def _regex(value: str) -> str:
    try:
        re.compile(value.encode())
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


class MultilineConfig(_Model):
    """Join lines into records: a record starts at a line matching `start_pattern`
    (a Python regex searched in the line); other lines continue the record before."""

    start_pattern: Annotated[str, AfterValidator(_regex)]
    timeout_s: float = Field(2.0, gt=0, le=600)  # a held record is emitted after this idle time
    max_lines: int = Field(1000, ge=1, le=100_000)


class SourceConfig(_Model):
    """A set of files of one format."""

    name: Annotated[str, Field(pattern=_NAME)]
    format: str
    paths: list[str] = Field(min_length=1)
    exclude: list[str] = []
    # jsonlines and regex: target field → rule of the mapping language (a path, or
    # path/const with values/default/when/each, or a list of alternatives); see
    # [mapping.md](mapping.md).
    mapping: dict[str, Any] = {}
    # jsonlines and regex: the source's action names → canonical actions of the built-in
    # vocabulary, or new ones with their categories; see [mapping.md](mapping.md#actions).
    actions: dict[str, Any] = {}
    # Format-specific settings, validated by the format's own options model
    # (see agent.parsers.Format.options_model); kept validated in `parsed_options`.
    # Validated when absent too: a format with a required option (mariadb_audit's
    # timezone) must fail `check`, not the parser's start.
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    poll_interval_s: float = Field(0.25, gt=0, le=60)
    # Files found at the first start without a checkpoint: read from the beginning or
    # only what is appended from now on. Files appearing later are always read whole.
    start_at: Literal["beginning", "end"] = "beginning"
    close_inactive_s: float = Field(300.0, gt=0, le=86_400)  # idle open file is closed
    close_rotated_after_s: float = Field(5.0, ge=0, le=3600)  # rotated/deleted: idle at EOF
    max_line_bytes: int = Field(1_048_576, ge=1024, le=limits.MAX_LINE_BYTES)  # proto.limits
    multiline: MultilineConfig | None = None
    # Directory of the config file (from the validation context), kept so that
    # `parsed_options` resolves relative paths in options the same way validation did.
    _config_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _remember_config_dir(self, info: ValidationInfo) -> SourceConfig:
        if info.context and "config_dir" in info.context:
            self._config_dir = Path(info.context["config_dir"])
        return self

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r} (known: {', '.join(sorted(FORMATS))})")
        return value

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [str(_resolve(Path(p), info)) for p in value]

    @field_validator("mapping", "actions")
    @classmethod
    def _mapping_compiles(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        fmt = FORMATS.get(info.data.get("format", ""))
        if fmt is None or not value:
            return value
        key = info.field_name
        mapping = value if key == "mapping" else {}
        actions = value if key == "actions" else {}
        problems = [(loc[1:], msg) for loc, msg in mapping_check(mapping, actions, fmt.fields)]
        if problems:
            # One error per problem, each at its own key path (sources.N.mapping.…).
            raise ValidationError.from_exception_data(
                "mapping",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("mapping", "{message}", {"message": message}),
                        loc=loc,
                        input=None,
                    )
                    for loc, message in problems
                ],
            )
        return value

    @field_validator("options")
    @classmethod
    def _format_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        fmt = FORMATS.get(info.data.get("format", ""))
        if fmt is None:
            return value
        try:
            # The context carries `config_dir`: relative paths in options (e.g.
            # privacy.pseudonymize.key_file) resolve against the config file's directory.
            fmt.options_model.model_validate(value, context=info.context)
        except ValidationError as exc:
            # One message for the `options` key, each problem with its sub-key path.
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(options)"
                if err["type"] == "extra_forbidden":
                    message = "unknown key"
                elif err["type"] == "missing":
                    key = str(err["loc"][0]) if err["loc"] else ""
                    required = fmt.options_model.model_fields.get(key)
                    why = required.description if required is not None else None
                    message = f"required by format {fmt.name}" + (f": {why}" if why else "")
                else:
                    message = err["msg"]
                problems.append(f"{where}: {message.removeprefix('Value error, ')}")
            raise ValueError("; ".join(problems)) from None
        return value

    def parsed_options(self) -> BaseModel:
        """The options as the format's validated model."""
        context: dict[str, Any] = {"source_name": self.name}
        if self._config_dir is not None:
            context["config_dir"] = self._config_dir
        return FORMATS[self.format].options_model.model_validate(self.options, context=context)


class SpoolConfig(_Model):
    """The on-disk queue between reading and shipping (state_dir/spool)."""

    # When the spool holds this much, reading pauses (offsets stay put) until acks free room.
    max_bytes: int = Field(1 << 30, ge=65_536, le=1 << 40)
    # Segment files are deleted whole once every record in them is acked.
    segment_bytes: int = Field(16 << 20, ge=4096, le=1 << 30)

    @model_validator(mode="after")
    def _segments_fit(self) -> SpoolConfig:
        if self.segment_bytes * 2 > self.max_bytes:
            raise ValueError("segment_bytes must be at most half of max_bytes")
        return self


class IntegrityConfig(_Model):
    """Tamper evidence (agent.sealing): the signing key and chain live in state_dir."""

    # While nothing is sent, a signed heartbeat restating the chain head goes out this
    # often, so the collector can tell a quiet agent from a silenced one.
    heartbeat_interval_s: float = Field(60.0, gt=0, le=3600)


def _listen(value: str) -> str:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})", value)
    if match is None or int(match.group(2)) > 65_535:
        raise ValueError(f"expected HOST:PORT (IPv6 as [addr]:PORT), got {value!r}")
    return value


class MetricsConfig(_Model):
    """The Prometheus endpoint (agent.metrics); off unless `listen` is set."""

    # HOST:PORT, e.g. 127.0.0.1:9465 (port 0: any free port). Plain HTTP, no
    # authentication: keep it on loopback.
    listen: Annotated[str, AfterValidator(_listen)] | None = None


class LoggingConfig(_Model):
    """Log output on stderr; `--log-format` / `--log-level` override these."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AgentConfig(_Model):
    """The whole agent config file."""

    agent_id: Annotated[str, Field(pattern=_NAME)]
    state_dir: Path
    collector: CollectorConfig
    batch: BatchConfig = BatchConfig()
    spool: SpoolConfig = SpoolConfig()
    integrity: IntegrityConfig = IntegrityConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: list[SourceConfig] = Field(min_length=1)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if path.exists() and not path.is_dir():
            raise ValueError(f"not a directory: {path}")
        return path

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate source names: {', '.join(duplicates)}")
        return value


def certificate_cn(path: Path) -> str | None:
    """The subject CN of the first certificate in a PEM file (None when it has none)."""
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value: Any = names[0].value if names else None
    return value if isinstance(value, str) else None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate `path`; raise ConfigError with every problem, one line each."""
    return load_config_and_secrets(path, env)[0]


def load_config_and_secrets(
    path: Path, env: Mapping[str, str] | None = None, *, tls_files: bool = True
) -> tuple[AgentConfig, frozenset[yamlconfig.KeyPath]]:
    """`load_config` plus the key paths filled by ${...} substitution (to mask them when
    the effective config is printed). `env`: the variables ${NAME} may use.
    `tls_files=False` (for `parse`, which sends nothing) skips reading the TLS files and
    the certificate's CN check; everything else is validated as always."""
    with _tls_files_checked(tls_files):
        loaded = yamlconfig.load(path, AgentConfig, env)
    config = loaded.config
    if config is None:
        raise ConfigError(loaded.problems)
    if not tls_files:
        return config, loaded.secret_paths
    cn = certificate_cn(config.collector.tls.cert)
    if cn != config.agent_id:
        _, lines, _ = yamlconfig.load_yaml(path)
        line = lines.get(("agent_id",))
        where = f"{path}:{line}" if line is not None else str(path)
        raise ConfigError(
            [
                f"{where}: agent_id: {config.agent_id!r} does not match the CN {cn!r} "
                f"of the client certificate {config.collector.tls.cert}"
            ]
        )
    return config, loaded.secret_paths
