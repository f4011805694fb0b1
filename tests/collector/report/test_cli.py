"""`crm-audit report` / `report-verify` usage errors: one line on stderr, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.admin.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "2026-10-01", "--to", "2026-12-31"], "--opensearch URL"),
        (
            ["--opensearch", "http://127.0.0.1:1", "--from", "2026-12-01", "--to", "2026-10-01"],
            "--to must be after --from",
        ),
        (
            ["--opensearch", "http://127.0.0.1:1", "--from", "Q4", "--to", "2026-10-01"],
            "not a date",
        ),
        (
            [
                "--opensearch",
                "http://127.0.0.1:1",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-02",
                "--silence-gap",
                "soon",
            ],
            "not a positive duration",
        ),
        (
            [
                "--opensearch",
                "http://127.0.0.1:1",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-02",
                "--signing-key",
                "/nonexistent/key.pem",
            ],
            "no such file",
        ),
        (
            [
                "--opensearch",
                "http://127.0.0.1:1",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-02",
                "--keys",
                "/nonexistent",
            ],
            "not a directory",
        ),
        (
            [
                "--opensearch",
                "http://127.0.0.1:1",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-02",
                "--checkpoints",
                "/tmp",
            ],
            "a *.pub in the checkpoint directory is not trusted",
        ),
    ],
)
def test_report_usage_errors(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    code = main(["report", "--out", str(tmp_path / "r.html"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_verify_usage_and_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "r.html"
    page.write_text("<html>not a report</html>")
    assert main(["report-verify", str(page), "--key", str(tmp_path / "missing.pub")]) == 2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from proto import integrity

    pub = tmp_path / "k.pub"
    pub.write_bytes(integrity.public_key_pem(Ed25519PrivateKey.generate().public_key()))
    capsys.readouterr()
    assert main(["report-verify", str(page), "--key", str(pub)]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_unreachable_opensearch_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "report",
            "--opensearch",
            "http://127.0.0.1:9",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-02",
            "--out",
            str(tmp_path / "r.html"),
        ]
    )
    assert code == 1
    assert "unreachable" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
