from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.errors import CheckpointError

STREAM = "0123456789abcdef"


def test_missing_checkpoint_is_fresh(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.load() == Checkpoint(next_sequence=1, files={})


def test_roundtrip_and_format(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    files = {"2049:77": FileOffset("/var/log/crm/audit.jsonl", 1234, "10:ab")}
    cp = Checkpoint(42, files, "0123456789abcdef", bytes(range(32)))
    store.save(cp)
    assert store.load() == cp
    assert json.loads(store.path.read_text()) == {
        "version": 3,
        "stream_id": "0123456789abcdef",
        "next_sequence": 42,
        "head": bytes(range(32)).hex(),
        "files": {
            "2049:77": {"path": "/var/log/crm/audit.jsonl", "offset": 1234, "fingerprint": "10:ab"}
        },
    }

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temp file left


def test_save_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(tmp_path)
    store.save(Checkpoint(5, {}, STREAM))

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    # A failure before the rename leaves the previous checkpoint whole.
    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(Checkpoint(9, {}, STREAM))
    monkeypatch.undo()
    assert store.load().next_sequence == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 4, "next_sequence": 1, "files": {}}', "unsupported version 4"),
        ('{"version": 3, "next_sequence": 1, "files": {}, "head": ""}', "stream_id"),
        (
            '{"version": 3, "stream_id": "0123456789abcdef", "next_sequence": 1, '
            '"files": {}, "head": "abcd"}',
            "head",
        ),
        ('{"version": 1, "next_sequence": 0, "files": {}}', "next_sequence"),
        ('{"version": 1, "next_sequence": 1, "files": {"1:2": {"path": "x"}}}', "files"),
        ("{not json", "invalid checkpoint"),
        ("[]", "not a JSON object"),
    ],
)
def test_unusable_checkpoint_is_an_error(tmp_path: Path, content: str, message: str) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        store.load()


def test_version_1_is_still_read(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(
        '{"version": 1, "next_sequence": 5, "files": {"1:2": {"path": "/x", "offset": 3}}}'
    )
    assert store.load() == Checkpoint(5, {"1:2": FileOffset("/x", 3, "")})


def test_version_2_is_read_as_a_checkpoint_without_a_stream(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(
        '{"version": 2, "next_sequence": 9, "files": {"1:2": '
        '{"path": "/x", "offset": 3, "fingerprint": "3:ab"}}}'
    )
    loaded = store.load()
    assert (loaded.stream_id, loaded.head, loaded.next_sequence) == ("", b"", 9)
