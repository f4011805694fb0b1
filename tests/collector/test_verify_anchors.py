"""`collector.verify.anchors`: trust roots from the keys directory, the expected set and
the state of earlier runs (files only; the same against a real collector and OpenSearch
is in tests/integration/test_verify_anchors.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import CheckpointFile, CheckpointView
from collector.verify.anchors import (
    CHECKPOINT_TRUNCATED,
    AnchorError,
    SeenState,
    checkpoint_view,
    collector_keys,
    compare,
    line_counts,
    load_state,
    registered_agents,
    save_state,
    updated,
)
from proto import integrity


def _pub(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(integrity.public_key_pem(key.public_key()))
    return key


def test_registered_agents_are_the_key_files_but_the_collectors(tmp_path: Path) -> None:
    for name in ("crm-2", "crm-1", "collector"):
        _pub(tmp_path / f"{name}.pub")
    (tmp_path / "notes.txt").write_text("x")
    assert registered_agents(tmp_path) == ["crm-1", "crm-2"]


def test_collector_key_only_from_the_keys_dir_or_the_option(tmp_path: Path) -> None:
    keys, checkpoints = tmp_path / "keys", tmp_path / "checkpoints"
    keys.mkdir()
    checkpoints.mkdir()
    _pub(checkpoints / "collector-signing-key.pub")  # not a trust root
    assert collector_keys(keys, None) == {}
    pinned = _pub(keys / "collector.pub")
    assert list(collector_keys(keys, None)) == [integrity.key_id(pinned.public_key())]
    other = _pub(tmp_path / "other.pub")
    assert list(collector_keys(keys, tmp_path / "other.pub")) == [
        integrity.key_id(other.public_key())
    ]
    with pytest.raises(AnchorError, match=r"missing\.pub"):
        collector_keys(keys, tmp_path / "missing.pub")


def test_checkpoints_signed_by_an_untrusted_key_attest_nothing(tmp_path: Path) -> None:
    genuine = Ed25519PrivateKey.generate()
    rogue = Ed25519PrivateKey.generate()
    (tmp_path / "rogue.pub").write_bytes(integrity.public_key_pem(rogue.public_key()))
    CheckpointFile(tmp_path, rogue).append({"crm-1": (5, b"\x01" * 32)}, now_unix_nano=1)
    view = checkpoint_view(tmp_path, {integrity.key_id(genuine.public_key()): genuine.public_key()})
    assert view.heads == {}
    assert any("unknown collector key" in p for p in view.problems)


def test_state_reports_less_and_never_goes_down(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert load_state(path) == SeenState()
    saw = CheckpointView(heads={"crm-1": (30, "aa", "t"), "crm-2": (7, "bb", "t")})
    state = updated(load_state(path), saw, {"checkpoints-x.jsonl": 12})
    save_state(path, state)
    assert path.stat().st_mode & 0o077 == 0
    less = CheckpointView(heads={"crm-1": (20, "cc", "t")})
    found = compare(load_state(path), less, {"checkpoints-x.jsonl": 9})
    assert found.problems == [
        "checkpoint file checkpoints-x.jsonl has 9 lines; a previous run saw 12 "
        "(lines removed, --state)"
    ]
    assert [k for k, _ in found.agents["crm-1"]] == [CHECKPOINT_TRUNCATED]
    assert "no sequence" in found.agents["crm-2"][0][1]
    assert updated(load_state(path), less, {"checkpoints-x.jsonl": 9}) == state
    assert (
        compare(load_state(path), saw, {})
        .problems[0]
        .startswith("checkpoint file checkpoints-x.jsonl is gone")
    )


def test_a_broken_state_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"agents": [1]}')
    with pytest.raises(AnchorError, match=r"state.json: not a verify state file"):
        load_state(path)


def test_line_counts_of_a_missing_directory_are_empty(tmp_path: Path) -> None:
    assert line_counts(tmp_path / "gone") == {}


def _verify(tmp_path: Path, *options: str) -> list[str]:
    from collector.admin.cli import main

    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    argv = ["verify", "--opensearch", "http://127.0.0.1:9", "--keys", str(keys), *options]
    return [str(main(argv))]


def test_cli_misuse_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before OpenSearch is read (nothing listens on the URL)."""
    state = tmp_path / "state.json"
    assert _verify(tmp_path, "--state", str(state)) == ["2"]
    assert "--state FILE compares checkpoints" in capsys.readouterr().err
    assert _verify(tmp_path, "--checkpoints", str(tmp_path)) == ["2"]
    err = capsys.readouterr().err
    assert "collector.pub" in err and len(err.strip().splitlines()) == 1
    _pub(tmp_path / "keys" / "collector.pub")
    state.write_text("not json")
    assert _verify(tmp_path, "--checkpoints", str(tmp_path), "--state", str(state)) == ["2"]
    assert "state.json: not a verify state file" in capsys.readouterr().err
    assert _verify(tmp_path, "--grace", "-1") == ["2"]
