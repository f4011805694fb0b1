"""`collector.verify.receipts`: which exported receipt lines verify trusts."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.verify.receipts import read_receipts
from proto import integrity
from tests.integration.v2_store import receipt_line

STREAM = "0123456789abcdef"


def _trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {integrity.key_id(key.public_key()): key.public_key()}


def test_highest_valid_receipt_per_stream_and_every_bad_line_reported(tmp_path: Path) -> None:
    collector, rogue = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = b"\x01" * 32
    (tmp_path / "a.jsonl").write_text(
        "\n".join(
            [
                receipt_line(collector, "a1", STREAM, 10, head, 1),
                receipt_line(collector, "a1", STREAM, 30, head, 2),
                receipt_line(collector, "a1", STREAM, 20, head, 3),
                receipt_line(rogue, "a1", STREAM, 99, head, 4),  # not the collector's key
                '{"receipt": "not base64!"}',
                "garbage",
                "",
            ]
        ),
        encoding="utf-8",
    )
    (tmp_path / "ignored.txt").write_text("not a receipt file", encoding="utf-8")
    view = read_receipts(tmp_path, _trusted(collector))
    assert view.count == 3
    assert view.heads[("a1", STREAM)].sequence == 30
    assert view.heads[("a1", STREAM)].where.endswith("a.jsonl:2")
    assert len(view.problems) == 3
    assert "a.jsonl:4" in view.problems[0] and "not trusted" in view.problems[0]
    assert all("a.jsonl:" in p for p in view.problems)


def test_tampered_receipt_does_not_verify(tmp_path: Path) -> None:
    collector = Ed25519PrivateKey.generate()
    line = receipt_line(collector, "a1", STREAM, 10, b"\x02" * 32, 1)
    forged = line.replace('"last_sequence": 10', '"last_sequence": 11')  # informational only
    (tmp_path / "r.jsonl").write_text(forged + "\n", encoding="utf-8")
    view = read_receipts(tmp_path, _trusted(collector))
    assert view.heads[("a1", STREAM)].sequence == 10  # only the signed bytes count


def test_missing_or_empty_directory_is_a_problem(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    assert "does not exist" in read_receipts(tmp_path / "nope", _trusted(key)).problems[0]
    assert "no receipt file" in read_receipts(tmp_path, _trusted(key)).problems[0]


def test_two_heads_for_one_position_are_reported(tmp_path: Path) -> None:
    collector = Ed25519PrivateKey.generate()
    (tmp_path / "r.jsonl").write_text(
        receipt_line(collector, "a1", STREAM, 10, b"\x01" * 32, 1)
        + "\n"
        + receipt_line(collector, "a1", STREAM, 10, b"\x02" * 32, 2)
        + "\n",
        encoding="utf-8",
    )
    view = read_receipts(tmp_path, _trusted(collector))
    assert len(view.problems) == 1
    assert "r.jsonl:2" in view.problems[0] and "another head than" in view.problems[0]
