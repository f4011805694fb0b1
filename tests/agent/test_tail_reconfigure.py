"""FileTailer.reconfigure (SIGHUP): sources added, removed, changed, handed over — real
files, a fake clock, no watchdog."""

from __future__ import annotations

from pathlib import Path

from agent.checkpoint import FileOffset
from agent.tail import Closed, FileTailer, Line, SourceSpec, TailItem
from agent.tail.reader import file_key
from tests.helpers import FakeClock


def spec(name: str, pattern: Path, **settings: object) -> SourceSpec:
    return SourceSpec(name, (str(pattern),), (), **settings)  # type: ignore[arg-type]


def make(specs: list[SourceSpec], made: list[FileTailer]) -> tuple[FileTailer, FakeClock]:
    clock = FakeClock()
    t = FileTailer(specs, {}, clock, watch=False)
    made.append(t)
    return t, clock


def lines(items: list[TailItem]) -> list[tuple[str, bytes]]:
    return [(i.source, i.data) for i in items if isinstance(i, Line)]


def test_added_source_is_scanned_at_once(tmp_path: Path, tailers: list[FileTailer]) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"a1\n")
    (tmp_path / "b.log").write_bytes(b"b1\n")
    (tmp_path / "c.txt").write_bytes(b"old\n")
    app = spec("app", tmp_path / "*.jsonl")
    t, clock = make([app], tailers)
    assert lines(t.read(100)) == [("app", b"a1")]
    t.reconfigure(
        [app, spec("db", tmp_path / "*.log"), spec("txt", tmp_path / "*.txt", start_at="end")]
    )
    assert lines(t.read(100)) == [("db", b"b1")]  # at once, not after a poll interval
    with (tmp_path / "c.txt").open("ab") as out:
        out.write(b"new\n")
    clock.now = 1.0
    # start_at: end applies to the files an added source finds at its first scan.
    assert lines(t.read(100)) == [("txt", b"new")]
    assert t.watched_files() == {"app": 1, "db": 1, "txt": 1}


def test_removed_source_is_read_to_its_end_then_closed_and_parked(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    app, other = spec("app", tmp_path / "*.jsonl"), spec("other", tmp_path / "*.log")
    t, clock = make([app, other], tailers)
    assert lines(t.read(100)) == [("app", b"1")]
    with f.open("ab") as out:
        out.write(b"2\n3\n")  # written before the reload, not read yet
    t.reconfigure([other])
    items = t.read(100)
    assert lines(items) == [("app", b"2"), ("app", b"3")]
    assert isinstance(items[-1], Closed) and items[-1].reason == "removed"
    assert t.forgotten() == set()  # the file is still there: its position is kept
    with f.open("ab") as out:
        out.write(b"4\n")
    clock.now = 5.0
    assert t.read(100) == []  # no longer tailed
    assert t.watched_files() == {"other": 0}
    # Added back: resumed where it was left, not read again from the start.
    t.reconfigure([app, other])
    items = t.read(100)
    assert lines(items) == [("app", b"4")]
    (line,) = [i for i in items if isinstance(i, Line)]
    assert line.offset == 6  # right after "1\n2\n3\n"


def test_a_parked_file_that_is_deleted_is_forgotten(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    app, other = spec("app", tmp_path / "*.jsonl"), spec("other", tmp_path / "*.log")
    t, _ = make([app, other], tailers)
    assert lines(t.read(100)) == [("app", b"1")]
    key = file_key(f.stat())
    t.reconfigure([other])
    t.read(100)
    assert t.forgotten() == set()
    f.unlink()
    t.reconfigure([other])
    assert t.forgotten() == {key}


def test_a_parked_position_survives_a_restart(tmp_path: Path, tailers: list[FileTailer]) -> None:
    # The checkpoint holds the position of a file no configured source matches; the
    # restarted tailer keeps it (the file is still there) for when a source matches
    # it again.
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n2\n")
    key = file_key(f.stat())
    other = spec("other", tmp_path / "*.log")
    t = FileTailer([other], {key: FileOffset(str(f), 2, "")}, FakeClock(), watch=False)
    tailers.append(t)
    assert t.read(100) == []
    assert t.forgotten() == set()
    t.reconfigure([other, spec("app", tmp_path / "*.jsonl")])
    assert lines(t.read(100)) == [("app", b"2")]


def test_file_moved_to_another_source_continues_at_its_offset(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n2\n")
    t, clock = make([spec("old", tmp_path / "*.jsonl")], tailers)
    assert lines(t.read(100)) == [("old", b"1"), ("old", b"2")]
    with f.open("ab") as out:
        out.write(b"3\n")
    t.reconfigure([spec("new", tmp_path / "*.jsonl")])
    items = t.read(100)
    assert lines(items) == [("old", b"3")]  # read by the source it was written for
    assert isinstance(items[-1], Closed)
    with f.open("ab") as out:
        out.write(b"4\n")
    clock.now = 1.0
    items = t.read(100)
    assert lines(items) == [("new", b"4")]  # handed over: nothing read twice
    (line,) = [i for i in items if isinstance(i, Line)]
    assert line.offset == 6
    assert t.forgotten() == set()  # its checkpoint entry stays


def test_changed_source_keeps_its_files_and_picks_up_new_globs(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    (tmp_path / "b.log").write_bytes(b"b\n")
    t, clock = make([spec("app", tmp_path / "*.jsonl", close_rotated_after_s=1.0)], tailers)
    assert lines(t.read(100)) == [("app", b"1")]
    t.reconfigure(
        [
            SourceSpec(
                "app",
                (str(tmp_path / "*.jsonl"), str(tmp_path / "*.log")),
                close_rotated_after_s=1.0,
            )
        ]
    )
    with f.open("ab") as out:
        out.write(b"2\n")
    assert lines(t.read(100)) == [("app", b"2"), ("app", b"b")]
    # Narrowed again: a.jsonl is no longer matched, so it is finished like a rotated file.
    t.reconfigure([spec("app", tmp_path / "*.log", close_rotated_after_s=1.0)])
    with f.open("ab") as out:
        out.write(b"3\n")
    assert lines(t.read(100)) == [("app", b"3")]
    clock.now = 2.0
    items = t.read(100)
    assert [i.reason for i in items if isinstance(i, Closed)] == ["rotated"]
