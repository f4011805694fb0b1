"""docs/config-reference.md must be exactly what `make config-reference` produces now.

It is generated from the pydantic config models (scripts/gen_config_reference.py), so a
config key added, renamed, re-typed or re-described without regenerating fails here.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "config-reference.md"


def test_config_reference_is_fresh() -> None:
    fresh = load_script("gen_config_reference").render()
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert committed == fresh, "docs/config-reference.md is stale: run `make config-reference`"


def test_every_key_of_both_configs_is_documented() -> None:
    from agent.config import AgentConfig
    from collector.config import CollectorConfig

    text = load_script("gen_config_reference").render()
    for name in AgentConfig.model_fields:
        assert f"| `{name}` |" in text, name
    for name in CollectorConfig.model_fields:
        assert f"| `{name}` |" in text, name
    for key in (
        "collector.tls.key",
        "sources[].multiline.start_pattern",
        "opensearch.url",
        "retention.rules[].class",
        "detection.notifiers[].url",
        "sources[].options.privacy.pseudonymize.key_file",
    ):
        assert f"| `{key}` |" in text, key


def test_collector_fields_all_have_descriptions() -> None:
    from pydantic import BaseModel

    from collector import config

    missing = [
        f"{model.__name__}.{name}"
        for model in vars(config).values()
        if isinstance(model, type)
        and issubclass(model, BaseModel)
        and model.__module__ == config.__name__
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert missing == []
