"""SIGHUP reload with real parts: an agent and a collector process, mTLS certificates
from the PKI helper, the session's OpenSearch. In one agent run: a bad config is
rejected while the old one keeps shipping, a source is added (its lines arrive), a
source is removed (every line written before the reload arrives, none after), the agent
restarts and the source is added back (its file resumes where it was left), and over it
all every line is in OpenSearch exactly once with sequences 1..N without a gap.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from tests.helpers import free_port
from tests.integration.support import (
    agent_config_head,
    agent_docs,
    drop_prefix,
    write_collector_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

DONE = "test.done"


@dataclass
class Env:
    root: Path
    pki: Path
    prefix: str
    port: int
    client: OpenSearch
    collector: ManagedProcess

    def docs(self, agent_id: str) -> list[dict[str, Any]]:
        return agent_docs(self.client, self.prefix, agent_id)


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("reload")
    pki = root / "pki"
    init_ca(pki)
    prefix = f"reload-{uuid.uuid4().hex[:8]}"
    port = free_port()
    collector_yaml = write_collector_config(
        root / "collector.yaml", pki=pki, url=opensearch_url, prefix=prefix, port=port
    )
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(collector_yaml)], root / "collector.log"
    )
    try:
        yield Env(root, pki, prefix, port, client, collector)
    finally:
        collector.stop()
        drop_prefix(client, prefix)


def line(n: int, action: str = "record.view") -> bytes:
    return json.dumps({"timestamp": 1772356500 + n % 86400, "event": action, "n": n}).encode()


def append(path: Path, numbers: range, action: str = "record.view") -> None:
    with path.open("ab") as out:
        out.write(b"".join(line(n, action) + b"\n" for n in numbers))


def source(name: str, pattern: Path) -> str:
    return (
        f'  - {{name: {name}, format: jsonlines, paths: ["{pattern}"], '
        "poll_interval_s: 0.1, close_rotated_after_s: 1.0}"
    )


def test_sighup_add_remove_and_bad_config_exactly_once(env: Env, tmp_path: Path) -> None:
    agent_id = f"reload-{uuid.uuid4().hex[:6]}"
    issued = issue_agent(env.pki, agent_id)
    app, db = tmp_path / "app", tmp_path / "db"
    app.mkdir()
    db.mkdir()
    yaml = tmp_path / "agent.yaml"
    head = agent_config_head(
        agent_id=agent_id,
        state_dir=tmp_path / "state",
        port=env.port,
        ca=env.pki / "ca.crt",
        cert=issued.cert,
        key=issued.key,
    )

    def configure(*sources: str, extra: str = "") -> None:
        yaml.write_text(head + extra + "\nsources:\n" + "\n".join(sources) + "\n")

    app_log, db_log = app / "app.jsonl", db / "db.jsonl"
    append(app_log, range(0, 1000))
    append(db_log, range(5000, 5500))  # there before its source is added
    configure(source("app", app / "*.jsonl"))
    agent = ManagedProcess(["crm-audit-agent", "run", "-c", str(yaml)], tmp_path / "agent.log")
    hups = 0

    def reload(expect: str) -> None:
        nonlocal hups
        hups += 1
        agent.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: agent.log().count("SIGHUP: reloading") >= hups and expect in agent.log(),
            f"reload {hups}: {expect!r}",
            timeout=60,
            watch=[agent, env.collector],
        )

    def delivered() -> set[int]:
        return {int(d["crm"]["attributes"]["n"]) for d in env.docs(agent_id)}

    def wait_delivered(numbers: set[int], what: str) -> None:
        wait_for(lambda: numbers <= delivered(), what, timeout=180, watch=[agent, env.collector])

    try:
        wait_delivered(set(range(1000)), "the first 1000 lines")

        # 1. A bad config (three problems: an unknown key, `batch` given twice — the head
        # has one —, max_events 0): rejected, one line each; the old one runs on.
        configure(source("app", app / "*.jsonl"), extra="bogus: 1\nbatch: {max_events: 0}\n")
        reload("config reload rejected (3 problems)")
        append(app_log, range(1000, 2000))
        wait_delivered(set(range(2000)), "lines written after the rejected reload")

        # 2. A source added: its files are picked up, old and new lines.
        configure(source("app", app / "*.jsonl"), source("db", db / "*.jsonl"))
        reload("config reloaded: added: db")
        append(db_log, range(5500, 5600))
        wait_delivered(set(range(5000, 5600)), "the added source's lines")

        # 3. A source removed right after lines were written to it: all of them arrive,
        # then it is no longer read.
        append(app_log, range(2000, 3000))
        configure(source("db", db / "*.jsonl"))
        reload("config reloaded: removed: app")
        wait_for(
            lambda: "of a removed source at offset" in agent.log(),
            "the removed source's file to be finished",
            timeout=60,
            watch=[agent],
        )
        append(app_log, range(3000, 3100))  # not read now: its source is gone
        append(db_log, range(5600, 5700))
        wait_delivered(set(range(3000)) | set(range(5000, 5700)), "every line so far")
        assert not delivered() & set(range(3000, 3100))

        # 4. Restarted while the source is out of the config, then the source is added
        # back: its file resumes where it was left (the lines written meanwhile are
        # read), nothing of it is read a second time.
        code = agent.stop()
        assert code == 0, agent.log()[-3000:]
        agent = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(yaml)], tmp_path / "agent-2.log"
        )
        hups = 0
        append(db_log, range(5700, 5750))
        wait_delivered(set(range(5700, 5750)), "the restarted agent's lines")
        configure(source("db", db / "*.jsonl"), source("app", app / "*.jsonl"))
        reload("config reloaded: added: app")
        append(app_log, range(3100, 3200))
        append(db_log, range(9999, 10000), DONE)
        wait_delivered(set(range(3200)) | set(range(5000, 5750)) | {9999}, "every line")
    finally:
        code = agent.stop()
    assert code == 0, agent.log()[-3000:]

    docs = env.docs(agent_id)
    ids = [d["_id"] for d in docs]
    assert len(ids) == len(set(ids))
    numbers = [int(d["crm"]["attributes"]["n"]) for d in docs]
    assert len(numbers) == len(set(numbers)), "a line was delivered twice"
    assert set(numbers) == set(range(3200)) | set(range(5000, 5750)) | {9999}
    by_source = {int(d["crm"]["attributes"]["n"]): d["crm"]["source"]["name"] for d in docs}
    assert {by_source[n] for n in range(3200)} == {"app"}
    assert {by_source[n] for n in range(5000, 5750)} == {"db"}
    # One numbering across all reloads: sequences 1..N, no gap, no reuse.
    sequences = sorted(int(d["event"]["sequence"]) for d in docs)
    assert sequences == list(range(1, len(docs) + 1))
    assert "Traceback" not in agent.log()
