"""How `crm-audit verify|report|rules test` authenticate to a secured cluster: the
--ca / --user / --password-file / --client-cert / --client-key options.

The options against a real node with the security plugin (analyst credentials, a
foreign CA refused): tests/integration/test_security_plugin.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.admin.cli import main, opensearch_auth
from collector.admin.errors import UsageError
from collector.index import ClientAuth

URL = "https://127.0.0.1:1"


def test_no_options_no_auth() -> None:
    assert opensearch_auth("verify", "http://127.0.0.1:9200") is None


def test_basic_auth_reads_the_first_line_of_the_password_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not parsed here\n")
    secret = tmp_path / "analyst.password"
    secret.write_text("s3cret  \nsecond line ignored\n")
    auth = opensearch_auth("verify", URL, ca=ca, user="soc-analyst-1", password_file=secret)
    assert auth == ClientAuth(username="soc-analyst-1", password="s3cret", ca=ca)


def test_client_certificate_only(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_text("x")
    key.write_text("x")
    auth = opensearch_auth("report", URL, client_cert=cert, client_key=key)
    assert auth == ClientAuth(client_cert=cert, client_key=key)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": "a"}, "verify: --user and --password-file go together"),
        ({"password_file": Path("/p")}, "verify: --user and --password-file go together"),
        ({"client_cert": Path("/c")}, "verify: --client-cert and --client-key go together"),
        ({"ca": Path("/nonexistent/ca.crt")}, "verify: --ca: no such file: /nonexistent/ca.crt"),
        (
            {"user": "a", "password_file": Path("/nonexistent/pw")},
            "verify: --password-file: cannot read /nonexistent/pw",
        ),
    ],
)
def test_option_problems_are_usage_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        opensearch_auth("verify", URL, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


def test_credentials_need_https(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    with pytest.raises(UsageError, match="need an https:// URL"):
        # a password sent in clear text is refused before anything is sent
        opensearch_auth("verify", "http://127.0.0.1:9200", user="a", password_file=secret)


def test_empty_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        opensearch_auth("verify", URL, user="a", password_file=secret)


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "--opensearch", URL, "--user", "a", "--keys", "."],
        ["rules", "test", "--rules", "config/rules.yaml", "--opensearch", URL, "--user", "a"],
        [
            "report",
            "--opensearch",
            URL,
            "--user",
            "a",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-02",
            "--out",
            "never-written.html",
        ],
    ],
)
def test_every_reading_command_takes_the_options(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    repo = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(repo)
    if argv[0] == "rules":
        argv = [*argv, "--from", "2026-10-01T00:00:00Z"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--user and --password-file go together"), err
    assert len(err.splitlines()) == 1
