"""docs/mapping.md documents the vocabulary the parsers use, and every target field."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from agent.parsers.categorize import categorize, vocabulary
from agent.parsers.mapping import TARGETS

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "mapping.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_mapping_vocabulary", ROOT / "scripts" / "gen_mapping_vocabulary.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_mapping_vocabulary"] = module
    spec.loader.exec_module(module)
    return module


def test_vocabulary_table_is_fresh() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert _generator().render(text) == text, "run scripts/gen_mapping_vocabulary.py"


def test_table_rows_are_the_categorizer() -> None:
    text = DOC.read_text(encoding="utf-8")
    for row in vocabulary():
        assert f"| `{row.action}` |" in text
        if not row.action.endswith("*"):
            category = categorize(row.action)
            assert category is not None and category.event_category == row.event_category


def test_every_target_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for target in TARGETS:
        head, _, last = target.rpartition(".")
        assert f"`{target}`" in text or (head and f"`.{last}`" in text), target
