"""`crm-audit verify` on a live stream and with overlapping evidence: the real collector
process (mTLS gRPC, integrity gate, checkpoints) on the real OpenSearch of the session.

The sending agent is the test client of `test_tamper`. Each test asserts the complete
list of ranges: exactly one verdict per sequence, never two kinds over one sequence.
"""

from __future__ import annotations

import json

import pytest

from tests.integration import test_tamper
from tests.integration.test_tamper import (
    BATCH,
    EVENTS,
    Env,
    SendingAgent,
    delete_where,
    get_doc,
    ranges,
    seal_doc,
    verify,
)

pytestmark = pytest.mark.integration

env = test_tamper.env  # the module-scoped collector of test_tamper, started for this module
agent = test_tamper.agent


def _delete_seal(env: Env, agent: SendingAgent, first: int) -> None:
    hit = seal_doc(env, agent.name, first)
    env.client.delete(index=hit["_index"], id=hit["_id"], refresh=True)


def test_unsealed_tail_is_pending_within_the_grace_period(env: Env, agent: SendingAgent) -> None:
    """Events searchable, their seal not (yet): what a live stream looks like for a moment."""
    agent.ingest()
    _delete_seal(env, agent, 2 * BATCH + 1)
    code, report = verify(env, agent.name)  # default grace: 120 s
    assert code == 0, report
    assert ranges(report, agent.name) == [("VALID", 1, 2 * BATCH), ("PENDING", 21, EVENTS)]
    assert report["valid"] is True
    # The same documents once the grace period is over: their seal counts as deleted,
    # and the signed checkpoint vouches for them (they chain into the head it attests).
    # Without it: INSERTED (test_tamper.py::test_last_seal_deleted_vouched_by_the_checkpoint).
    code, report = verify(env, agent.name, "--grace", "0.001")
    assert code == 1
    assert ranges(report, agent.name) == [("VALID", 1, 2 * BATCH), ("SEAL_MISSING", 21, EVENTS)]
    gone = report["agents"][agent.name]["ranges"][1]
    assert gone["indices"] == [get_doc(env, agent.name, 21)["_index"]]
    # --grace 0 turns PENDING off
    code, report = verify(env, agent.name, "--grace", "0")
    assert code == 1
    assert ("SEAL_MISSING", 21, EVENTS) in ranges(report, agent.name)


def test_pending_run_stops_at_a_gap(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    _delete_seal(env, agent, 2 * BATCH + 1)
    delete_where(
        env,
        env.events,
        {
            "bool": {
                "filter": [{"term": {"agent.id": agent.name}}, {"term": {"event.sequence": 25}}]
            }
        },
    )
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [
        ("VALID", 1, 20),
        ("PENDING", 21, 24),
        ("TAIL_TRUNCATED", 25, 25),  # the checkpoint attests it, no document is left
        ("INSERTED", 26, EVENTS),  # after a gap the run is not a live tail
    ]


def test_unsealed_events_and_truncated_tail_get_one_verdict_each(
    env: Env, agent: SendingAgent
) -> None:
    """The last seal and the newest events deleted: the documents left are INSERTED, the
    sequences only the checkpoint attests TAIL_TRUNCATED — not both over one range."""
    agent.ingest()
    _delete_seal(env, agent, 2 * BATCH + 1)
    delete_where(
        env,
        env.events,
        {
            "bool": {
                "filter": [
                    {"term": {"agent.id": agent.name}},
                    {"range": {"event.sequence": {"gte": 28}}},
                ]
            }
        },
    )
    code, report = verify(env, agent.name, "--grace", "0")
    assert code == 1
    assert ranges(report, agent.name) == [
        ("VALID", 1, 20),
        ("INSERTED", 21, 27),
        ("TAIL_TRUNCATED", 28, EVENTS),
    ]


def test_altered_seal_is_seal_invalid_only(env: Env, agent: SendingAgent) -> None:
    """The next seal vouches for the events too (SEAL_MISSING reading); the altered seal
    document is the finding, once."""
    agent.ingest()
    hit = seal_doc(env, agent.name, BATCH + 1)
    env.client.update(
        index=hit["_index"], id=hit["_id"], body={"doc": {"seal": {"event_count": 9}}}, refresh=True
    )
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [
        ("VALID", 1, BATCH),
        ("SEAL_INVALID", BATCH + 1, 2 * BATCH),
        ("VALID", 2 * BATCH + 1, EVENTS),
    ]
    assert report["agents"][agent.name]["ranges"][1]["indices"] == [hit["_index"]]


def test_forged_duplicate_in_another_index_is_the_inserted_one(
    env: Env, agent: SendingAgent
) -> None:
    """The copy sits in an index that sorts before the genuine one; the genuine document
    is the one in the index named by the signed event time: VALID; the copy INSERTED."""
    agent.ingest()
    genuine = get_doc(env, agent.name, 4)
    other = f"{env.prefix}-events-standard-2026.10"
    assert other < genuine["_index"]
    env.client.index(index=other, id=f"{agent.name}:4", body=genuine["_source"], refresh=True)
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [
        ("VALID", 1, 3),
        ("INSERTED", 4, 4),
        ("VALID", 5, EVENTS),
    ]
    finding = report["agents"][agent.name]["ranges"][1]
    assert f"in {other}" in finding["detail"]
    assert f"the signed one is in {genuine['_index']}" in finding["detail"]
    assert sorted(finding["indices"]) == sorted([other, genuine["_index"]])
    # the genuine document is untouched: altering the copy changes nothing else
    env.client.update(index=other, id=f"{agent.name}:4", body={"doc": {"user": {"name": "x"}}})
    code, again = verify(env, agent.name)
    assert ranges(again, agent.name) == ranges(report, agent.name), json.dumps(again)
