"""Parsers: lines/s of framing + parsing per format, in-process (no files, no servers).

Each format's input is built by replicating its sample files from
``tests/agent/parsers/samples`` (the public samples of /work/shared/samples, copied
verbatim, plus the project-made ``crm-*`` files) to about `lines` lines: a file's body
is repeated, its CSV header (salesforce_elf) kept once at the top, a MySQL Enterprise
Audit array kept one array with the objects joined by commas. jsonlines uses the
benchmark's realistic corpus (`bench.corpus.sample_lines`); regex the same records
rendered as ``key=value`` lines with a pattern of named groups. Options are each
sample directory's ``options.json`` (only what a format requires: pgaudit's
destination and prefix, mariadb_audit's timezone).

A run frames and parses the whole input through `agent.parsers.get_framer` /
`get_parser` exactly as `crm-audit-agent parse` does (`parse_bytes`); the clock covers
only that. One more case measures the agent's whole normalize step for jsonlines:
framing + parsing + privacy (redaction and HMAC pseudonymization) + the stamps the
reading side adds + protobuf serialization (``SerializeToString``, what the spool
stores). Spool compression, fsync and the tailer are not included.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent.parse_command import parse_bytes
from agent.parsers import FORMATS, get_framer, get_parser
from agent.parsers.options import FormatOptions
from agent.parsers.privacy import PrivacyOptions
from bench.corpus import CORPUS_DAY
from bench.scenarios.base import Run, Say, rounded
from bench.stats import median_of_runs
from collector.admin.sample import generate
from proto.v1 import audit_pb2 as pb


@dataclass(frozen=True)
class Case:
    """One parser benchmark: a label, the format, its options and the input bytes."""

    label: str
    format: str
    options: dict[str, object]
    data: bytes
    normalize: bool = False  # the whole normalize step (privacy + stamps + serialize)

    @property
    def lines(self) -> int:
        return self.data.count(b"\n") + (0 if self.data.endswith(b"\n") else 1)


# label -> sample directory (its options.json names format and options)
SAMPLE_CASES = (
    ("pgaudit stderr", "pgaudit_stderr"),
    ("pgaudit csvlog", "pgaudit_csvlog"),
    ("pgaudit jsonlog", "pgaudit_jsonlog"),
    ("mariadb_audit", "mariadb_audit"),
    ("mysql_enterprise_audit", "mysql_enterprise_audit"),
    ("percona_audit", "percona_audit"),
    ("salesforce_elf", "salesforce_elf"),
    ("salesforce_json", "salesforce_json"),
)

REGEX_PATTERN = (
    r"^(?P<timestamp>\S+) (?P<action>\S+) outcome=(?P<outcome>\S+) user=(?P<user_name>\S+) "
    r"ip=(?P<source_ip>\S*) object=(?P<object_type>[^/ ]*)/(?P<object_id>\S*) "
    r'msg="(?P<message>[^"]*)"$'
)


def _inputs(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name != "options.json" and not p.name.endswith(".expected.jsonl")
    )


def _with_newline(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _repeat(body: bytes, lines: int) -> bytes:
    body = _with_newline(body)
    return body * max(1, math.ceil(lines / max(1, body.count(b"\n"))))


def replicate(format_name: str, files: Sequence[bytes], lines: int) -> bytes:
    """About `lines` lines of `format_name` made of copies of `files` (see module doc)."""
    share = max(1, lines // max(1, len(files)))
    out: list[bytes] = []
    for data in files:
        if format_name == "salesforce_elf":
            header, _, rows = _with_newline(data).partition(b"\n")
            out.append(header + b"\n" + _repeat(rows, share))
        elif format_name == "mysql_enterprise_audit":
            body = data.strip().removeprefix(b"[").removesuffix(b"]").strip().rstrip(b",")
            copies = max(1, math.ceil(share / (body.count(b"\n") + 1)))
            out.append(b"[\n" + b",\n".join([body] * copies) + b"\n]\n")
        else:
            out.append(_repeat(data, share))
    return b"".join(out)


def sample_cases(samples: Path, lines: int) -> list[Case]:
    cases = []
    for label, directory in SAMPLE_CASES:
        config = json.loads((samples / directory / "options.json").read_text(encoding="utf-8"))
        files = [path.read_bytes() for path in _inputs(samples / directory)]
        fmt = str(config["format"])
        cases.append(Case(label, fmt, dict(config["options"]), replicate(fmt, files, lines)))
    return cases


def regex_lines(count: int) -> bytes:
    """`count` sample records rendered as the key=value lines `REGEX_PATTERN` reads."""
    out = []
    for record in generate(count, 7, CORPUS_DAY):
        obj = record.get("object", {})
        message = str(record.get("message", "")).replace('"', "'")
        out.append(
            f"{record['timestamp']} {record['event']} outcome={record.get('outcome', '')} "
            f"user={record['user']['name']} ip={record.get('source_ip', '')} "
            f'object={obj.get("type", "")}/{obj.get("id", "")} msg="{message}"\n'
        )
    return "".join(out).encode("utf-8")


def all_cases(samples: Path, corpus: Sequence[bytes], lines: int) -> list[Case]:
    """Every case of the scenario; `corpus` is at least `lines` jsonlines lines."""
    jsonl = b"".join(corpus[:lines])
    return [
        *sample_cases(samples, lines),
        Case("jsonlines", "jsonlines", {}, jsonl),
        Case("regex", "regex", {"pattern": REGEX_PATTERN}, regex_lines(lines)),
        Case("normalize: jsonlines + privacy + serialize", "jsonlines", {}, jsonl, normalize=True),
    ]


def privacy_options(key_file: Path) -> PrivacyOptions:
    """A typical policy: emails and IBANs masked, names and addresses pseudonymized."""
    return PrivacyOptions.model_validate(
        {
            "redact": {"user.email": {}, "changes.iban": {"keep_last": 4}},
            "pseudonymize": {"fields": ["user.name", "source.ip"], "key_file": str(key_file)},
        }
    )


def _options(case: Case, key_file: Path) -> FormatOptions:
    model = FORMATS[case.format].options_model
    options = model.model_validate(case.options)
    if case.normalize:
        options = model.model_validate(
            {**case.options, "privacy": privacy_options(key_file).model_dump()}
        )
    if not isinstance(options, FormatOptions):
        raise TypeError(f"{case.format}: options are no FormatOptions")
    return options


def _parse_only(case: Case, options: FormatOptions) -> tuple[int, int]:
    parse = get_parser(case.format, {}, options)
    framer = get_framer(case.format, options)
    events = errors = 0
    for item in parse_bytes(case.data, parse, framer):
        events += 1
        errors += "parse_error" in item.event.flags
    return events, errors


def _normalize(case: Case, options: FormatOptions) -> tuple[int, int]:
    """What the agent's reading side does per record before spooling it."""
    parse = get_parser(case.format, {}, options)
    framer = get_framer(case.format, options)
    observer = pb.Observer(agent_id="bench-agent", hostname="bench", agent_version="bench")
    events = errors = size = 0
    for item in parse_bytes(case.data, parse, framer):
        event = item.event
        event.observed_unix_nano = time.time_ns()
        event.observer.CopyFrom(observer)
        event.log.file_path = "/var/log/crm/audit.jsonl"
        event.log.source_name = "crm_app"
        event.log.format = case.format
        size += len(event.SerializeToString())
        events += 1
        errors += "parse_error" in event.flags
    return events, errors


def run_case(case: Case, key_file: Path) -> Run:
    options = _options(case, key_file)
    work: Callable[[Case, FormatOptions], tuple[int, int]] = (
        _normalize if case.normalize else _parse_only
    )
    started = time.perf_counter()
    events, errors = work(case, options)
    elapsed = time.perf_counter() - started
    return rounded(
        {
            "lines": case.lines,
            "events": events,
            "parse_errors": errors,
            "bytes": len(case.data),
            "elapsed_s": elapsed,
            "lines_per_s": case.lines / elapsed,
            "events_per_s": events / elapsed,
            "us_per_line": elapsed / case.lines * 1e6,
        }
    )


def write_key(directory: Path) -> Path:
    """A pseudonymization key file (0600), as an operator would create one."""
    path = directory / "pseudonym.key"
    path.touch(mode=0o600)
    path.write_bytes(b"bench-pseudonym-key-" + dt.datetime.now(dt.UTC).isoformat().encode())
    return path


def warmup(case: Case) -> Case:
    """The first tenth of `case` (cut at a newline; a record cut short does not matter)."""
    cut = case.data.rfind(b"\n", 0, max(1, len(case.data) // 10)) + 1
    return replace(case, data=case.data[: cut or len(case.data)])


def measure(cases: Sequence[Case], key_file: Path, runs: int, say: Say) -> list[dict[str, object]]:
    """Per case: its runs (the first one is an unmeasured warm-up)."""
    results: list[dict[str, object]] = []
    for case in cases:
        run_case(warmup(case), key_file)  # imports, regex compilation, caches
        measured = [run_case(case, key_file) for _ in range(runs)]
        median = median_of_runs(measured)
        say(
            f"parsers {case.label}: {median['lines_per_s']:,.0f} lines/s "
            f"({case.lines:,} lines, {median['events']:,.0f} events)"
        )
        results.append(
            {
                "label": case.label,
                "format": case.format,
                "normalize": case.normalize,
                "median": median,
                "runs": measured,
            }
        )
    return results
