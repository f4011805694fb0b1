"""A chain restart caught from stored data alone: the real collector process (mTLS gRPC,
integrity gate, checkpoints) on the real OpenSearch of the session, and the real
`crm-audit verify` command.

The sending agent is the test client of `test_tamper` (`agent.sealing` key, `Chainer`,
`seal`). Half-way it loses its chain state and starts again from its genesis value, as
an agent whose chain.json is lost and not recovered from the spool does: the collector
raises a `fork` alert at ingest, and `verify` must name the first seal after the break
CHAIN_BREAK — with the alert index left aside, from events and seals only.
"""

from __future__ import annotations

import pytest

from agent.sealing import Chainer
from proto import integrity
from tests.integration import test_tamper
from tests.integration.test_tamper import BATCH, Env, SendingAgent, ranges, verify

pytestmark = pytest.mark.integration

env = test_tamper.env  # the module-scoped collector of test_tamper, started for this module
agent = test_tamper.agent


def test_chain_restart_is_a_chain_break(env: Env, agent: SendingAgent) -> None:
    agent.ingest(2 * BATCH)
    agent.chainer = Chainer(agent.name, None, integrity.genesis(agent.name))
    agent.ingest(2 * BATCH)
    env.refresh()
    forks = env.client.search(
        index=f"{env.prefix}-alerts",
        body={"query": {"bool": {"filter": [{"term": {"agent.id": agent.name}}]}}},
    )["hits"]["hits"]
    assert [
        (h["_source"]["alert"]["kind"], h["_source"]["alert"]["first_sequence"]) for h in forks
    ] == [("fork", 2 * BATCH + 1)]
    # The alert index is not evidence verify relies on: gone, the break is still found.
    env.client.delete(index=forks[0]["_index"], id=forks[0]["_id"], refresh=True)

    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [
        ("VALID", 1, 2 * BATCH),
        ("CHAIN_BREAK", 2 * BATCH + 1, 3 * BATCH),
        ("VALID", 3 * BATCH + 1, 4 * BATCH),
    ]
    assert "genesis" in report["agents"][agent.name]["ranges"][1]["detail"]
