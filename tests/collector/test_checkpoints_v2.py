"""Checkpoint lines with format 2 streams, and the seed a restarted collector takes from
its own last line (collector.checkpoints, collector.verified)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from collector.checkpoints import CheckpointFile, read_checkpoints
from collector.verified import VerifiedHeads
from proto import integrity

STREAM = "0123456789abcdef"
H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {integrity.key_id(key.public_key()): key.public_key()}


def test_a_line_holds_format_1_chains_under_agents_and_streams_apart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    file = CheckpointFile(tmp_path, key)
    heads = {("old-agent", ""): (7, H1), ("new-agent", STREAM): (3, H2)}
    assert file.append(heads, now_unix_nano=1)
    assert not file.append(heads, now_unix_nano=2)  # nothing moved
    line = json.loads(file.path.read_text().splitlines()[-1])
    assert line["v"] == 2
    assert line["agents"] == {"old-agent": {"sequence": 7, "head": H1.hex()}}
    assert line["streams"] == {
        f"new-agent:{STREAM}": {
            "agent": "new-agent",
            "stream": STREAM,
            "sequence": 3,
            "head": H2.hex(),
        }
    }
    view = read_checkpoints(tmp_path, trusted(key))
    assert view.problems == []
    assert view.heads["old-agent"][:2] == (7, H1.hex())
    assert "new-agent" not in view.heads
    assert view.streams[("new-agent", STREAM)][:2] == (3, H2.hex())


def test_a_restarted_collector_starts_from_its_own_last_line(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    CheckpointFile(tmp_path, key).append(
        {("a", ""): (7, H1), ("b", STREAM): (3, H2)}, now_unix_nano=1
    )
    verified = VerifiedHeads()
    verified.seed(CheckpointFile(tmp_path, key).last_heads())
    verified.record("b", STREAM, 9, H3)  # verified since the restart
    verified.record("a", "", 6, H3)  # an older range re-delivered: not lower
    assert verified.snapshot() == {("a", ""): (7, H1), ("b", STREAM): (9, H3)}


def test_an_edited_last_line_seeds_nothing(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    file = CheckpointFile(tmp_path, key)
    file.append({("a", ""): (7, H1)}, now_unix_nano=1)
    line = json.loads(file.path.read_text())
    line["agents"]["a"]["head"] = H3.hex()  # a head the collector never verified
    file.path.write_text(json.dumps(line) + "\n")
    assert CheckpointFile(tmp_path, key).last_heads() == {}
