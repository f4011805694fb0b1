"""The agent's per-event stages before the spool, in thread CPU µs per event (development
tool, not a scenario; runs in a few seconds on one core).

    .venv/bin/python -m bench.stages [--events 50000] [--repeat 3] [--corpus sample|foreign]

Lines come from the benchmark corpus (`crm-audit sample`'s CRM application records, the
default mapping) or from the foreign CRM log of tests/foreign_crm (nested records, its
mapping with translation tables, conditions, `each` and an action table). Each stage is
the best of --repeat runs over the same events (thread CPU time, so other processes on
the machine barely move it):

- read+frame: a file of the lines read by the agent's FileReader in READ_BUDGET passes
  (a LineFramer's lines go to the parser as they are: no framer runs);
- parse: one line's bytes → the event with `original` and the decoded record;
- mapping: the source's compiled mapping applied to a decoded record;
- parser: the whole parse function the pipeline calls (the two above, crash guard);
- stamping: what the pipeline adds to a parsed event before it is spooled (observer,
  observed time, log origin, the oversize check, the spool entry).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from agent.parsers import get_parser, jsonlines
from agent.parsers._common import start_event
from agent.parsers.framing import LineFramer
from agent.parsers.mapping import compile_plan
from agent.pipeline import READ_BUDGET, Pipeline, SourceParser, _FileFraming
from agent.tail.base import Line
from agent.tail.reader import FileReader
from proto.v1 import audit_pb2 as pb

_FOREIGN_SOURCE = Path(__file__).resolve().parent.parent / "tests/foreign_crm/agent-source.yaml"


def corpus(kind: str, count: int) -> tuple[list[bytes], dict[str, Any], dict[str, Any]]:
    """(lines without newline, mapping, actions) of `count` events."""
    if kind == "sample":
        from bench.corpus import sample_lines

        return [line.rstrip(b"\n") for line in sample_lines(count)], {}, {}
    from tests.foreign_crm.generator import generate

    source = yaml.safe_load(_FOREIGN_SOURCE.read_text())["sources"][0]
    lines: list[bytes] = []
    seed = 0
    start = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
    while len(lines) < count:
        lines += [line.encode() for line in generate(seed, start, normal_count=5000).lines]
        seed += 1
    return lines[:count], source["mapping"], source.get("actions") or {}


def best(repeat: int, run: Callable[[], float]) -> float:
    """Fewest thread-CPU seconds of `repeat` runs (`run` returns the seconds it measured)."""
    return min(run() for _ in range(repeat))


def chunks(items: list[Any]) -> Iterator[list[Any]]:
    """The pipeline works a read pass (READ_BUDGET records) at a time; so does the bench,
    so that the garbage collector sees what it sees in the agent, not 50,000 live events."""
    for start in range(0, len(items), READ_BUDGET):
        yield items[start : start + READ_BUDGET]


def timed(run: Callable[[], object]) -> float:
    started = time.thread_time()
    run()
    return time.thread_time() - started


def read_frame(path: Path) -> float:
    """Read `path` to its end as the tailer does; the pipeline hands a line framed by a
    LineFramer straight to the parser (one line, one record), so no framer runs."""
    started = time.thread_time()
    reader = FileReader("bench", str(path), "0:0", fd=os.open(path, os.O_RDONLY))
    try:
        while items := reader.read(READ_BUDGET, 0.0):
            for item in items:
                assert isinstance(item, Line)
    finally:
        reader.close()
    return time.thread_time() - started


def split_stages(
    mapping: dict[str, Any], actions: dict[str, Any]
) -> tuple[Callable[[bytes], Any], Callable[[Any], object]]:
    """The parse step (bytes → event and record) and the mapping step, as the jsonlines
    parser runs them."""
    plan = compile_plan(jsonlines.DEFAULT_MAPPING, mapping, actions, jsonlines.FIELDS)

    def decode(line: bytes) -> tuple[pb.AuditEvent, Any]:
        event, text = start_event(line)
        return event, jsonlines._decode(line, text, event)

    def apply(decoded: tuple[pb.AuditEvent, Any]) -> None:
        plan.apply(decoded[0], decoded[1])

    return decode, apply


def parse_and_map(
    lines: list[bytes], decode: Callable[[bytes], Any], apply: Callable[[Any], object]
) -> tuple[float, float]:
    parse_s = mapping_s = 0.0
    for chunk in chunks(lines):
        started = time.thread_time()
        decoded = [decode(line) for line in chunk]
        middle = time.thread_time()
        for item in decoded:
            apply(item)
        parse_s += middle - started
        mapping_s += time.thread_time() - middle
    return parse_s, mapping_s


def stamping(events: list[pb.AuditEvent]) -> float:
    """The pipeline's `_record` on already-parsed events (fresh copies each run)."""
    observer = pb.Observer(agent_id="bench-agent", hostname="crm-host", agent_version="0.1.0")
    feed = iter([pb.AuditEvent.FromString(e.SerializeToString()) for e in events])
    pipeline = Pipeline(
        observer=observer,
        tailer=None,  # type: ignore[arg-type]  # _record neither reads
        parsers={"bench": SourceParser("jsonlines", lambda _data: next(feed), LineFramer)},
        spool=None,  # type: ignore[arg-type]  # nor spools
        on_forgotten=lambda _forgotten: None,
        wall_ns=time.time_ns,
        monotonic=time.monotonic,
    )
    state = _FileFraming(LineFramer(), "bench", "/var/log/crm/audit.jsonl", "fp", 0.0)
    spent = 0.0
    offset = 0
    for chunk in chunks(events):
        entries: list[Any] = []
        started = time.thread_time()
        for event in chunk:
            end = offset + len(event.original) + 1
            pipeline._record("0:0", state, b"", offset, end, False, entries, None)
            offset = end
        spent += time.thread_time() - started
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--corpus", choices=("sample", "foreign"), default="sample")
    args = parser.parse_args()
    lines, mapping, actions = corpus(args.corpus, args.events)
    n = len(lines)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        results["read+frame"] = best(args.repeat, lambda: read_frame(path))
    decode, apply = split_stages(mapping, actions)
    runs = [parse_and_map(lines, decode, apply) for _ in range(args.repeat)]
    results["parse"] = min(run[0] for run in runs)
    results["mapping"] = min(run[1] for run in runs)
    parse = get_parser("jsonlines", mapping, None, actions)

    def whole_parser() -> float:
        return sum(timed(lambda c=chunk: [parse(line) for line in c]) for chunk in chunks(lines))

    results["parser (parse+mapping)"] = best(args.repeat, whole_parser)
    events = [event for event in map(parse, lines) if event is not None]
    results["stamping"] = best(args.repeat, lambda: stamping(events))
    total = results["read+frame"] + results["parser (parse+mapping)"] + results["stamping"]
    print(f"{n} events, corpus {args.corpus}, best of {args.repeat} (thread CPU µs/event)")
    for name, seconds in results.items():
        print(f"  {name:<24} {seconds / n * 1e6:8.2f}")
    print(f"  {'total before the spool':<24} {total / n * 1e6:8.2f}")


if __name__ == "__main__":
    main()
