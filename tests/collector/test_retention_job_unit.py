"""collector.retention_job: phases from policy files, the config's minimum check, signed
record files, the job's plan (by event time, holds, minimum, no key) and the recording of
ISM's deletions — against scripted OpenSearch answers. The real node:
tests/integration/test_retention_job.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.documents import iso_nanos
from collector.errors import ConfigError
from collector.index import Response
from collector.retention_job.job import DELETE, WARM, ClassPolicy, IndexStatus, RetentionJob
from collector.retention_job.policy import DAY_NS, Phases, phases_of
from collector.retention_job.records import (
    RecordFile,
    RetentionRecords,
    read_record_files,
    runs_of,
)
from proto import integrity
from tests.collector.conftest import STANDARD_POLICY, FakeHttp, Pki, write_config

NOW = 1_795_780_800_000_000_000  # 2026-11-27T12:00:00Z


def test_phases_of_the_shipped_policy_and_others() -> None:
    standard = phases_of(json.loads(STANDARD_POLICY.read_text()))
    assert standard == Phases(warm_days=30, delete_days=2555, force_merge_segments=1)
    keep = phases_of({"policy": {"default_state": "hot", "states": [{"name": "hot"}]}})
    assert keep == Phases(None, None)
    at_once = phases_of(
        {
            "policy": {
                "default_state": "gone",
                "states": [{"name": "gone", "actions": [{"delete": {}}]}],
            }
        }
    )
    assert at_once.delete_days == 0
    with pytest.raises(ValueError, match="not an ISM age"):
        phases_of(
            {
                "policy": {
                    "states": [
                        {
                            "name": "a",
                            "transitions": [
                                {"state_name": "b", "conditions": {"min_index_age": "7y"}}
                            ],
                        },
                        {"name": "b", "actions": [{"delete": {}}]},
                    ]
                }
            }
        )


def test_config_refuses_retention_below_the_minimum(tmp_path: Path, pki: Pki) -> None:
    path = write_config(tmp_path, pki)
    data = yaml.safe_load(path.read_text())
    data["retention"]["classes"]["standard"]["minimum_days"] = 2555
    data["retention"]["enforcer"] = "collector"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).retention.classes["standard"].minimum_days == 2555
    data["retention"]["classes"]["standard"]["minimum_days"] = 2556
    data["retention"]["enforcer"] = "cron"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert "retention.classes.standard.minimum_days" in text
    assert "deletes after 2555 days, shorter than the minimum of 2556 days" in text
    assert "retention.enforcer" in text  # every problem at once


def _record(index: str, runs: list[list[int]]) -> dict[str, Any]:
    return {
        "index": index,
        "events": {"newest": iso_nanos(NOW)},
        "deleted_by": {"enforcer": "collector"},
        "agents": {"a1": {"sequences": runs}},
    }


def test_record_file_signed_linked_and_checked(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    keys = {integrity.key_id(key.public_key()): key.public_key()}
    records = RecordFile(tmp_path, key)
    records.append(_record("i-2019.01", [[1, 10], [12, 20]]), now_unix_nano=NOW)
    RecordFile(tmp_path, key).append(_record("i-2019.02", [[21, 30]]), now_unix_nano=NOW + 1)
    records.append(_record("i-2019.03", [[31, 40]]), now_unix_nano=NOW + 2)
    found = RetentionRecords()
    read_record_files(tmp_path, keys, found)
    assert found.problems == []
    assert [r.index for r in found.records] == ["i-2019.01", "i-2019.02", "i-2019.03"]
    assert found.covering("a1", 5) is not None and found.covering("a1", 11) is None
    assert found.covering("a1", 20).index == "i-2019.01"  # type: ignore[union-attr]
    assert found.covering("a1", 25).index == "i-2019.02"  # type: ignore[union-attr]
    assert found.covering("a2", 5) is None

    # Unknown key: nothing trusted. Dropped middle line: the link says so.
    other = RetentionRecords()
    read_record_files(tmp_path, {}, other)
    assert other.records == [] and len(other.problems) == 3
    lines = records.path.read_text().splitlines()
    records.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    dropped = RetentionRecords()
    read_record_files(tmp_path, keys, dropped)
    assert any("does not follow the previous line" in p for p in dropped.problems)
    records.path.write_text(lines[0].replace("i-2019.01", "i-2019.09") + "\n")
    forged = RetentionRecords()
    read_record_files(tmp_path, keys, forged)
    assert forged.records == [] and "does not verify" in forged.problems[0]


def test_runs_of() -> None:
    assert runs_of([1, 2, 3, 5, 6, 9]) == [(1, 3), (5, 6), (9, 9)]
    assert runs_of([]) == []


def _cluster(indices: dict[str, dict[str, Any]], holds: list[dict[str, Any]]) -> FakeHttp:
    """indices: name -> {"newest": ns, "flat": settings, "docs": n}."""

    def respond(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/_nodes/plugins":
            return Response(200, {"nodes": {"n1": {"name": "n1", "plugins": []}}})
        if path.endswith("/_settings") and method == "GET":
            return Response(
                200,
                {
                    name: {"settings": {"index.uuid": f"u-{name}", **spec.get("flat", {})}}
                    for name, spec in indices.items()
                },
            )
        if path.endswith("-holds/_search"):
            return Response(200, {"hits": {"hits": [{"_source": {"hold": h}} for h in holds]}})
        if path.endswith("/_search") and "aggs" in (body or {}):
            buckets = [
                {
                    "key": name,
                    "doc_count": spec.get("docs", 1),
                    "oldest": {"value": 1.0, "value_as_string": iso_nanos(spec["newest"] - DAY_NS)},
                    "newest": {"value": 1.0, "value_as_string": iso_nanos(spec["newest"])},
                }
                for name, spec in indices.items()
                if spec.get("docs", 1)
            ]
            return Response(200, {"aggregations": {"indices": {"buckets": buckets}}})
        return Response(404, {})

    return FakeHttp(respond)


def _job(http: FakeHttp, tmp_path: Path | None, minimum: float | None = None) -> RetentionJob:
    policy = ClassPolicy("std", Phases(365, 730), minimum, "ism-std.json", "0" * 64)
    return RetentionJob(
        http,
        prefix="p",
        classes={"std": policy},
        holder="collector:test",
        clock_ns=lambda: NOW,
        records=RecordFile(tmp_path, Ed25519PrivateKey.generate()) if tmp_path else None,
        enforcer="auto",
    )


def test_plan_by_newest_event_holds_minimum_and_key(tmp_path: Path) -> None:
    day = DAY_NS
    http = _cluster(
        {
            "p-events-std-2026.10": {"newest": NOW - 40 * day},
            "p-events-std-2025.10": {"newest": NOW - 400 * day},
            "p-events-std-2025.01": {
                "newest": NOW - 400 * day,
                "flat": {"index.blocks.write": "true"},
            },
            "p-events-std-2024.01": {"newest": NOW - 800 * day},
            "p-events-std-2023.01": {
                "newest": NOW - 900 * day,
                "flat": {"index.blocks.read_only": "true"},
            },
            "p-events-std-2022.01": {"newest": NOW - 1000 * day},
            "p-events-std-2021.01": {"newest": NOW, "docs": 0},
            "p-events-std-x-2021.01": {"newest": NOW - 1000 * day},  # another class's
        },
        [
            {
                "id": "h1",
                "class": "std",
                "from": "2022.01",
                "to": "2022.01",
                "status": "active",
                "indices": ["p-events-std-2022.01"],
            },
            {
                "id": "h0",
                "class": "std",
                "from": "2024.01",
                "to": "2024.01",
                "status": "released",
                "indices": ["p-events-std-2024.01"],
            },
        ],
    )
    [row] = _job(http, tmp_path).status()
    by = {i.name: i for i in row.indices}
    assert "p-events-std-x-2021.01" not in by
    hot = by["p-events-std-2026.10"]
    assert (hot.phase, hot.next_action, hot.due) == ("hot", WARM, False)
    assert hot.next_at_ns == NOW - 40 * day + 365 * day
    warm_due = by["p-events-std-2025.10"]
    assert (warm_due.next_action, warm_due.due, warm_due.blocked) == (WARM, True, "")
    warm = by["p-events-std-2025.01"]
    assert (warm.phase, warm.next_action, warm.due) == ("warm", DELETE, False)
    # Overdue for both: deletion is what is due; a released hold does not count.
    assert (by["p-events-std-2024.01"].next_action, by["p-events-std-2024.01"].due) == (
        DELETE,
        True,
    )
    assert by["p-events-std-2024.01"].blocked == ""
    blocked = by["p-events-std-2023.01"]
    assert blocked.phase == "held" and blocked.blocked.startswith("legal hold")
    assert by["p-events-std-2022.01"].holds == ["hold h1"] and by["p-events-std-2022.01"].blocked
    assert (
        by["p-events-std-2021.01"].next_action == ""
        and "no documents" in by["p-events-std-2021.01"].blocked
    )
    assert row.oldest_ns == NOW - 1001 * day

    # No collector key: a due deletion is kept, saying why.
    [row] = _job(http, None).status()
    assert "no collector key" in {i.name: i for i in row.indices}["p-events-std-2024.01"].blocked
    # A minimum above the delete age (refused by the config) still holds the deletion back.
    [row] = _job(http, tmp_path, minimum=1100).status()
    later = {i.name: i for i in row.indices}["p-events-std-2024.01"]
    assert (later.next_action, later.due) == (WARM, True)  # made read-only, not deleted
    warm = {i.name: i for i in row.indices}["p-events-std-2025.01"]
    assert (warm.next_action, warm.due) == (DELETE, False)
    assert warm.next_at_ns == NOW - 400 * day + 1100 * day

    # A dry run writes nothing and takes no lease.
    report = _job(http, tmp_path).run(dry_run=True)
    assert report.enforcer == "collector"
    assert sorted(a.split(":")[0] for a in report.actions) == [
        "would p-events-std-2024.01",
        "would p-events-std-2025.10",
    ]
    assert all(method in ("GET", "POST") for method, *_ in http.calls)
    assert not any("leases" in path for _, path, *_ in http.calls)
    assert not list(tmp_path.glob("retention-*.jsonl"))


def test_ism_deletion_recorded_only_with_isms_history(tmp_path: Path) -> None:
    history: list[dict[str, Any]] = []
    written: list[tuple[str, Any]] = []

    def respond(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/_nodes/plugins":
            plugins = [{"name": "opensearch-index-management"}]
            return Response(200, {"nodes": {"n1": {"name": "n1", "plugins": plugins}}})
        if path == "/p-leases":
            return Response(200, {})
        if path.startswith("/p-leases/"):
            if method == "GET":
                return Response(404, {})
            return Response(201, {"_seq_no": 1, "_primary_term": 1})
        if path == "/p-seals/_search":
            buckets = [
                {"key": {"index": "p-events-std-2019.01"}},
                {"key": {"index": "p-events-std-2026.10"}},
            ]
            return Response(200, {"aggregations": {"named": {"buckets": buckets}}})
        if path.startswith("/_cat/indices/"):
            return Response(200, [{"index": "p-events-std-2026.10"}])
        if path == "/p-retention/_search":
            return Response(200, {"aggregations": {"i": {"buckets": []}}})
        if path.startswith("/.opendistro-ism-managed-index-history"):
            return Response(200, {"hits": {"hits": [{"_source": h} for h in history]}})
        if path == "/p-seals/_search/point_in_time":
            return Response(200, {"pit_id": "pit"})
        if path == "/_search":
            hits = [
                {
                    "_source": {
                        "agent": {"id": "a1"},
                        "seal": {"first_sequence": 5, "last_sequence": 9},
                    },
                    "sort": [1],
                }
            ]
            return Response(200, {"hits": {"hits": hits}})
        if method == "PUT":
            written.append((path, body))
            return Response(201 if "_create" in path else 200, {})
        return Response(200, {})

    job = _job(FakeHttp(respond), tmp_path)
    job.configured_enforcer = "auto"
    report = job.run()
    assert report.enforcer == "ism"
    assert report.actions == []
    assert "no delete of it (an operator's deletion?)" in report.kept[0]
    assert not list(tmp_path.glob("retention-*.jsonl"))

    history.append(
        {
            "history_timestamp": (NOW - DAY_NS) // 1_000_000,
            "managed_index_meta": {
                "index": "p-events-std-2019.01",
                "index_uuid": "u1",
                "policy_id": "p-std",
                "action": {"name": "delete"},
            },
        }
    )
    report = job.run()
    assert report.actions == ["recorded ISM's deletion of p-events-std-2019.01"]
    found = RetentionRecords()
    keys = {job.records.key_id: job.records.key.public_key()}  # type: ignore[union-attr]
    read_record_files(tmp_path, keys, found)
    [record] = found.records
    assert record.enforcer == "ism" and record.runs("a1") == [(5, 9)]
    assert record.body["deleted_by"]["early"] is False  # 2019.01 + 730 d was long past
    assert any(path == "/p-retention/_create/p-events-std-2019.01:u1" for path, _ in written)


@pytest.mark.parametrize("race", ["hold placed", "newer event"])
def test_delete_stops_writes_first_and_rechecks(tmp_path: Path, race: str) -> None:
    """Between the plan and the delete a hold may be placed or a late event arrive:
    then nothing is recorded and nothing deleted."""
    deleted: list[str] = []

    def respond(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/p-retention/_doc/i-2019.01:u1":
            return Response(404, {})
        if path == "/i-2019.01/_block/write" and method == "PUT":
            if race == "hold placed":
                return Response(403, {"error": {"type": "cluster_block_exception"}})
            return Response(200, {})
        if path == "/i-2019.01/_search":
            late = iso_nanos(NOW - DAY_NS)
            bucket = {
                "key": "i-2019.01",
                "doc_count": 11,
                "oldest": {"value": 1.0, "value_as_string": late},
                "newest": {"value": 1.0, "value_as_string": late},
            }
            return Response(200, {"aggregations": {"indices": {"buckets": [bucket]}}})
        if method == "DELETE":
            deleted.append(path)
        return Response(200, {})

    job = _job(FakeHttp(respond), tmp_path)

    status = IndexStatus(
        "i-2019.01", "std", "u1", 10, NOW - 900 * DAY_NS, NOW - 800 * DAY_NS, False
    )
    assert job.delete_with_record(job.classes["std"], status) is False
    assert deleted == [] and not list(tmp_path.glob("retention-*.jsonl"))


def test_records_cover_per_stream_and_keep_format_1_readable(tmp_path: Path) -> None:
    """A record names each format 2 stream's runs under ``streams``: they cover that
    stream only; the agent's format 1 runs (``agents``, as records always held them)
    cover its format 1 history only, never one of its streams."""
    from collector.retention_job.evidence import AgentEvidence, record_chains

    key = Ed25519PrivateKey.generate()
    keys = {integrity.key_id(key.public_key()): key.public_key()}
    chains = {
        ("a1", ""): AgentEvidence(10, [(1, 10)], [(1, 10)]).to_json(),
        ("a1", "s-old"): AgentEvidence(20, [(1, 20)], [(1, 20)]).to_json(),
    }
    body = {
        "index": "i-2019.04",
        "events": {"newest": iso_nanos(NOW)},
        "deleted_by": {"enforcer": "collector"},
        **record_chains(chains),
    }
    assert body["agents"] == {"a1": chains[("a1", "")]}
    assert body["streams"] == {
        "a1:s-old": {"agent": "a1", "stream": "s-old", **chains[("a1", "s-old")]}
    }
    RecordFile(tmp_path, key).append(body, now_unix_nano=NOW)
    # written before streams were recorded: one agent entry, whatever streams it mixed
    RecordFile(tmp_path, key).append(_record("i-2019.05", [[30, 40]]), now_unix_nano=NOW + 1)
    found = RetentionRecords()
    read_record_files(tmp_path, keys, found)
    assert found.problems == []
    assert found.covering("a1", 15, "s-old").index == "i-2019.04"  # type: ignore[union-attr]
    assert found.covering("a1", 15, "s-new") is None  # another stream of the same agent
    assert found.covering("a1", 35, "s-old") is None  # the old record says no stream
    assert found.covering("a1", 15) is None  # format 1 ran only to 10 here
    assert found.covering("a1", 5).index == "i-2019.04"  # type: ignore[union-attr]
    assert found.covering("a1", 35).index == "i-2019.05"  # type: ignore[union-attr]
    assert found.records[0].runs("a1", "s-old") == [(1, 20)]
    assert found.records[0].agents == {"a1"}


class PairCluster:
    """Events and batches indices (name -> newest event ns, docs, flat settings) answering
    the job's requests: settings, event times, blocks, deletes, records, the lease."""

    def __init__(self, indices: dict[str, dict[str, Any]], holds: list[dict[str, Any]]) -> None:
        self.indices = indices
        self.holds = holds
        self.records: list[str] = []
        self.http = FakeHttp(self.answer)

    def matching(self, pattern: str) -> list[str]:
        from fnmatch import fnmatchcase

        return sorted(n for n in self.indices if fnmatchcase(n, pattern))

    def answer(self, method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        target = path.strip("/").split("/")[0]
        if path == "/_nodes/plugins":
            return Response(200, {"nodes": {"n1": {"name": "n1", "plugins": []}}})
        if path == "/p-holds/_search":
            return Response(200, {"hits": {"hits": [{"_source": {"hold": h}} for h in self.holds]}})
        if path == "/p-leases" or path == "/p-retention":
            return Response(200, {})
        if path.startswith("/p-leases/"):
            if method == "GET":
                return Response(404, {})
            return Response(201, {"_seq_no": 1, "_primary_term": 1})
        if path.startswith("/p-retention/_doc/"):
            return Response(404, {})
        if path.startswith("/p-retention/_create/"):
            self.records.append(path)
            return Response(201, {})
        if path.endswith("/_settings") and method == "GET":
            found = self.matching(target)
            settings = {
                n: {"settings": {"index.uuid": f"u-{n}", **self.indices[n].get("flat", {})}}
                for n in found
            }
            return Response(200 if found else 404, settings)
        if path.endswith("/_search") and "aggs" in (body or {}):
            return Response(200, {"aggregations": {"indices": {"buckets": self.buckets(target)}}})
        if path.endswith("/_search/point_in_time"):
            return Response(404, {})  # the record's chains: none here
        if target in self.indices and path != f"/{target}":
            return self.index_api(target, path)
        if method == "DELETE" and target in self.indices:
            if self.read_only(target):
                return Response(403, {"error": {"type": "cluster_block_exception"}})
            del self.indices[target]
            return Response(200, {})
        if method == "HEAD":
            return Response(200 if target in self.indices else 404, {})
        raise AssertionError(f"unexpected {method} {path}")

    def read_only(self, index: str) -> bool:
        return bool(self.indices[index].get("flat", {}).get("index.blocks.read_only"))

    def index_api(self, index: str, path: str) -> Response:
        if path.endswith("/_block/write"):
            if self.read_only(index):
                return Response(403, {"error": {"type": "cluster_block_exception"}})
            self.indices[index].setdefault("flat", {})["index.blocks.write"] = "true"
        return Response(200, {})  # _block/write, _refresh, _forcemerge

    def buckets(self, pattern: str) -> list[dict[str, Any]]:
        out = []
        for name in self.matching(pattern):
            newest = iso_nanos(self.indices[name].get("newest", NOW))
            out.append(
                {
                    "key": name,
                    "doc_count": self.indices[name].get("docs", 1),
                    "oldest": {"value": 1.0, "value_as_string": newest},
                    "newest": {"value": 1.0, "value_as_string": newest},
                }
            )
        return out


def _pairs() -> PairCluster:
    day = DAY_NS
    held = {"index.blocks.read_only": "true"}
    return PairCluster(
        {
            # due for deletion, with its batches index
            "p-events-std-2024.01": {"newest": NOW - 800 * day, "docs": 10},
            "p-batches-std-2024.01": {"docs": 2},
            # due, but its batches index is held: the pair stays
            "p-events-std-2023.01": {"newest": NOW - 900 * day},
            "p-batches-std-2023.01": {"flat": held},
            # warm due: both made read-only
            "p-events-std-2025.10": {"newest": NOW - 400 * day},
            "p-batches-std-2025.10": {},
            # events index gone: old period deleted, young kept, held kept
            "p-batches-std-2022.01": {"docs": 3},
            "p-batches-std-2026.10": {},
            "p-batches-std-2021.01": {},
            "p-batches-std-x-2021.01": {},  # class std-x: not this job's
        },
        [
            {
                "id": "h2",
                "class": "std",
                "from": "2021.01",
                "to": "2021.01",
                "status": "active",
                "indices": ["p-batches-std-2021.01"],
            }
        ],
    )


def test_batches_indices_follow_their_events_index_and_orphans_go_by_period(
    tmp_path: Path,
) -> None:
    cluster = _pairs()
    job = _job(cluster.http, tmp_path)
    [row] = job.status()
    by = {i.name: i for i in row.indices}
    pair = by["p-events-std-2024.01"]
    assert pair.batches is not None and pair.batches.name == "p-batches-std-2024.01"
    assert (pair.next_action, pair.due, pair.blocked) == (DELETE, True, "")
    kept = by["p-events-std-2023.01"]
    assert kept.phase == "held" and kept.blocked == (
        "legal hold: index.blocks.read_only on p-batches-std-2023.01"
    )
    orphans = {o.name: o for o in row.orphans}
    assert sorted(orphans) == [
        "p-batches-std-2021.01",
        "p-batches-std-2022.01",
        "p-batches-std-2026.10",
    ]
    assert orphans["p-batches-std-2022.01"].due and not orphans["p-batches-std-2022.01"].blocked
    assert not orphans["p-batches-std-2026.10"].due
    assert orphans["p-batches-std-2021.01"].blocked == "legal hold: hold h2"

    dry = job.run(dry_run=True)
    assert any(a.startswith("would p-batches-std-2022.01: delete") for a in dry.actions)
    assert any(
        a.startswith("would p-events-std-2024.01: delete") and "with p-batches-std-2024.01" in a
        for a in dry.actions
    )
    assert cluster.records == []

    report = job.run()
    assert report.errors == []
    assert sorted(report.deleted) == [
        "p-batches-std-2022.01",
        "p-batches-std-2024.01",
        "p-events-std-2024.01",
    ]
    assert report.read_only == ["p-events-std-2025.10", "p-batches-std-2025.10"]
    assert sorted(cluster.indices) == [
        "p-batches-std-2021.01",
        "p-batches-std-2023.01",
        "p-batches-std-2025.10",
        "p-batches-std-2026.10",
        "p-batches-std-x-2021.01",
        "p-events-std-2023.01",
        "p-events-std-2025.10",
    ]
    assert any(
        "p-batches-std-2021.01: delete due (its events index is gone), kept" in k
        for k in report.kept
    )

    found = RetentionRecords()
    keys = {job.records.key_id: job.records.key.public_key()}  # type: ignore[union-attr]
    read_record_files(tmp_path, keys, found)
    assert found.problems == []
    records = {r.index: r for r in found.records}
    assert sorted(records) == ["p-batches-std-2022.01", "p-events-std-2024.01"]
    assert records["p-events-std-2024.01"].body["batches"] == {
        "index": "p-batches-std-2024.01",
        "index_uuid": "u-p-batches-std-2024.01",
        "documents": 2,
    }
    assert records["p-events-std-2024.01"].body["events"]["count"] == 10
    alone = records["p-batches-std-2022.01"]
    assert alone.body["events_index"] == "p-events-std-2022.01"
    assert alone.body["batches"]["documents"] == 3 and alone.agents == set()
    assert alone.body["events"]["count"] is None
    assert "by the end of its period" in alone.body["policy"]["rule"]
    assert found.covering("a1", 1) is None  # no chains: verify takes nothing from it


def test_a_hold_on_the_batches_index_placed_after_the_plan_keeps_the_pair(tmp_path: Path) -> None:
    from collector.retention_job.job import BatchesStatus

    cluster = _pairs()
    job = _job(cluster.http, tmp_path)
    [row] = job.status()
    pair = {i.name: i for i in row.indices}["p-events-std-2024.01"]
    # held between the plan and the delete: its write block is the last look, refused
    cluster.indices["p-batches-std-2024.01"]["flat"] = {"index.blocks.read_only": "true"}
    assert isinstance(pair.batches, BatchesStatus) and not pair.batches.holds
    assert job.delete_with_record(job.classes["std"], pair) is False
    assert "p-events-std-2024.01" in cluster.indices and cluster.records == []
    assert not list(tmp_path.glob("retention-*.jsonl"))
