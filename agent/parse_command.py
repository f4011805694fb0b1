"""`crm-audit-agent parse`: show what the configured parsers make of log files, ship nothing.

For admins tuning a source before deploying it (the way `vector tap` or `logstash -t`
are used): each file is framed and parsed exactly as the running agent would — same
format, mapping, options (incl. privacy) and framer — and every normalized event is
printed as one JSON line (`google.protobuf.json_format.MessageToDict`, proto field
names). A summary per source goes to stderr, with what did not map: mapping errors by
target field, unknown actions and (for formats configured by a mapping) the record
paths no rule used, each with its count, most frequent first. `--strict` makes any of
those exit 1, so a CI job can hold back a mapping that leaves something behind.
Nothing is shipped, no state is written, no TLS file is read.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel

from agent.config import AgentConfig, SourceConfig
from agent.parsers import FORMATS, ParseFn, get_framer, get_parser
from agent.parsers.framing import Framer, Record
from agent.parsers.mapping.compile import count_failed_targets
from agent.tail.scan import resolve
from proto.v1 import audit_pb2 as pb

MAX_LINE_BYTES = 1_048_576  # the tailer's limit: longer lines are cut and flagged
LISTED = 20  # names listed per kind of problem; the rest is counted


@dataclass(frozen=True, slots=True)
class Parsed:
    """One event and the record it came from."""

    event: pb.AuditEvent
    record: Record


def iter_lines(data: bytes) -> Iterator[tuple[bytes, int, int, bool]]:
    """(line without newline, offset, end offset, truncated) of every line of `data`.

    A last line without a newline is included (a file read whole is complete).
    """
    offset = 0
    size = len(data)
    while offset < size:
        end = data.find(b"\n", offset)
        stop = size if end < 0 else end
        line = data[offset:stop]
        truncated = len(line) > MAX_LINE_BYTES
        yield line[:MAX_LINE_BYTES], offset, (size if end < 0 else end + 1), truncated
        offset = size if end < 0 else end + 1


def parse_bytes(data: bytes, parse: ParseFn, framer: Framer) -> Iterator[Parsed]:
    """Frame and parse a whole file's content, as the agent's reading side does."""
    for line, offset, end, truncated in iter_lines(data):
        for record in framer.feed(line, offset, end, truncated):
            yield from _parsed(record, parse)
    for record in framer.flush():
        yield from _parsed(record, parse)


def _parsed(record: Record, parse: ParseFn) -> Iterator[Parsed]:
    event = parse(record.data)
    if event is None:
        return
    if record.truncated and "line_truncated" not in event.flags:
        event.flags.append("line_truncated")
    event.log.offset = record.offset
    yield Parsed(event, record)


def parse_file(
    path: Path,
    format_name: str,
    mapping: Mapping[str, Any] | None = None,
    options: BaseModel | None = None,
    source_name: str = "",
    actions: Mapping[str, Any] | None = None,
) -> list[pb.AuditEvent]:
    """Every event of the file at `path` read with one source's settings."""
    parse = get_parser(format_name, mapping or {}, options, actions)
    framer = get_framer(format_name, options)
    events = []
    for item in parse_bytes(path.read_bytes(), parse, framer):
        item.event.log.file_path = str(path)
        item.event.log.source_name = source_name
        item.event.log.format = format_name
        events.append(item.event)
    return events


def source_files(source: SourceConfig) -> list[Path]:
    """The files the agent would tail for `source` now (same globbing and excludes)."""
    return [Path(p) for p in resolve(source.paths, source.exclude)]


@dataclass
class Summary:
    """What one source's files gave, and what did not map."""

    events: int = 0
    files: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    failed_fields: Counter[str] = field(default_factory=Counter)
    unknown_actions: Counter[str] = field(default_factory=Counter)
    unmapped_paths: Counter[str] = field(default_factory=Counter)

    def add(self, event: pb.AuditEvent, mapped: bool) -> None:
        self.events += 1
        self.flags.update(event.flags)
        if "unknown_action" in event.flags:
            self.unknown_actions[event.action] += 1
        if mapped:
            # In a mapped format every attribute is a record path no rule used.
            self.unmapped_paths.update(event.attributes.keys())

    @property
    def unmapped(self) -> bool:
        return bool(self.failed_fields or self.unknown_actions or self.unmapped_paths)

    def lines(self, name: str) -> list[str]:
        head = (
            f"{name}: {self.events} events ({self.flags['parse_error']} with parse_error) "
            f"from {self.files} files"
        )
        out = [head]
        for label, counts in (
            ("mapping errors by field", self.failed_fields),
            ("unknown actions", self.unknown_actions),
            ("unmapped paths", self.unmapped_paths),
            ("flags", self.flags),
        ):
            if counts:
                out.append(f"{name}:   {label}: {_ranked(counts)}")
        return out


def _ranked(counts: Counter[str]) -> str:
    """`name count, …`, most frequent first (ties by name), the tail summed up."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{name} {count}" for name, count in ranked[:LISTED])
    if len(ranked) > LISTED:
        text += f", … and {len(ranked) - LISTED} more"
    return text


def run_parse(
    config: AgentConfig,
    source: str | None,
    files: list[Path],
    out: TextIO,
    *,
    strict: bool = False,
) -> int:
    """Print the events of the sources' files (or of `files` with one source's settings).

    Exit code 0; 1 with `strict` when anything did not map (mapping errors, unknown
    actions, unmapped record paths); 2 for a user mistake (unknown source, unreadable
    file), reported as one line on stderr.
    """
    sources = {s.name: s for s in config.sources}
    if source is not None and source not in sources:
        known = ", ".join(sorted(sources))
        print(
            f"crm-audit-agent parse: unknown source {source!r} (sources: {known})", file=sys.stderr
        )
        return 2
    if files and source is None:
        if len(sources) != 1:
            print(
                "crm-audit-agent parse: name the source whose settings apply to the files "
                "with --source (the config has several)",
                file=sys.stderr,
            )
            return 2
        source = next(iter(sources))
    chosen = [sources[source]] if source is not None else list(config.sources)
    missing = [f for f in files if not f.is_file()]
    if missing:
        for path in missing:
            print(f"crm-audit-agent parse: {path}: no such file", file=sys.stderr)
        return 2
    unmapped = False
    for src in chosen:
        paths = files or source_files(src)
        summary = Summary(files=len(paths))
        mapped = bool(FORMATS[src.format].fields)
        for path in paths:
            try:
                with count_failed_targets() as failed:
                    events = parse_file(
                        path, src.format, src.mapping, src.parsed_options(), src.name, src.actions
                    )
            except OSError as exc:
                print(f"crm-audit-agent parse: {path}: {exc.strerror}", file=sys.stderr)
                return 2
            summary.failed_fields.update(failed)
            for event in events:
                out.write(json.dumps(_as_dict(event), ensure_ascii=False) + "\n")
                summary.add(event, mapped)
        for line in summary.lines(src.name):
            print(line, file=sys.stderr)
        unmapped = unmapped or summary.unmapped
    return 1 if strict and unmapped else 0


def _as_dict(event: pb.AuditEvent) -> dict[str, object]:
    return MessageToDict(event, preserving_proto_field_name=True)
