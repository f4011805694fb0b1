"""`crm-audit-agent parse`: show what the configured parsers make of log files, ship nothing.

For admins tuning a source before deploying it (the way `vector tap` or `logstash -t`
are used): each file is framed and parsed exactly as the running agent would — same
format, mapping, options (incl. privacy) and framer — and every normalized event is
printed as one JSON line (`google.protobuf.json_format.MessageToDict`, proto field
names). A summary per source goes to stderr. Nothing is shipped, no state is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel

from agent.config import AgentConfig, SourceConfig
from agent.parsers import ParseFn, get_framer, get_parser
from agent.parsers.framing import Framer, Record
from agent.tail.scan import resolve
from proto.v1 import audit_pb2 as pb

MAX_LINE_BYTES = 1_048_576  # the tailer's limit: longer lines are cut and flagged


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
    mapping: dict[str, str] | None = None,
    options: BaseModel | None = None,
    source_name: str = "",
) -> list[pb.AuditEvent]:
    """Every event of the file at `path` read with one source's settings."""
    parse = get_parser(format_name, mapping or {}, options)
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


def run_parse(config: AgentConfig, source: str | None, files: list[Path], out: TextIO) -> int:
    """Print the events of the sources' files (or of `files` with one source's settings).

    Exit code 0, or 2 for a user mistake (unknown source, unreadable file), reported as
    one line on stderr.
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
    for src in chosen:
        paths = files or source_files(src)
        count = errors = mismatched = 0
        for path in paths:
            try:
                events = parse_file(path, src.format, src.mapping, src.parsed_options(), src.name)
            except OSError as exc:
                print(f"crm-audit-agent parse: {path}: {exc.strerror}", file=sys.stderr)
                return 2
            for event in events:
                out.write(json.dumps(_as_dict(event), ensure_ascii=False) + "\n")
                count += 1
                errors += "parse_error" in event.flags
                mismatched += "prefix_mismatch" in event.flags
        # A wrong pgaudit log_line_prefix: said apart, it is a config fix, not a log defect.
        prefix = f", {mismatched} with prefix_mismatch" if mismatched else ""
        print(
            f"{src.name}: {count} events ({errors} with parse_error{prefix}) "
            f"from {len(paths)} files",
            file=sys.stderr,
        )
    return 0


def _as_dict(event: pb.AuditEvent) -> dict[str, object]:
    return MessageToDict(event, preserving_proto_field_name=True)
