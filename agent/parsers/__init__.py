"""Format name → parser. Parsers are pure: one record of bytes in, one AuditEvent out.

A parser never sees files, offsets or the network; the pipeline adds sequence,
observer, observed time and log origin. Adding a format = one module plus one entry
in `FORMATS`. Every parser returned by `get_parser` never raises (an unexpected error
becomes a "parse_error" event) and applies the source's `privacy:` options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from agent.parsers.framing import Framer, LineFramer
from agent.parsers.options import FormatOptions, finish
from proto.v1 import audit_pb2 as pb

ParseFn = Callable[[bytes], pb.AuditEvent | None]
"""Parse one record (newline stripped). None means "nothing here" (a blank line)."""
Encoder = Callable[[bytes, bytes, int, int], tuple[bytes, int] | None]
"""(record, file stamp, observed_unix_nano, offset) → the stamped event's deterministic
bytes without sequence and stream id, and its effective time; None where the record is
parsed with the source's ParseFn instead (agent.native: the compiled kernel)."""

_O = TypeVar("_O", bound=BaseModel)
_R = TypeVar("_R")


class NoOptions(BaseModel):
    """Options of a format that has none: any key given is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Format:
    """A log format: its name, the schema fields a mapping may override, a parser factory
    (mapping, options, actions), and how its lines group into records (one line, one
    record unless it says otherwise)."""

    name: str
    fields: frozenset[str]
    make_parser: Callable[[Mapping[str, Any], BaseModel, Mapping[str, Any]], ParseFn]
    make_framer: Callable[[BaseModel], Framer] = lambda _options: LineFramer()
    # The source's `options:` block is validated against this model (key paths
    # `sources.N.options.KEY`); the validated instance reaches both factories.
    options_model: type[BaseModel] = NoOptions


def _typed(
    model: type[_O], factory: Callable[[Mapping[str, Any], _O, Mapping[str, Any]], _R]
) -> Callable[[Mapping[str, Any], BaseModel, Mapping[str, Any]], _R]:
    """Adapt a factory taking its own options model to the registry's signature."""

    def make(mapping: Mapping[str, Any], options: BaseModel, actions: Mapping[str, Any]) -> _R:
        if not isinstance(options, model):
            options = model.model_validate(options.model_dump())
        return factory(mapping, options, actions)

    return make


def _framer(model: type[_O], factory: Callable[[_O], Framer]) -> Callable[[BaseModel], Framer]:
    def make(options: BaseModel) -> Framer:
        if not isinstance(options, model):
            options = model.model_validate(options.model_dump())
        return factory(options)

    return make


def _format(
    name: str,
    fields: frozenset[str],
    model: type[_O],
    parser: Callable[[Mapping[str, Any], _O], ParseFn],
    framer: Callable[[_O], Framer] | None = None,
) -> Format:
    """A format whose parser sets its own actions (no `actions` table)."""
    return _mapped_format(
        name, fields, model, lambda mapping, options, _actions: parser(mapping, options), framer
    )


def _mapped_format(
    name: str,
    fields: frozenset[str],
    model: type[_O],
    parser: Callable[[Mapping[str, Any], _O, Mapping[str, Any]], ParseFn],
    framer: Callable[[_O], Framer] | None = None,
) -> Format:
    make_parser = _typed(model, parser)
    return Format(
        name,
        fields,
        lambda mapping, options, actions: finish(
            make_parser(mapping, options, actions), name, options
        ),
        _framer(model, framer) if framer is not None else (lambda _options: LineFramer()),
        model,
    )


def _jsonlines() -> Format:
    from agent.parsers import jsonlines

    return _mapped_format(
        jsonlines.NAME,
        jsonlines.FIELDS,
        FormatOptions,
        lambda mapping, _options, actions: jsonlines.make_parser(mapping, actions),
    )


def _pgaudit() -> Format:
    from agent.parsers import pgaudit

    return _format(
        pgaudit.NAME,
        pgaudit.FIELDS,
        pgaudit.PgauditOptions,
        pgaudit.make_parser,
        pgaudit.make_framer,
    )


def _mariadb() -> Format:
    from agent.parsers import mariadb

    return _format(mariadb.NAME, mariadb.FIELDS, mariadb.MariadbOptions, mariadb.make_parser)


def _mysql_enterprise() -> Format:
    from agent.parsers import mysql

    return _format(
        mysql.ENTERPRISE,
        mysql.FIELDS,
        FormatOptions,
        mysql.make_enterprise_parser,
        mysql.make_enterprise_framer,
    )


def _percona() -> Format:
    from agent.parsers import mysql

    return _format(mysql.PERCONA, mysql.FIELDS, FormatOptions, mysql.make_percona_parser)


def _salesforce_elf() -> Format:
    from agent.parsers import salesforce

    return _format(
        salesforce.ELF,
        salesforce.FIELDS,
        FormatOptions,
        salesforce.make_elf_parser,
        salesforce.make_elf_framer,
    )


def _salesforce_json() -> Format:
    from agent.parsers import salesforce

    return _format(salesforce.JSON, salesforce.FIELDS, FormatOptions, salesforce.make_json_parser)


def _regex() -> Format:
    from agent.parsers import regex

    return _mapped_format(regex.NAME, regex.FIELDS, regex.RegexOptions, regex.make_parser)


class _Formats(Mapping[str, Format]):
    """Format name → Format, each format's module imported the first time its name is
    looked up: an agent holds the parsers its sources use, not all of them (the database
    parsers and their SQL tables cost memory a JSON-lines host never needs)."""

    def __init__(self, factories: Mapping[str, Callable[[], Format]]) -> None:
        self._factories = dict(factories)
        self._loaded: dict[str, Format] = {}

    def __getitem__(self, name: str) -> Format:
        found = self._loaded.get(name)
        if found is None:
            found = self._factories[name]()
            assert found.name == name, (found.name, name)
            self._loaded[name] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


FORMATS: Mapping[str, Format] = _Formats(
    {
        "jsonlines": _jsonlines,
        "pgaudit": _pgaudit,
        "mariadb_audit": _mariadb,
        "mysql_enterprise_audit": _mysql_enterprise,
        "percona_audit": _percona,
        "salesforce_elf": _salesforce_elf,
        "salesforce_json": _salesforce_json,
        "regex": _regex,
    }
)


def get_parser(
    format_name: str,
    mapping: Mapping[str, Any],
    options: BaseModel | None = None,
    actions: Mapping[str, Any] | None = None,
) -> ParseFn:
    """The parser for `format_name` with the source's mapping overrides, options and
    action vocabulary (agent.parsers.mapping.MappingError when they do not compile)."""
    fmt = FORMATS[format_name]
    chosen = options if options is not None else fmt.options_model()
    return fmt.make_parser(mapping, chosen, actions or {})


def get_source(
    format_name: str,
    mapping: Mapping[str, Any],
    options: BaseModel | None = None,
    actions: Mapping[str, Any] | None = None,
) -> tuple[ParseFn, Encoder | None]:
    """What the agent's pipeline reads a source with: its parser, and the compiled
    kernel's encoder where the kernel takes the source — a `jsonlines` source without
    `privacy:` options (privacy rules apply to parsed events, in Python) whose mapping
    it maps. The parser then gets only what the encoder leaves, so it is Python's."""
    if format_name == "jsonlines" and getattr(options, "privacy", None) is None:
        from agent.parsers import jsonlines

        parse, encode = jsonlines.make_source(mapping, actions)
        chosen = options if options is not None else FORMATS[format_name].options_model()
        return finish(parse, format_name, chosen), encode
    return get_parser(format_name, mapping, options, actions), None


def get_framer(format_name: str, options: BaseModel | None = None) -> Framer:
    """A fresh framer (one per file) for `format_name`."""
    fmt = FORMATS[format_name]
    return fmt.make_framer(options if options is not None else fmt.options_model())


__all__ = [
    "FORMATS",
    "Encoder",
    "Format",
    "NoOptions",
    "ParseFn",
    "get_framer",
    "get_parser",
    "get_source",
]
