"""The checkpoint directory deployed append-only (docs/anchors.md): `chattr +a` on the
directory and on its files, on the real filesystem of the test's temporary directory.

The collector's writers (checkpoints, retention records) keep working — they only ever
open with O_APPEND and create new files — while rewriting, truncating, deleting or
renaming what they wrote fails for every process, root included, until someone with
CAP_LINUX_IMMUTABLE lifts the attribute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import CheckpointFile, read_checkpoints
from collector.retention_job.records import RecordFile
from proto import integrity


def _chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    chattr = shutil.which("chattr")
    assert chattr is not None
    return subprocess.run(
        [chattr, flag, *map(str, paths)], capture_output=True, text=True, check=False
    )


@pytest.fixture
def append_only(tmp_path: Path) -> Iterator[Path]:
    """An empty directory with the append-only attribute (lifted again afterwards from
    it and every file in it, so that pytest can remove it)."""
    if os.geteuid() != 0:
        pytest.skip(reason="chattr +a needs root (CAP_LINUX_IMMUTABLE)")
    if shutil.which("chattr") is None:
        pytest.skip(reason="chattr (e2fsprogs) is not installed")
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    done = _chattr("+a", directory)
    if done.returncode != 0:
        pytest.skip(reason=f"this filesystem refuses chattr +a: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        _chattr("-a", directory, *directory.iterdir())


def test_collector_appends_to_append_only_checkpoints_nobody_rewrites_them(
    append_only: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    trusted = {integrity.key_id(key.public_key()): key.public_key()}
    heads = {"crm-host-1": (10, bytes(32))}
    first = CheckpointFile(append_only, key)  # creates its file in the +a directory
    assert first.append(heads, now_unix_nano=1)
    records = RecordFile(append_only, key)
    records.append({"index": "crm-audit-events-standard-2026.01"}, now_unix_nano=2)
    assert _chattr("+a", first.path, records.path).returncode == 0

    # A restarted collector keeps appending (the writers open with O_APPEND only).
    again = CheckpointFile(append_only, key)
    assert again.append({"crm-host-1": (20, bytes(32))}, now_unix_nano=3)
    records.append({"index": "crm-audit-events-standard-2026.02"}, now_unix_nano=4)
    view = read_checkpoints(append_only, trusted)
    assert view.problems == []
    assert view.lines == 2
    assert view.heads["crm-host-1"][0] == 20

    # An attacker with root on this host, short of lifting the attribute, cannot take
    # lines back: no rewrite, truncation, positioned write, delete or rename.
    size = first.path.stat().st_size
    with pytest.raises(PermissionError):
        first.path.write_bytes(b"")
    with pytest.raises(PermissionError):
        os.truncate(first.path, size // 2)
    with pytest.raises(PermissionError):
        os.open(first.path, os.O_WRONLY)  # writable without O_APPEND: refused
    with pytest.raises(PermissionError):
        first.path.unlink()
    with pytest.raises(PermissionError):
        first.path.rename(append_only / "moved.jsonl")
    with pytest.raises(PermissionError):
        records.path.unlink()
    assert first.path.stat().st_size == size

    # A rotated collector key starts a new file: creating files in the directory works.
    rotated = CheckpointFile(append_only, Ed25519PrivateKey.generate())
    assert rotated.append(heads, now_unix_nano=5)
    assert rotated.path != first.path
