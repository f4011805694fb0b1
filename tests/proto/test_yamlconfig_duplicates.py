"""A key given twice in one mapping is an error (YAML loaders keep the last silently)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from proto.yamlconfig import load


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Inner(_Model):
    port: int = 1
    host: str = "a"


class Config(_Model):
    name: str
    inner: Inner = Inner()
    items: list[Inner] = []


def test_duplicate_keys_are_reported_with_line_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: a\n"  # 1
        "inner:\n"  # 2
        "  port: 2\n"  # 3
        "  port: 3\n"  # 4
        "items:\n"  # 5
        "  - host: x\n"  # 6
        "    host: y\n"  # 7
        "name: b\n"  # 8
        "retries: 3\n",  # 9: also wrong; reported at the same time
        encoding="utf-8",
    )
    loaded = load(path, Config, {})
    assert loaded.config is None
    assert loaded.problems == [
        f"{path}:4: inner.port: duplicate key (first given on line 3)",
        f"{path}:7: items.0.host: duplicate key (first given on line 6)",
        f"{path}:8: name: duplicate key (first given on line 1)",
        f"{path}:9: retries: unknown key",
    ]


def test_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner: {port: 2}\nitems: [{port: 3}, {port: 4}]\n", encoding="utf-8")
    loaded = load(path, Config, {})
    assert loaded.problems == []
    assert loaded.config is not None and loaded.config.items[1].port == 4
