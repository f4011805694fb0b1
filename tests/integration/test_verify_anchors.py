"""Pinned trust and the expected set of `crm-audit verify`: the real collector process
(mTLS gRPC, integrity gate, signed checkpoints) on the real OpenSearch of the session.

The sending agent is the test client of `test_tamper`. The attacker here can write
OpenSearch and the checkpoint directory, not the investigator's keys directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import CheckpointFile
from proto import integrity
from tests.integration import test_tamper
from tests.integration.test_tamper import BATCH, Env, SendingAgent, delete_where, seal_doc
from tests.processes import BIN

pytestmark = pytest.mark.integration

env = test_tamper.env  # the module-scoped collector of test_tamper, started for this module
agent = test_tamper.agent

KEY = "collector-signing-key.pub"


def run(env: Env, *options: str) -> subprocess.CompletedProcess[str]:
    env.refresh()
    return subprocess.run(
        [
            str(BIN / "crm-audit"),
            "verify",
            "--opensearch",
            env.url,
            "--prefix",
            env.prefix,
            "--format",
            "json",
            *options,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def report_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def kinds(report: dict[str, Any], name: str) -> tuple[list[str], list[tuple[str, int, int]]]:
    entry = report["agents"][name]
    stream = [s["kind"] for s in entry["stream"]]
    return stream, [(r["kind"], r["first"], r["last"]) for r in entry["ranges"]]


def test_registered_agent_deleted_entirely_is_missing_stream(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    query = {"term": {"agent.id": agent.name}}
    delete_where(env, f"{env.events},{env.prefix}-seals,{env.prefix}-chainheads", query)
    # No checkpoints: only the keys directory says this agent exists.
    done = run(env, "--keys", str(env.keys), "--agent", agent.name)
    assert done.returncode == 1, done.stdout
    assert kinds(report_of(done), agent.name) == (["MISSING_STREAM"], [])
    # Not named: every agent registered in --keys is expected.
    report = report_of(run(env, "--keys", str(env.keys)))
    assert report["valid"] is False
    stream, _ = kinds(report, agent.name)
    assert stream == ["MISSING_STREAM"]
    detail = report["agents"][agent.name]["stream"][0]["detail"]
    assert "registered in the keys directory" in detail


def _roll_back(env: Env, agent: SendingAgent, to_seal_first: int, last: int) -> None:
    """Events and seal after `last` deleted, the chain head record set back to `last`."""
    delete_where(
        env,
        env.events,
        {
            "bool": {
                "filter": [
                    {"term": {"agent.id": agent.name}},
                    {"range": {"event.sequence": {"gt": last}}},
                ]
            }
        },
    )
    gone = seal_doc(env, agent.name, last + 1)
    env.client.delete(index=gone["_index"], id=gone["_id"], refresh=True)
    kept = seal_doc(env, agent.name, to_seal_first)["_source"]["seal"]["chain_head"]
    env.client.update(
        index=f"{env.prefix}-chainheads",
        id=agent.name,
        body={"doc": {"chain": {"sequence": last, "head": kept}}},
        refresh=True,
    )


def test_checkpoint_and_index_truncated_together_caught_with_state(
    env: Env, agent: SendingAgent, tmp_path: Path
) -> None:
    agent.ingest(2 * BATCH)  # a checkpoint at 20 ...
    agent.ingest(BATCH)  # ... and one at 30
    checkpoints = tmp_path / "checkpoints"  # this test's copy of the directory
    shutil.copytree(env.checkpoints, checkpoints)
    state = tmp_path / "verify.state"
    options = [
        "--keys",
        str(env.keys),
        "--checkpoints",
        str(checkpoints),
        "--checkpoint-key",
        str(env.checkpoints / KEY),
        "--agent",
        agent.name,
    ]
    first = report_of(run(env, *options, "--state", str(state)))
    assert kinds(first, agent.name) == ([], [("VALID", 1, 3 * BATCH)])
    assert json.loads(state.read_text())["agents"][agent.name] == 3 * BATCH

    # The attacker: the last batch gone from OpenSearch (events, seal, head rolled back)
    # and the checkpoint lines attesting it dropped from the end of the file.
    _roll_back(env, agent, BATCH + 1, 2 * BATCH)
    (file,) = checkpoints.glob("checkpoints-*.jsonl")
    lines = file.read_bytes().splitlines(keepends=True)
    keep = next(
        i
        for i, line in enumerate(lines)
        if json.loads(line)["agents"].get(agent.name, {}).get("sequence") == 3 * BATCH
    )
    file.write_bytes(b"".join(lines[:keep]))

    # Without the state of the earlier run the truncation is consistent: VALID.
    done = run(env, *options)
    assert done.returncode == 0, done.stdout
    assert kinds(report_of(done), agent.name) == ([], [("VALID", 1, 2 * BATCH)])
    # With it: caught, for the agent and for the file.
    for _ in range(2):  # and the state is not lowered by the run that saw less
        done = run(env, *options, "--state", str(state))
        assert done.returncode == 1, done.stdout
        report = report_of(done)
        assert kinds(report, agent.name) == (["CHECKPOINT_TRUNCATED"], [("VALID", 1, 2 * BATCH)])
        detail = report["agents"][agent.name]["stream"][0]["detail"]
        assert f"sequence {2 * BATCH}" in detail and f"saw {3 * BATCH}" in detail
        assert any(f"{file.name} has {keep} lines" in p for p in report["problems"])


def test_trust_comes_from_the_keys_directory_only(
    env: Env, agent: SendingAgent, tmp_path: Path
) -> None:
    agent.ingest()
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(env.checkpoints, checkpoints)
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(env.keys / f"{agent.name}.pub", keys)
    base = ["--keys", str(keys), "--checkpoints", str(checkpoints), "--agent", agent.name]

    # The collector key in the checkpoint directory is not a trust root.
    done = run(env, *base)
    assert done.returncode == 2
    assert "collector.pub" in done.stderr and len(done.stderr.strip().splitlines()) == 1

    shutil.copy(env.checkpoints / KEY, keys / "collector.pub")
    done = run(env, *base)
    assert done.returncode == 0, done.stdout
    assert kinds(report_of(done), agent.name) == ([], [("VALID", 1, 30)])

    # Whoever writes the checkpoint directory signs their own checkpoints: not trusted.
    for genuine in checkpoints.glob("checkpoints-*.jsonl"):
        genuine.unlink()
    rogue = Ed25519PrivateKey.generate()
    (checkpoints / KEY).write_bytes(integrity.public_key_pem(rogue.public_key()))
    CheckpointFile(checkpoints, rogue).append(
        {agent.name: (10, b"\x00" * 32)}, now_unix_nano=1_800_000_000_000_000_000
    )
    done = run(env, *base)
    assert done.returncode == 1
    report = report_of(done)
    assert any("unknown collector key" in p for p in report["problems"])
    assert kinds(report, agent.name) == (["CHECKPOINT_MISSING"], [("VALID", 1, 30)])


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_checkpoints_gone_or_empty(env: Env, agent: SendingAgent, tmp_path: Path, how: str) -> None:
    agent.ingest()
    checkpoints = tmp_path / "checkpoints"
    if how == "empty":
        checkpoints.mkdir()
    done = run(
        env,
        "--keys",
        str(env.keys),
        "--checkpoints",
        str(checkpoints),
        "--checkpoint-key",
        str(env.checkpoints / KEY),
        "--agent",
        agent.name,
    )
    assert done.returncode == 1, done.stderr
    report = report_of(done)
    expected = "does not exist" if how == "missing" else "no checkpoint file"
    assert any(expected in p for p in report["problems"]), report["problems"]
    assert kinds(report, agent.name) == (["CHECKPOINT_MISSING"], [("VALID", 1, 30)])
