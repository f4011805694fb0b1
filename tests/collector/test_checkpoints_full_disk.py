"""Collector checkpoints on a real full filesystem (a small tmpfs mounted for the test):
appends fail while it is full, leave no partial line, and resume once there is room."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import CheckpointFile, read_checkpoints
from proto import integrity
from tests.helpers import tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "size=64k") as mount:
        yield mount


def test_checkpoints_pause_on_a_full_disk_and_resume(small_disk: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    file = CheckpointFile(small_disk, key)
    heads = {f"agent-{i:03d}": (i, bytes(32)) for i in range(40)}  # ~4 KiB lines
    assert file.append(heads, now_unix_nano=1)
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(bytes(512))
            out.flush()
    size = file.path.stat().st_size
    moved = {**heads, "agent-000": (100, bytes(32))}
    with pytest.raises(OSError, match="No space left"):
        file.append(moved, now_unix_nano=2)
    assert file.path.stat().st_size == size, "a partial line was left behind"
    filler.unlink()
    assert file.append(moved, now_unix_nano=3)
    view = read_checkpoints(small_disk, {integrity.key_id(public): public})
    assert view.problems == []
    assert view.lines == 2
    assert view.heads["agent-000"][0] == 100
