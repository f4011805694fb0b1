"""Format name → parser. Parsers are pure: one line of bytes in, one AuditEvent out.

A parser never sees files, offsets or the network; the pipeline adds sequence,
observer, observed time and log origin. Adding a format = one module plus one entry
in `FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from agent.parsers import jsonlines
from agent.parsers.framing import Framer, LineFramer
from proto.v1 import audit_pb2 as pb

ParseFn = Callable[[bytes], pb.AuditEvent | None]
"""Parse one line (newline stripped). None means "nothing here" (a blank line)."""


class NoOptions(BaseModel):
    """Options of a format that has none: any key given is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Format:
    """A log format: its name, the schema fields a mapping may override, a parser factory,
    and how its lines group into records (one line, one record unless it says otherwise)."""

    name: str
    fields: frozenset[str]
    make_parser: Callable[[Mapping[str, str], BaseModel], ParseFn]
    make_framer: Callable[[BaseModel], Framer] = lambda _options: LineFramer()
    # The source's `options:` block is validated against this model (key paths
    # `sources.N.options.KEY`); the validated instance reaches both factories.
    options_model: type[BaseModel] = NoOptions


FORMATS: Mapping[str, Format] = {
    jsonlines.NAME: Format(
        jsonlines.NAME, jsonlines.FIELDS, lambda mapping, _options: jsonlines.make_parser(mapping)
    ),
}


def get_parser(
    format_name: str, mapping: Mapping[str, str], options: BaseModel | None = None
) -> ParseFn:
    """The parser for `format_name` with the source's mapping overrides and options."""
    fmt = FORMATS[format_name]
    return fmt.make_parser(mapping, options if options is not None else fmt.options_model())


def get_framer(format_name: str, options: BaseModel | None = None) -> Framer:
    """A fresh framer (one per file) for `format_name`."""
    fmt = FORMATS[format_name]
    return fmt.make_framer(options if options is not None else fmt.options_model())


__all__ = ["FORMATS", "Format", "NoOptions", "ParseFn", "get_framer", "get_parser"]
