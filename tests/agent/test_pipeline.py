"""Pipeline (framing → parse → spool) and outbox (spool → batches) with scripted input."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from agent import oversize
from agent.batch import Batcher
from agent.checkpoint import FileOffset
from agent.outbox import Outbox
from agent.parsers import get_framer, get_parser
from agent.parsers.framing import StartPatternFramer
from agent.pipeline import Pipeline, SourceParser
from agent.sealing import AgentKey
from agent.ship import Outgoing
from agent.spool import HEADER_SIZE, Entry, Spool
from agent.tail import Closed, FileTailer, Line, SourceSpec, TailItem, Truncated
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.helpers import FakeClock

STREAM = "5555aaaa5555aaaa"

SAMPLES = Path(__file__).parent / "parsers" / "samples"
OBSERVER = pb.Observer(agent_id="a1", hostname="h", agent_version="t")


class ScriptedTailer:
    """Yields one scripted list per read; `stop_after` reads, it sets stop in `wait`."""

    def __init__(self, script: list[list[TailItem]], clock: FakeClock, stop_after: int) -> None:
        self.script = script
        self.clock = clock
        self.reads = 0
        self.stop_after = stop_after
        self.closed = False
        self.first_lines: dict[str, bytes] = {}

    def read(self, max_items: int) -> list[TailItem]:
        self.reads += 1
        return self.script.pop(0) if self.script else []

    def wait(self, timeout: float, stop: threading.Event) -> None:
        self.clock.now += 10.0
        if self.reads >= self.stop_after:
            stop.set()

    def busy(self) -> bool:
        return False

    def forgotten(self) -> set[str]:
        return set()

    def first_line(self, key: str) -> bytes | None:
        return self.first_lines.get(key)

    def close(self) -> None:
        self.closed = True


def line(data: bytes, offset: int, key: str = "1:2") -> Line:
    return Line("app", "/log/a", key, offset, offset + len(data) + 1, data, fingerprint="3:x")


def spooled(spool: Spool) -> list[tuple[pb.AuditEvent, FileOffset | None]]:
    reader = spool.reader(1)
    records, _ = reader.read(1000)
    reader.close()
    return [(pb.AuditEvent.FromString(r.event), r.position) for r in records]


def run(
    tmp_path: Path, script: list[list[TailItem]], multiline: bool, stop_after: int = 1, **kw: int
) -> tuple[Spool, ScriptedTailer]:
    spool = Spool(
        tmp_path / "spool",
        max_bytes=kw.get("max_bytes", 1 << 20),
        segment_bytes=kw.get("segment_bytes", 8192),
    )
    spool.open(0)
    clock = FakeClock()
    tailer = ScriptedTailer(script, clock, stop_after)

    def framer() -> StartPatternFramer:
        return StartPatternFramer(re.compile(rb"^\{"))

    parser = SourceParser(
        "jsonlines",
        get_parser("jsonlines", {}),
        framer if multiline else (lambda: get_framer("jsonlines")),
        flush_after_s=2.0,
    )
    pipeline = Pipeline(
        observer=OBSERVER,
        tailer=tailer,
        parsers={"app": parser},
        spool=spool,
        on_forgotten=lambda _keys: None,
        wall_ns=lambda: 1,
        monotonic=clock,
    )
    pipeline.run(threading.Event())
    return spool, tailer


def test_multiline_records_resume_before_what_is_held(tmp_path: Path) -> None:
    first, cont, second = b'{"event": "a",', b'\t"n": 1}', b'{"event": "b"}'
    script: list[list[TailItem]] = [
        [line(first, 0), line(cont, 15), line(second, 24)],
    ]
    spool, tailer = run(tmp_path, script, multiline=True, stop_after=1)
    assert tailer.closed
    (one, pos_one), (two, pos_two) = spooled(spool)
    assert one.original == first.decode() + "\n" + cont.decode()
    assert one.sequence == 1 and one.log.offset == 0 and one.observer.agent_id == "a1"
    assert pos_one == FileOffset("/log/a", 24, "3:x")  # where the held record starts
    # Held at the end, flushed on shutdown.
    assert two.action == "b" and two.sequence == 2 and pos_two is not None
    assert pos_two.offset == 24 + len(second) + 1
    spool.close()


def test_held_record_is_flushed_after_idle_timeout(tmp_path: Path) -> None:
    script: list[list[TailItem]] = [[line(b'{"event": "a"}', 0)], [], []]
    spool, _ = run(tmp_path, script, multiline=True, stop_after=3)
    events = spooled(spool)
    assert [e.action for e, _ in events] == ["a"]
    spool.close()


def test_truncation_flushes_and_emits_a_loss_report(tmp_path: Path) -> None:
    truncated = Truncated("app", "/log/a", "1:2", 500, 620, 10, "10:y")
    script: list[list[TailItem]] = [
        [line(b'{"event": "a"}', 0), truncated, line(b'{"event": "b"}', 0)],
        [Closed("app", "/log/a", "1:2", "rotated")],
    ]
    spool, _ = run(tmp_path, script, multiline=True, stop_after=2)
    events = spooled(spool)
    assert [e.action for e, _ in events] == ["a", "agent.log_truncated", "b"]
    report, position = events[1]
    assert list(report.flags) == ["log_truncated"]
    assert report.attributes["truncation.read_offset"] == "500"
    assert report.attributes["truncation.bytes_possibly_missed"] == ">=120"
    assert position == FileOffset("/log/a", 0, "10:y")
    spool.close()


def test_full_spool_stops_reading(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=65_536, segment_bytes=8192)
    spool.open(0)
    while not spool.full():
        spool.append([Entry(pb.AuditEvent(original="x" * 2000))])
    spool.close()
    script: list[list[TailItem]] = [[line(b'{"event": "a"}', 0)]]
    clock = FakeClock()
    tailer = ScriptedTailer(script, clock, 1)
    reopened = Spool(tmp_path / "spool", max_bytes=65_536, segment_bytes=8192)
    reopened.open(0)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    Pipeline(
        observer=OBSERVER,
        tailer=tailer,
        parsers={
            "app": SourceParser(
                "jsonlines", get_parser("jsonlines", {}), lambda: get_framer("jsonlines")
            )
        },
        spool=reopened,
        on_forgotten=lambda _keys: None,
        wall_ns=lambda: 1,
        monotonic=clock,
    ).run(stop)
    timer.join()
    assert tailer.reads == 0  # paused: nothing read, offsets stay put
    reopened.close()


def test_outbox_batches_from_the_spool_and_reports_corruption(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 18)
    spool.open(0, stream_id=STREAM)
    for n in range(1, 6):  # one append (one spool record) each
        spool.append(
            [Entry(pb.AuditEvent(action=f"e{n}"), "1:2", FileOffset("/log/a", n * 10, ""))]
        )
    (segment,) = spool.segment_names()
    path = tmp_path / "spool" / segment
    data = bytearray(path.read_bytes())
    size = len(data) // 5
    data[size + HEADER_SIZE + 2] ^= 0xFF  # sequence 2
    path.write_bytes(bytes(data))
    sent: list[Outgoing] = []
    drain = threading.Event()
    drain.set()
    Outbox(
        agent_id="a1",
        stream_id=STREAM,
        key=AgentKey.load_or_create(tmp_path),
        observer=OBSERVER,
        spool=spool,
        reader=spool.reader(1),
        batcher=Batcher(3, 1 << 20, 1.0),
        submit=lambda item: sent.append(item) is None,
        wall_ns=lambda: 7,
        monotonic=FakeClock(),
        head=(0, integrity.genesis_v2("a1", STREAM)),
    ).run(drain)
    events = [pb.AuditEvent.FromString(d) for item in sent for d in item.event_bytes]
    assert [e.sequence for e in events] == [1, 3, 4, 5, 6]
    # A batch never spans the gap: 1 | 3 4 5 | 6 (the loss event).
    assert [item.events for item in sent] == [1, 3, 1]
    loss = events[-1]
    assert loss.action == "agent.spool_loss" and list(loss.flags) == ["gap_at_source"]
    assert loss.attributes["loss.first_sequence"] == "2"
    assert loss.attributes["loss.last_sequence"] == "2"
    assert all(item.agent_id == "a1" for item in sent)
    assert sent[0].positions == {"1:2": FileOffset("/log/a", 10, "")}
    assert sent[1].positions == {"1:2": FileOffset("/log/a", 50, "")}
    spool.close()


class _OnePass:
    """A real FileTailer whose first `wait` ends the pipeline run."""

    def __init__(self, tailer: FileTailer) -> None:
        self.tailer = tailer

    def read(self, max_items: int) -> list[TailItem]:
        return self.tailer.read(max_items)

    def wait(self, timeout: float, stop: threading.Event) -> None:
        stop.set()

    def busy(self) -> bool:
        return self.tailer.busy()

    def forgotten(self) -> set[str]:
        return self.tailer.forgotten()

    def first_line(self, key: str) -> bytes | None:
        return self.tailer.first_line(key)

    def close(self) -> None:
        self.tailer.close()


def _read_elf(spool: Spool, glob: str, start: dict[str, FileOffset]) -> None:
    tailer = FileTailer(
        [SourceSpec("sf", (glob,), poll_interval_s=0.01)], start, time.monotonic, watch=False
    )
    Pipeline(
        observer=OBSERVER,
        tailer=_OnePass(tailer),
        parsers={
            "sf": SourceParser(
                "salesforce_elf",
                get_parser("salesforce_elf", {}),
                lambda: get_framer("salesforce_elf"),
            )
        },
        spool=spool,
        on_forgotten=lambda _keys: None,
        wall_ns=lambda: 1,
        monotonic=time.monotonic,
    ).run(threading.Event())


def test_csv_header_is_primed_when_resuming_mid_file(tmp_path: Path) -> None:
    """Salesforce ELF after a restart mid-file: the framer gets the file's header line."""
    sample = SAMPLES / "salesforce_elf" / "salesforce-elf-login.csv"
    header, row = sample.read_bytes().splitlines()[:2]
    rows = [row.replace(b"4u6Ly", f"r{n}-".encode()) for n in range(3)]
    log_file = tmp_path / "logs" / "elf.csv"
    log_file.parent.mkdir()
    log_file.write_bytes(header + b"\n" + rows[0] + b"\n")
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.open(0)
    _read_elf(spool, str(tmp_path / "logs" / "*.csv"), {})
    ((first, position),) = spooled(spool)
    assert "parse_error" not in first.flags
    assert position is not None and position.offset == log_file.stat().st_size
    reader = spool.reader(1)
    key = reader.read(1)[0][0].file_key
    reader.close()
    assert key is not None

    # "Restart": new tailer and pipeline resuming at the checkpointed offset.
    with log_file.open("ab") as handle:
        handle.write(b"\n".join(rows[1:]) + b"\n")
    _read_elf(spool, str(tmp_path / "logs" / "*.csv"), {key: position})
    events = [event for event, _ in spooled(spool)]
    assert len(events) == len(rows)
    resumed = events[1:]
    assert [e.flags for e in resumed if "parse_error" in e.flags] == []
    assert all(e.log.offset >= position.offset for e in resumed)
    assert resumed[0].original == rows[1].decode()
    assert resumed[0].user.name and resumed[0].action
    spool.close()


def test_each_event_is_stamped_with_the_observer_and_its_files_current_origin(
    tmp_path: Path,
) -> None:
    # The per-file stamp is made once per path: a file renamed (rotated) under the same
    # key gets the new path from its next record on. Every spooled event must be byte for
    # byte the parsed event with the observer and log origin set field by field.
    rotated = Line("app", "/log/a.1", "1:2", 30, 45, b'{"event": "c"}', fingerprint="3:x")
    other = Line("app", "/log/b", "7:8", 0, 15, b'{"event": "d"}', fingerprint="9:z")
    script: list[list[TailItem]] = [
        [line(b'{"event": "a"}', 0), line(b'{"event": "b"}', 15), other],
        [rotated],
    ]
    spool, _ = run(tmp_path, script, multiline=False, stop_after=2)
    events = spooled(spool)
    parse = get_parser("jsonlines", {})
    expected = []
    for data, path, offset in [
        (b'{"event": "a"}', "/log/a", 0),
        (b'{"event": "b"}', "/log/a", 15),
        (b'{"event": "d"}', "/log/b", 0),
        (b'{"event": "c"}', "/log/a.1", 30),
    ]:
        event = parse(data)
        assert event is not None
        event.observed_unix_nano = 1
        event.observer.CopyFrom(OBSERVER)
        event.log.file_path = path
        event.log.offset = offset
        event.log.source_name = "app"
        event.log.format = "jsonlines"
        expected.append(event)
    assert len(events) == len(expected)
    for n, ((got, _), want) in enumerate(zip(events, expected, strict=True), start=1):
        want.sequence = n
        want.stream_id = got.stream_id
        assert integrity.event_bytes_v2(got) == integrity.event_bytes_v2(want)
    spool.close()


def test_an_event_over_the_size_limit_is_cut_as_parsed_and_stamped(tmp_path: Path) -> None:
    # The spool measures the event on its one serialization; the cut must be the one
    # oversize.fit makes on the parsed, stamped event before it is numbered.
    big = (
        b'{"event": "export", "message": "'
        + b"m" * (3 << 20)
        + b'", "note": "'
        + b"n" * (2 << 20)
        + b'"}'
    )
    small = b'{"event": "after"}'
    second_at = len(big) + 1
    script: list[list[TailItem]] = [[line(big, 0), line(small, second_at)]]
    spool, _ = run(tmp_path, script, multiline=False, max_bytes=1 << 30, segment_bytes=1 << 26)
    (cut, _), (after, pos_after) = spooled(spool)
    event = get_parser("jsonlines", {})(big)
    assert event is not None
    event.observed_unix_nano = 1
    event.observer.CopyFrom(OBSERVER)
    event.log.file_path, event.log.offset = "/log/a", 0
    event.log.source_name, event.log.format = "app", "jsonlines"
    assert oversize.fit(event, len(big))
    event.sequence, event.stream_id = 1, cut.stream_id
    assert integrity.event_bytes_v2(cut) == integrity.event_bytes_v2(event)
    assert "line_truncated" in cut.flags
    assert cut.attributes[oversize.ORIGINAL_BYTES] == str(len(big))
    assert len(integrity.event_bytes_v2(cut)) <= oversize.LIMIT + 64
    assert after.action == "after" and "line_truncated" not in after.flags
    assert pos_after == FileOffset("/log/a", second_at + len(small) + 1, "3:x")
    spool.close()


def test_an_event_at_the_size_limit_is_not_cut_for_its_sequence(tmp_path: Path) -> None:
    # Exactly oversize.LIMIT bytes as parsed and stamped: it fits, even though its
    # serialization with the sequence the spool gives it is a little larger.
    parse = get_parser("jsonlines", {})

    def stamped_size(data: bytes) -> int:
        event = parse(data)
        assert event is not None
        event.observed_unix_nano = 1
        event.observer.CopyFrom(OBSERVER)
        event.log.file_path, event.log.offset = "/log/a", 0
        event.log.source_name, event.log.format = "app", "jsonlines"
        return event.ByteSize()

    def record(n: int, pad: int) -> bytes:
        return b'{"event": "edge",' + b" " * pad + b' "message": "' + b"m" * n + b'"}'

    n = 2 << 20
    for _ in range(5):  # the message is in `message` and in `original`: 2 bytes per byte
        n += (oversize.LIMIT - stamped_size(record(n, 0))) // 2
    data = record(n, oversize.LIMIT - stamped_size(record(n, 0)))
    assert stamped_size(data) == oversize.LIMIT
    spool, _ = run(
        tmp_path, [[line(data, 0)]], multiline=False, max_bytes=1 << 30, segment_bytes=1 << 26
    )
    ((event, _),) = spooled(spool)
    assert "line_truncated" not in event.flags
    assert event.original == data.decode() and event.sequence == 1
    assert len(integrity.event_bytes_v2(event)) > oversize.LIMIT
    spool.close()
