"""Files rotated while the agent was stopped are found again by identity among the
files beside their last path (agent.tail.siblings), read on, or reported."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from agent.checkpoint import FileOffset
from agent.tail import Closed, FileTailer, Line, SourceSpec, TailItem, Truncated, Unread
from agent.tail.fingerprint import fingerprint
from agent.tail.reader import file_key
from tests.helpers import FakeClock


def checkpoint(path: Path, offset: int) -> dict[str, FileOffset]:
    """The position an agent stopped at: `offset` bytes into `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fp = fingerprint(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return {file_key(path.stat()): FileOffset(str(path), offset, fp)}


def stopped_after_one(tmp_path: Path) -> tuple[Path, dict[str, FileOffset]]:
    """audit.jsonl holding two lines, and an agent's position after the first."""
    live = tmp_path / "audit.jsonl"
    live.write_bytes(b"one\ntwo\n")
    return live, checkpoint(live, 4)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def copytruncate(live: Path, copy: Path) -> None:
    """What logrotate's copytruncate does: copy the file, then empty it in place."""
    shutil.copyfile(live, copy)
    os.truncate(live, 0)


def start(
    tmp_path: Path, made: list[FileTailer], positions: dict[str, FileOffset]
) -> tuple[FileTailer, FakeClock]:
    clock = FakeClock()
    spec = SourceSpec("app", (str(tmp_path / "*.jsonl"),), close_rotated_after_s=1.0)
    tailer = FileTailer([spec], positions, clock, watch=False)
    made.append(tailer)
    return tailer, clock


def data(items: list[TailItem]) -> list[tuple[str, bytes]]:
    return [(Path(i.path).name, i.data) for i in items if isinstance(i, Line)]


def test_renamed_file_is_found_by_identity_and_finished(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    append(live, b"three\n")  # written after the agent stopped
    live.rename(tmp_path / "audit.jsonl.1")  # not matched by *.jsonl
    live.write_bytes(b"new\n")
    tailer, clock = start(tmp_path, tailers, positions)
    items = tailer.read(100)
    assert data(items) == [
        ("audit.jsonl.1", b"two"),
        ("audit.jsonl.1", b"three"),
        ("audit.jsonl", b"new"),
    ]
    assert not [i for i in items if isinstance(i, Truncated | Unread)]
    clock.now = 5.0
    closed = [i for i in tailer.read(100) if isinstance(i, Closed)]
    assert [(Path(c.path).name, c.reason) for c in closed] == [("audit.jsonl.1", "rotated")]


def test_dated_rename_in_the_glob_resumes_at_the_offset(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    live.rename(tmp_path / "audit-20261206.jsonl")
    tailer, _ = start(tmp_path, tailers, positions)
    assert data(tailer.read(100)) == [("audit-20261206.jsonl", b"two")]


def test_copytruncate_while_stopped_reads_the_rest_from_the_copy(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    append(live, b"three\n")
    copytruncate(live, tmp_path / "audit.jsonl.1")
    append(live, b"new\n")
    tailer, _ = start(tmp_path, tailers, positions)
    items = tailer.read(100)
    assert sorted(data(items)) == [
        ("audit.jsonl", b"new"),
        ("audit.jsonl.1", b"three"),
        ("audit.jsonl.1", b"two"),
    ]
    assert not [i for i in items if isinstance(i, Truncated | Unread)]


def test_copytruncate_while_stopped_without_a_copy_is_reported(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    os.truncate(live, 0)  # in place, no copy
    append(live, b"new\n")
    tailer, _ = start(tmp_path, tailers, positions)
    items = tailer.read(100)
    [truncated] = [i for i in items if isinstance(i, Truncated)]
    assert (truncated.offset, truncated.size, truncated.while_stopped) == (4, 4, True)
    assert data(items) == [("audit.jsonl", b"new")]


def test_compressed_rotated_file_is_reported_with_the_exact_range(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    append(live, b"three\n")
    with gzip.open(tmp_path / "audit.jsonl.1.gz", "wb") as packed:
        packed.write(live.read_bytes())
    live.unlink()
    tailer, _ = start(tmp_path, tailers, positions)
    [unread] = [i for i in tailer.read(100) if isinstance(i, Unread)]
    assert (unread.offset, unread.end) == (4, 14)
    assert "audit.jsonl.1.gz" in unread.reason
    assert tailer.forgotten() == set(positions)


def test_vanished_rotated_file_is_reported_open_ended(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live, positions = stopped_after_one(tmp_path)
    live.unlink()
    (tmp_path / "other.jsonl").write_bytes(b"x\n")
    tailer, _ = start(tmp_path, tailers, positions)
    items = tailer.read(100)
    [unread] = [i for i in items if isinstance(i, Unread)]
    assert (unread.path, unread.offset, unread.end) == (str(live), 4, None)
    assert data(items) == [("other.jsonl", b"x")]


def test_copytruncate_under_the_reader_reads_the_rest_from_the_copy(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    live = tmp_path / "audit.jsonl"
    live.write_bytes(b"one\n")
    tailer, clock = start(tmp_path, tailers, {})
    assert data(tailer.read(100)) == [("audit.jsonl", b"one")]
    append(live, b"two\nthree\n")  # written, then rotated before the agent read it
    copytruncate(live, tmp_path / "audit.jsonl.1")
    append(live, b"new\n")
    clock.now = 1.0
    items = tailer.read(100) + tailer.read(100)
    [truncated] = [i for i in items if isinstance(i, Truncated)]
    assert (truncated.offset, truncated.copy_path, truncated.copy_size) == (
        4,
        str(tmp_path / "audit.jsonl.1"),
        14,
    )
    assert sorted(data(items)) == [
        ("audit.jsonl", b"new"),
        ("audit.jsonl.1", b"three"),
        ("audit.jsonl.1", b"two"),
    ]


def test_a_file_closed_as_idle_then_renamed_is_read_to_its_end(
    tmp_path: Path, tailers: list[FileTailer]
) -> None:
    clock = FakeClock()
    spec = SourceSpec("app", (str(tmp_path / "*.jsonl"),), close_inactive_s=10.0)
    tailer = FileTailer([spec], {}, clock, watch=False)
    tailers.append(tailer)
    live = tmp_path / "audit.jsonl"
    live.write_bytes(b"one\n")
    assert data(tailer.read(100)) == [("audit.jsonl", b"one")]
    clock.now = 20.0
    assert [i for i in tailer.read(100) if isinstance(i, Closed)]  # idle: handle closed
    append(live, b"two\n")
    live.rename(tmp_path / "audit.jsonl.1")
    clock.now = 21.0
    items = tailer.read(100) + tailer.read(100)
    assert data(items) == [("audit.jsonl.1", b"two")]
