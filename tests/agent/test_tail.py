"""Tail layer with a fake clock: lines, identity, rotation (rename, copytruncate,
deletion), inactivity, start_at. Real files, no watchdog (waits are not needed)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from agent.checkpoint import FileOffset
from agent.tail import Closed, FileTailer, Line, SourceSpec, TailItem, Truncated
from agent.tail.fingerprint import FINGERPRINT_BYTES, covered, fingerprint, matches
from agent.tail.reader import FileReader, file_key
from agent.tail.scan import resolve
from agent.tail.watch import Watcher, watch_roots
from tests.helpers import FakeClock


def make(
    tmp_path: Path,
    made: list[FileTailer],
    start: dict[str, FileOffset] | None = None,
    initial: bool = False,
    **spec: object,
) -> tuple[FileTailer, FakeClock]:
    clock = FakeClock()
    settings: dict[str, object] = {"poll_interval_s": 0.25, **spec}
    source = SourceSpec("app", (str(tmp_path / "*.jsonl"),), ("*.gz", "skip-*"), **settings)  # type: ignore[arg-type]
    t = FileTailer([source], start or {}, clock, initial=initial, watch=False)
    made.append(t)
    return t, clock


def lines(items: list[TailItem]) -> list[bytes]:
    return [i.data for i in items if isinstance(i, Line)]


def test_reads_complete_lines_with_offsets(tmp_path: Path, tailers: list[FileTailer]) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\nthr")
    t, clock = make(tmp_path, tailers)
    items = t.read(100)
    assert lines(items) == [b"one", b"two"]
    assert all(isinstance(i, Line) for i in items)
    first = items[0]
    assert isinstance(first, Line)
    assert [(i.offset, i.end_offset) for i in items if isinstance(i, Line)] == [(0, 4), (4, 8)]
    assert first.path == str(f) and first.source == "app"
    assert first.file_key == file_key(f.stat())
    assert t.read(100) == []  # the partial line waits for its newline
    with f.open("ab") as out:
        out.write(b"ee\n")
    clock.now = 1.0
    (line,) = t.read(100)
    assert isinstance(line, Line)
    assert (line.data, line.offset, line.end_offset) == (b"three", 8, 14)


def test_new_files_and_excludes(tmp_path: Path, tailers: list[FileTailer]) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "skip-me.jsonl").write_bytes(b"skipped\n")
    (tmp_path / "old.jsonl.gz").write_bytes(b"gz\n")
    t, clock = make(tmp_path, tailers)
    assert lines(t.read(100)) == [b"a"]
    (tmp_path / "b.jsonl").write_bytes(b"b1\nb2\n")
    assert t.read(100) == []  # not scanned again before the poll interval
    clock.now = 0.3
    assert lines(t.read(100)) == [b"b1", b"b2"]
    assert t.open_files() == 2


def test_order_is_by_path_and_budget_is_respected(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    (tmp_path / "b.jsonl").write_bytes(b"b1\nb2\n")
    (tmp_path / "a.jsonl").write_bytes(b"a1\na2\n")
    t, _ = make(tmp_path, tailers)
    assert lines(t.read(3)) == [b"a1", b"a2", b"b1"]
    assert lines(t.read(3)) == [b"b2"]


def test_resumes_from_start_positions_when_fingerprint_matches(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\n")
    fd = os.open(f, os.O_RDONLY)
    fp = fingerprint(fd, 4)  # taken when the file held only its first line
    os.close(fd)
    t, _ = make(tmp_path, tailers, start={file_key(f.stat()): FileOffset(str(f), 4, fp)})
    assert lines(t.read(100)) == [b"two"]


def test_reused_inode_is_read_from_the_start(tmp_path: Path, tailers: list[FileTailer]) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"brand new\n")
    stale = FileOffset(str(f), 4, "4:0000000000000000")  # another file's fingerprint
    t, _ = make(tmp_path, tailers, start={file_key(f.stat()): stale})
    assert lines(t.read(100)) == [b"brand new"]


def test_checkpointed_files_that_are_gone_are_forgotten(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    t, _ = make(tmp_path, tailers, start={"1:2": FileOffset("/gone.jsonl", 10, "")})
    t.read(10)
    assert t.forgotten() == {"1:2"}
    assert t.forgotten() == set()


def test_start_at_end_applies_to_the_very_first_start_only(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"old\n")
    t, clock = make(tmp_path, tailers, initial=True, start_at="end")
    assert t.read(10) == []
    with (tmp_path / "a.jsonl").open("ab") as out:
        out.write(b"new\n")
    (tmp_path / "b.jsonl").write_bytes(b"later file\n")
    clock.now = 1.0
    assert lines(t.read(10)) == [b"new", b"later file"]
    (tmp_path / "c.jsonl").write_bytes(b"c\n")
    t2, _ = make(tmp_path, tailers, initial=False, start_at="end")
    assert b"c" in lines(t2.read(10))


def test_long_line_is_truncated_and_flagged(tmp_path: Path, tailers: list[FileTailer]) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"x" * 300_000)  # longer than the limit, no newline yet
    t, clock = make(tmp_path, tailers, max_line_bytes=1000)
    assert t.read(100) == []
    with f.open("ab") as out:
        out.write(b"y" * 10 + b"\nnext\n")
    clock.now = 1.0
    long, after = t.read(100)
    assert isinstance(long, Line) and isinstance(after, Line)
    assert long.truncated and long.data == b"x" * 1000
    assert (long.offset, long.end_offset) == (0, 300_011)
    assert (after.data, after.truncated, after.offset) == (b"next", False, 300_011)


def test_copytruncate_is_detected_and_reported(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"one\ntwo\n")
    fd = os.open(f, os.O_RDONLY)
    reader = FileReader("app", str(f), file_key(f.stat()), fd=fd)
    try:
        assert lines(reader.read(10, 0.0)) == [b"one", b"two"]
        shutil.copy(f, tmp_path / "a.jsonl.1")
        with f.open("r+b") as out:
            out.truncate(0)
            out.write(b"new\n")
        truncated, line = reader.read(10, 1.0)
    finally:
        reader.close()
    assert isinstance(truncated, Truncated)
    assert (truncated.offset, truncated.last_seen_size, truncated.size) == (8, 8, 4)
    assert isinstance(line, Line) and (line.data, line.offset) == (b"new", 0)


def test_truncation_then_regrowth_past_offset_is_caught_by_fingerprint(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"first line\n")
    fd = os.open(f, os.O_RDONLY)
    reader = FileReader("app", str(f), file_key(f.stat()), fd=fd)
    try:
        assert lines(reader.read(10, 0.0)) == [b"first line"]
        with f.open("r+b") as out:  # truncated and refilled beyond our offset before a poll
            out.truncate(0)
            out.write(b"other content\nmore\n")
        items = reader.read(10, 1.0)
    finally:
        reader.close()
    assert isinstance(items[0], Truncated)
    assert lines(items) == [b"other content", b"more"]


def test_rename_rotation_finishes_the_old_file_then_closes_it(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    t, clock = make(tmp_path, tailers, close_rotated_after_s=5.0)
    assert lines(t.read(10)) == [b"1"]
    old_key = file_key(f.stat())
    with f.open("ab") as out:
        out.write(b"2\n")  # not read yet
    f.rename(tmp_path / "a.jsonl.1")  # out of the glob
    with (tmp_path / "a.jsonl.1").open("ab") as out:
        out.write(b"3\n")  # late write by the application, through its old handle
    f.write_bytes(b"new-1\n")
    clock.now = 1.0
    assert lines(t.read(10)) == [b"2", b"3", b"new-1"]  # rotated file first
    clock.now = 7.0
    items = t.read(10)
    assert items == [Closed("app", str(f), old_key, "rotated")]
    assert t.forgotten() == {old_key}
    assert t.open_files() == 1


def test_rename_within_the_glob_keeps_the_position(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    t, clock = make(tmp_path, tailers)
    assert lines(t.read(10)) == [b"1"]
    moved = tmp_path / "b.jsonl"
    f.rename(moved)
    with moved.open("ab") as out:
        out.write(b"2\n")
    clock.now = 1.0
    items = t.read(10)
    assert lines(items) == [b"2"]
    assert isinstance(items[0], Line) and items[0].path == str(moved)


def test_deleted_file_is_read_to_its_end(tmp_path: Path, tailers: list[FileTailer]) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    t, clock = make(tmp_path, tailers, close_rotated_after_s=0.0)
    assert lines(t.read(10)) == [b"1"]
    with f.open("ab") as out:
        out.write(b"2\n3\n")
    f.unlink()
    clock.now = 1.0
    items = t.read(10)
    assert lines(items) == [b"2", b"3"]
    assert isinstance(items[-1], Closed) and items[-1].reason == "rotated"
    assert t.open_files() == 0


def test_inactive_file_is_closed_and_reopened_on_change(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    t, clock = make(tmp_path, tailers, close_inactive_s=10.0)
    assert lines(t.read(10)) == [b"1"]
    clock.now = 11.0
    assert t.read(10) == [Closed("app", str(f), file_key(f.stat()), "inactive")]
    assert t.open_files() == 0
    with f.open("ab") as out:
        out.write(b"2\n")
    clock.now = 12.0
    assert lines(t.read(10)) == [b"2"]
    assert t.open_files() == 1


def test_fingerprint_grows_to_one_kib_and_matches_prefixes(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"abc")
    fd = os.open(f, os.O_RDONLY)
    try:
        small = fingerprint(fd, 3)
        assert covered(small) == 3 and matches(fd, small)
        with f.open("ab") as out:
            out.write(b"x" * 5000)
        full = fingerprint(fd, 5003)
        assert covered(full) == FINGERPRINT_BYTES
        assert matches(fd, small) and matches(fd, full)
        assert fingerprint(fd, 0) == "" and matches(fd, "")
    finally:
        os.close(fd)
    g = tmp_path / "b"
    g.write_bytes(b"abd" + b"x" * 5000)
    fd = os.open(g, os.O_RDONLY)
    try:
        assert not matches(fd, small) and not matches(fd, full)
    finally:
        os.close(fd)


def test_resolve_matches_excludes_on_name_or_path(tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.jsonl.gz", "c.log"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.jsonl").mkdir()
    pattern = str(tmp_path / "*")
    assert resolve([pattern], ["*.gz", str(tmp_path / "c.*")]) == [str(tmp_path / "a.jsonl")]


def test_wait_returns_when_stopped(tmp_path: Path, tailers: list[FileTailer]) -> None:
    t, _ = make(tmp_path, tailers)
    stop = threading.Event()
    stop.set()
    t.wait(60.0, stop)  # returns at once instead of sleeping


def test_watch_roots() -> None:
    assert watch_roots(["/var/log/crm/audit*.jsonl", "/var/log/*/x.log", "/a/b.log"]) == {
        "/var/log/crm": False,
        "/var/log": True,
        "/a": False,
    }


def test_inotify_wakes_the_waiter(tmp_path: Path) -> None:
    watcher = Watcher([str(tmp_path / "*.jsonl")])
    watcher.start()
    try:
        (tmp_path / "a.jsonl").write_bytes(b"x\n")
        assert watcher.wake.wait(30)
    finally:
        watcher.stop()


def test_a_read_pass_is_bounded_in_bytes(tmp_path: Path, tailers: list[FileTailer]) -> None:
    from agent.tail import poller

    (tmp_path / "a.jsonl").write_bytes((b"y" * 99 + b"\n") * 2000)  # 200 kB: several 64 KiB chunks
    t, _ = make(tmp_path, tailers)
    old, poller.READ_BYTES = poller.READ_BYTES, 1000  # type: ignore[misc]
    try:
        first = t.read(10_000)
        assert t.busy() and 10 <= len(first) < 2000
        rest: list[TailItem] = []
        while t.busy() or not rest:
            rest += t.read(10_000)
    finally:
        poller.READ_BYTES = old  # type: ignore[misc]
    assert len(first) + len(rest) == 2000
