"""Every line of the foreign CRM log through the source's mapping (the real jsonlines
parser) and the collector's document mapping gives the document the log's own
documentation says it should — no servers needed, so a mapping change is checked in a
second; tests/integration/test_foreign_crm.py does the same through the real processes."""

from __future__ import annotations

import datetime as dt
import json
import time

from agent.parsers import get_parser
from collector.documents import to_document
from tests.foreign_crm.config import differences, source_section
from tests.foreign_crm.generator import generate

START = dt.datetime(2026, 12, 3, 20, 17, 5, tzinfo=dt.UTC)


def test_every_line_maps_faithfully_without_flags() -> None:
    source = source_section(["/var/log/helvetia-crm/audit-*.jsonl"])
    parse = get_parser("jsonlines", source["mapping"], None, source["actions"])
    log = generate(14, START)
    wrong: list[str] = []
    for number, line in enumerate(log.lines, start=1):
        event = parse(line.encode())
        assert event is not None
        assert not event.flags and not event.attributes, (number, event.flags, event.attributes)
        event.sequence = number
        document = to_document(event, agent_id="a", received_unix_nano=time.time_ns()).source
        wrong += [f"line {number}: {p}" for p in differences(document, json.loads(line))]
    assert not wrong, "\n".join(wrong[:20])


def test_the_oracle_notices_a_wrong_mapping() -> None:
    source = source_section(["/var/log/helvetia-crm/audit-*.jsonl"])
    # The old way: no value translation, no item mapping of `changes`.
    source["mapping"]["outcome"] = "result"
    source["mapping"]["changes"] = "changes"
    parse = get_parser("jsonlines", source["mapping"], None, source["actions"])
    line = next(x for x in generate(14, START).lines if '"changes"' in x)
    event = parse(line.encode())
    assert event is not None
    document = to_document(event, agent_id="a", received_unix_nano=time.time_ns()).source
    problems = differences(document, json.loads(line))
    assert any(p.startswith("event.outcome") for p in problems)
    assert any(p.startswith("crm.changes") for p in problems)
