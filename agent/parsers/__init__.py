"""Format name → parser. Parsers are pure: one line of bytes in, one AuditEvent out.

A parser never sees files, offsets or the network; the pipeline adds sequence,
observer, observed time and log origin. Adding a format = one module plus one entry
in `FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.parsers import jsonlines
from agent.parsers.framing import Framer, LineFramer
from proto.v1 import audit_pb2 as pb

ParseFn = Callable[[bytes], pb.AuditEvent | None]
"""Parse one line (newline stripped). None means "nothing here" (a blank line)."""


@dataclass(frozen=True, slots=True)
class Format:
    """A log format: its name, the schema fields a mapping may override, a parser factory,
    and how its lines group into records (one line, one record unless it says otherwise)."""

    name: str
    fields: frozenset[str]
    make_parser: Callable[[Mapping[str, str]], ParseFn]
    make_framer: Callable[[], Framer] = LineFramer


FORMATS: Mapping[str, Format] = {
    jsonlines.NAME: Format(jsonlines.NAME, jsonlines.FIELDS, jsonlines.make_parser),
}


def get_parser(format_name: str, mapping: Mapping[str, str]) -> ParseFn:
    """The parser for `format_name` with the source's mapping overrides applied."""
    return FORMATS[format_name].make_parser(mapping)


def get_framer(format_name: str) -> Framer:
    """A fresh framer (one per file) for `format_name`."""
    return FORMATS[format_name].make_framer()


__all__ = ["FORMATS", "Format", "ParseFn", "get_framer", "get_parser"]
