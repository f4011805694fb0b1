"""Every sample file's normalized output equals its reviewed `.expected.jsonl`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from agent.parse_command import parse_file
from agent.parsers import FORMATS

SAMPLES = Path(__file__).parent / "samples"
CASES = sorted(
    p
    for p in SAMPLES.glob("*/*")
    if p.name not in ("options.json",) and not p.name.endswith(".expected.jsonl")
)


def _normalized(path: Path) -> list[dict[str, Any]]:
    config = json.loads((path.parent / "options.json").read_text())
    fmt = config["format"]
    options = FORMATS[fmt].options_model.model_validate(config["options"])
    out = []
    for event in parse_file(path, fmt, {}, options, "sample"):
        doc = MessageToDict(event, preserving_proto_field_name=True)
        doc["log"].pop("file_path", None)
        out.append(doc)
    return out


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_sample_matches_expected_output(path: Path) -> None:
    expected_path = path.with_name(path.name + ".expected.jsonl")
    actual = _normalized(path)
    if os.environ.get("UPDATE_SAMPLES") == "1":
        expected_path.write_text(
            "".join(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n" for doc in actual)
        )
    expected = [json.loads(line) for line in expected_path.read_text().splitlines()]
    assert actual == expected
    assert actual, "every sample yields events"
    assert not [d for d in actual if "parse_error" in d.get("flags", [])]
