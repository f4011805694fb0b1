"""docs/mapping.md documents the vocabulary the parsers use, and every target field."""

from __future__ import annotations

from pathlib import Path

from agent.parsers.categorize import categorize, vocabulary
from agent.parsers.mapping import TARGETS
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "mapping.md"


def test_vocabulary_table_is_fresh() -> None:
    text = DOC.read_text(encoding="utf-8")
    fresh = load_script("gen_mapping_vocabulary").render(text)
    assert fresh == text, "run scripts/gen_mapping_vocabulary.py"


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
