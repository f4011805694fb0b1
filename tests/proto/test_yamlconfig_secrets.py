"""`${ENV}` / `${file:PATH}` substitution and the masked effective config (proto.yamlconfig)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proto.yamlconfig import MASK, dump_effective, load, substitute, validate


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tls(_Model):
    key: Path
    ca: Path | None = None


class Backend(_Model):
    url: str
    username: str | None = None
    password: str | None = None
    api_token: str | None = None
    password_file: Path | None = None
    port: int = 9200
    key_id: str | None = None


class Config(_Model):
    name: str
    tls: Tls
    backend: Backend
    tags: list[str] = []
    retries: int = Field(default=3, ge=0)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


BASE = """\
name: n
tls:
  key: /etc/x/tls.key
backend:
  url: https://os:9200
"""


def test_env_and_file_references_are_substituted_before_validation(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("s3cr3t\n\n")  # only one newline goes
    (tmp_path / "token").write_text("tok\r\n")
    path = _write(
        tmp_path,
        """\
name: "${NAME}-x"
tls:
  key: /etc/x/tls.key
backend:
  url: https://os:9200
  password: ${file:secrets/pw}
  api_token: ${file:%s}
  port: ${PORT}
tags: [plain, "$${NOT_A_VAR}", "${NAME}"]
"""
        % (tmp_path / "token"),
    )
    loaded = load(path, Config, {"NAME": "prod", "PORT": "9300"})
    assert loaded.problems == []
    config = loaded.config
    assert config is not None
    assert config.name == "prod-x"
    assert config.backend.password == "s3cr3t\n"
    assert config.backend.api_token == "tok"
    assert config.backend.port == 9300  # substituted text validated like a typed value
    assert config.tags == ["plain", "${NOT_A_VAR}", "prod"]
    assert loaded.secret_paths == {
        ("name",),
        ("backend", "password"),
        ("backend", "api_token"),
        ("backend", "port"),
        ("tags", 2),
    }


def test_problems_name_file_line_and_key_path_and_never_the_value(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2")
    path = _write(
        tmp_path,
        """\
name: ${MISSING}
tls:
  key: /etc/x/tls.key
backend:
  url: https://os:9200
  password: ${file:absent.txt}
  username: "${bad name}"
  api_token: "abc${"
  port: ${file:pw}
tags: [ok, "${ALSO_MISSING}"]
retries: -1
""",
    )
    config, problems = validate(path, Config, {})
    assert config is None
    assert problems == [
        f"{path}:1: name: environment variable MISSING is not set",
        f"{path}:6: backend.password: ${{file:absent.txt}}: file not found: "
        f"{tmp_path.resolve()}/absent.txt",
        f"{path}:7: backend.username: invalid reference ${{bad name}}: expected ${{NAME}} "
        "or ${file:PATH} (write $${ for a literal ${)",
        f"{path}:8: backend.api_token: unterminated ${{ (write $${{ for a literal ${{)",
        f"{path}:10: tags.1: environment variable ALSO_MISSING is not set",
        # the substituted value is validated like a typed one
        f"{path}:9: backend.port: Input should be a valid integer, unable to parse string "
        "as an integer",
        f"{path}:11: retries: Input should be greater than or equal to 0",
    ]
    assert not any("hunter2" in p for p in problems)


def test_a_substituted_value_quoted_by_a_validator_is_masked(tmp_path: Path) -> None:
    class Strict(_Model):
        url: str
        name: str = "x"

        @field_validator("url")
        @classmethod
        def _https(cls, value: str) -> str:
            raise ValueError(f"expected https, got {value!r}")

    path = _write(tmp_path, "url: ${URL}\n")
    _, problems = validate(path, Strict, {"URL": "ftp://svc:pa55@host"})
    assert problems == [f"{path}:1: url: expected https, got '{MASK}'"]


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    path = _write(tmp_path, BASE.replace("url: https://os:9200", "url: ${file:dir}"))
    _, problems = validate(path, Config, {})
    assert problems == [
        f"{path}:5: backend.url: ${{file:dir}}: not a regular file: {tmp_path.resolve()}/dir"
    ]


def test_no_reference_leaves_values_alone() -> None:
    assert substitute("a $ b $$ {c}", {}, Path()) == ("a $ b $$ {c}", False)
    assert substitute("$${X}", {}, Path()) == ("${X}", False)
    assert substitute("${A}${A}", {"A": "x"}, Path()) == ("xx", True)


def test_default_env_is_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_AUDIT_TEST_URL", "https://from-env:9200")
    path = _write(tmp_path, BASE.replace("https://os:9200", "${CRM_AUDIT_TEST_URL}"))
    config, problems = validate(path, Config)
    assert problems == [] and config is not None
    assert config.backend.url == "https://from-env:9200"


def test_dump_effective_masks_substituted_and_secret_named_values(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
name: ${NAME}
tls:
  key: /etc/x/tls.key
backend:
  url: https://svc:pa55word@os:9200/
  username: admin
  password: literal-in-file
  api_token: tok
  password_file: /etc/x/pw
  key_id: abc123
tags: [a, "${TAG}"]
""",
    )
    loaded = load(path, Config, {"NAME": "prod", "TAG": "t-secret"})
    assert loaded.config is not None
    text = dump_effective(loaded.config, loaded.secret_paths)
    data = yaml.safe_load(text)
    assert data == {
        "name": MASK,  # substituted: masked whatever its name
        "tls": {"key": "/etc/x/tls.key", "ca": None},  # a path: shown
        "backend": {
            "url": f"https://svc:{MASK}@os:9200/",
            "username": "admin",
            "password": MASK,
            "api_token": MASK,
            "password_file": "/etc/x/pw",
            "port": 9200,  # defaults are filled in
            "key_id": "abc123",
        },
        "tags": ["a", MASK],
        "retries": 3,
    }
    for secret in ("prod", "pa55word", "literal-in-file", "tok\n", "t-secret"):
        assert secret not in text
