"""`crm-audit verify` on an agent upgraded from stream format 1: the format 2 stream
whose signed first event claims to continue the format 1 history where it verifiably
ended is a note, not AGENT_RESTARTED; any other claim is the finding, saying why.
(The claim read from signed bytes: tests/integration/test_upgrade_from_format1.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from collector.verify.anchors import AGENT_RESTARTED
from collector.verify.report import AgentReport, Report
from collector.verify.verdicts import ALTERED, VALID, Range
from collector.verify.verifier import Verifier
from proto.continuation import Continuation

HEAD = bytes(range(32))
STREAM = "0123456789abcdef"


def verifier() -> Verifier:
    def unused(*_: Any, **__: Any) -> Any:
        raise AssertionError("no OpenSearch request expected")

    return Verifier(unused, "p", lambda _: {})


def format1(last: int = 42, head: bytes = HEAD, kind: str = VALID) -> AgentReport:
    return AgentReport(
        "a", ranges=[Range(kind, 1, last)], events=last, seals=1, signed_end=(last, head)
    )


def format2(continues: Continuation | None, stream: str = STREAM) -> AgentReport:
    return AgentReport(
        "a", ranges=[Range(VALID, 1, 9)], events=9, seals=1, stream_id=stream,
        started=5, continues=continues,
    )  # fmt: skip


def test_a_stream_continuing_format_1_where_it_ended_is_a_note() -> None:
    before, after = format1(), format2(Continuation(42, HEAD))
    verifier()._restarts([before, after])
    assert (before.stream, after.stream) == ([], [])
    assert after.notes == ["continues format 1 history ended at 42"]
    assert after.valid
    report = Report(agents={before.label: before, after.label: after})
    assert report.valid
    assert "  note           continues format 1 history ended at 42" in report.to_text()
    assert report.to_json()["agents"][after.label]["notes"] == after.notes


def test_a_claim_without_head_is_judged_on_the_sequence() -> None:
    after = format2(Continuation(42, None))
    verifier()._restarts([format1(head=b"\x01" * 32), after])
    assert after.stream == [] and after.notes


@pytest.mark.parametrize(
    ("before", "claim", "why"),
    [
        (
            format1(),
            Continuation(41, HEAD),
            "the continuation claim did not match: its first event claims the format 1 "
            "history ended at sequence 41, it ends at 42",
        ),
        (
            format1(head=b"\x01" * 32),
            Continuation(42, HEAD),
            f"the continuation claim did not match: its first event claims the format 1 head "
            f"{HEAD.hex()[:16]} at sequence 42, the head there is {'01' * 8}",
        ),
        (
            format1(kind=ALTERED),
            Continuation(42, HEAD),
            f"its first event claims to continue the format 1 history ended at 42 (head "
            f"{HEAD.hex()[:16]}), but the format 1 history ends with ALTERED (1-42)",
        ),
    ],
)
def test_a_claim_that_does_not_match_is_agent_restarted(
    before: AgentReport, claim: Continuation, why: str
) -> None:
    after = format2(claim)
    verifier()._restarts([before, after])
    assert after.notes == []
    [(kind, detail)] = after.stream
    assert kind == AGENT_RESTARTED
    assert detail.endswith(f"previous format 1 history ended at sequence 42; {why}")
    assert not after.valid


def test_a_malformed_claim_and_a_claim_after_another_stream_are_agent_restarted() -> None:
    malformed = format2(None)
    malformed.claim_problem = "previous_head must be 64 lowercase hex characters"
    verifier()._restarts([format1(), malformed])
    assert [k for k, _ in malformed.stream] == [AGENT_RESTARTED]
    assert malformed.stream[0][1].endswith("but previous_head must be 64 lowercase hex characters")

    upgraded = format2(Continuation(42, HEAD))
    again = format2(Continuation(42, HEAD), stream="fedcba9876543210")
    again.started = 6
    verifier()._restarts([format1(), upgraded, again])
    assert upgraded.stream == [] and upgraded.notes
    [(kind, detail)] = again.stream
    assert kind == AGENT_RESTARTED and detail.endswith(
        f"but stream {STREAM} came after that history"
    )


def test_a_stream_without_a_claim_after_format_1_is_still_agent_restarted() -> None:
    after = format2(None)
    verifier()._restarts([format1(), after])
    assert [k for k, _ in after.stream] == [AGENT_RESTARTED]
    assert after.stream[0][1].endswith("previous format 1 history ended at sequence 42")


def test_a_claim_with_no_format_1_history_found_is_noted_not_judged() -> None:
    only = format2(Continuation(42, HEAD))
    verifier()._restarts([only])
    assert only.stream == []
    assert only.notes == [
        f"claims to continue format 1 history ended at 42 (head {HEAD.hex()[:16]}); "
        "no format 1 history found to compare"
    ]
