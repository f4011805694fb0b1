from __future__ import annotations

import os
import threading
from pathlib import Path

from agent.tail import Line, PollingTailer, SourceSpec
from agent.tail.reader import FileReader, file_key
from agent.tail.scan import resolve


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tailer(tmp_path: Path, **kwargs: object) -> tuple[PollingTailer, FakeClock]:
    clock = FakeClock()
    spec = SourceSpec("app", (str(tmp_path / "*.jsonl"),), ("*.gz", "skip-*"), 0.25)
    return PollingTailer([spec], kwargs.pop("start", {}), clock, **kwargs), clock  # type: ignore[arg-type]


def data(lines: list[Line]) -> list[bytes]:
    return [line.data for line in lines]


def test_reads_complete_lines_with_offsets(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\nthr")
    t, clock = tailer(tmp_path)
    lines = t.read(100)
    assert data(lines) == [b"one", b"two"]
    assert [(line.offset, line.end_offset) for line in lines] == [(0, 4), (4, 8)]
    assert lines[0].path == str(f) and lines[0].source == "app"
    assert lines[0].file_key == file_key(f.stat())
    assert t.read(100) == []  # the partial line waits for its newline
    with f.open("ab") as out:
        out.write(b"ee\n")
    clock.now = 1.0
    (line,) = t.read(100)
    assert (line.data, line.offset, line.end_offset) == (b"three", 8, 14)


def test_new_files_and_excludes(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "skip-me.jsonl").write_bytes(b"skipped\n")
    (tmp_path / "old.jsonl.gz").write_bytes(b"gz\n")
    t, clock = tailer(tmp_path)
    assert data(t.read(100)) == [b"a"]
    (tmp_path / "b.jsonl").write_bytes(b"b1\nb2\n")
    assert t.read(100) == []  # not scanned again before the poll interval
    clock.now = 0.3
    assert data(t.read(100)) == [b"b1", b"b2"]
    assert len(t.active_keys()) == 2


def test_order_is_by_path_and_budget_is_respected(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(b"b1\nb2\n")
    (tmp_path / "a.jsonl").write_bytes(b"a1\na2\n")
    t, _ = tailer(tmp_path)
    assert data(t.read(3)) == [b"a1", b"a2", b"b1"]
    assert data(t.read(3)) == [b"b2"]


def test_resumes_from_start_offsets(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\n")
    t, _ = tailer(tmp_path, start={file_key(f.stat()): 4})
    assert data(t.read(100)) == [b"two"]


def test_long_line_is_truncated_and_flagged(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"x" * 300_000)  # longer than the limit, no newline yet
    t, clock = tailer(tmp_path, max_line_bytes=1000)
    assert t.read(100) == []
    with f.open("ab") as out:
        out.write(b"y" * 10 + b"\nnext\n")
    clock.now = 1.0
    long, after = t.read(100)
    assert long.truncated and long.data == b"x" * 1000
    assert (long.offset, long.end_offset) == (0, 300_011)
    assert (after.data, after.truncated, after.offset) == (b"next", False, 300_011)


def test_truncated_file_is_reread(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\n")
    reader = FileReader("app", str(f), file_key(f.stat()))
    assert data(reader.read(10)) == [b"one", b"two"]
    with f.open("r+b") as out:
        out.truncate(0)
        out.write(b"new\n")
    assert data(reader.read(10)) == [b"new"]


def test_vanished_file_is_dropped_and_others_continue(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "b.jsonl").write_bytes(b"b\n")
    t, clock = tailer(tmp_path)
    assert data(t.read(10)) == [b"a", b"b"]
    key_b = file_key((tmp_path / "b.jsonl").stat())
    os.unlink(tmp_path / "a.jsonl")
    with (tmp_path / "b.jsonl").open("ab") as out:
        out.write(b"b2\n")
    clock.now = 1.0
    assert data(t.read(10)) == [b"b2"]
    assert t.active_keys() == {key_b}


def test_resolve_matches_excludes_on_name_or_path(tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.jsonl.gz", "c.log"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.jsonl").mkdir()
    pattern = str(tmp_path / "*")
    assert resolve([pattern], ["*.gz", str(tmp_path / "c.*")]) == [str(tmp_path / "a.jsonl")]


def test_wait_returns_when_stopped(tmp_path: Path) -> None:
    t, _ = tailer(tmp_path)
    stop = threading.Event()
    stop.set()
    t.wait(60.0, stop)  # returns at once instead of sleeping
