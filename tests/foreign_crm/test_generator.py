"""The foreign CRM log generator: deterministic, the advertised shape, every seed pattern
injected with its ground truth, and ordinary traffic that stays clear of every rule."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tests.foreign_crm.config import CANONICAL, RULES_FILE
from tests.foreign_crm.generator import BRANCH_HOUR, ForeignLog, generate

START = dt.datetime(2026, 12, 3, 20, 17, 5, tzinfo=dt.UTC)


def _records(log: ForeignLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.lines]


def _ordinary(log: ForeignLog) -> list[dict[str, Any]]:
    evidence = {i for incident in log.incidents for i in incident.lines}
    return [r for i, r in enumerate(_records(log)) if i not in evidence]


def test_same_seed_and_start_give_the_same_log() -> None:
    assert generate(3, START).lines == generate(3, START).lines
    assert generate(3, START).lines != generate(4, START).lines


def test_the_log_has_the_foreign_shape() -> None:
    log = generate(14, START)
    records = _records(log)
    assert 2000 <= len(records) <= 2100
    assert {r["op"] for r in records} == set(CANONICAL)
    assert {r["result"] for r in records} == {"ok", "denied", "error"}
    assert all(set(r["actor"]) == {"id", "login", "roles", "ip"} for r in records)
    assert {r["tenant"]["id"] for r in records} == {"t-7f3a", "t-51c0"}
    assert all(r["ts"][-6:] not in ("+00:00", "Z") for r in records)  # local offsets
    values = [v for r in records for c in r.get("changes", []) for v in (c["from"], c["to"])]
    assert {type(v) for v in values} == {str, int, type(None)}
    text = log.text()
    for sample in ("ü", "é", "ß", "Ø", "山田", "東京都"):
        assert sample in text
    assert any(r.get("on_behalf_of") for r in records)
    assert any(r["op"] == "auth.login" and r["result"] == "denied" for r in records)


def test_ordinary_traffic_is_in_business_hours_and_the_branch_login_is_not() -> None:
    log = generate(14, START)
    office = ZoneInfo(log.office_tz)
    for record in _ordinary(log):
        local = dt.datetime.fromisoformat(record["ts"]).astimezone(office)
        assert 7 <= local.hour < 20, record
    (odd,) = [i for i in log.incidents if i.rule_id == "off-hours-login"]
    login = _records(log)[odd.lines[0]]
    local = dt.datetime.fromisoformat(login["ts"]).astimezone(ZoneInfo(log.branch_tz))
    assert local.hour == BRANCH_HOUR and login["actor"]["roles"] == ["branch_apac"]


def test_every_rule_has_exactly_one_incident_with_evidence() -> None:
    log = generate(14, START)
    rules = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["rules"]
    assert sorted(i.rule_id for i in log.incidents) == sorted(r["id"] for r in rules)
    assert all(i.lines for i in log.incidents)
    by_rule = {i.rule_id: i for i in log.incidents}
    records = _records(log)
    burst = [records[n] for n in by_rule["failed-login-burst"].lines]
    assert len(burst) >= 10 and len({r["actor"]["ip"] for r in burst}) >= 3
    spray = [records[n] for n in by_rule["password-spray"].lines]
    assert len({r["actor"]["login"] for r in spray}) >= 5
    bulk = records[by_rule["bulk-export"].lines[0]]
    assert bulk["report"]["rows"] >= 2000
    volume = [records[n]["report"]["rows"] for n in by_rule["export-volume"].lines]
    assert sum(volume) >= 5000 and max(volume) < 2000
    impersonation = by_rule["impersonation"].key.split("|")
    assert impersonation == [
        records[by_rule["impersonation"].lines[0]]["actor"]["login"],
        records[by_rule["impersonation"].lines[0]]["on_behalf_of"]["login"],
    ]


def test_ordinary_traffic_stays_below_every_threshold() -> None:
    ordinary = _ordinary(generate(14, START))
    failures: dict[str, set[str]] = defaultdict(set)  # ip -> users
    failed = Counter[str]()
    exported = Counter[str]()
    changed = Counter[str]()
    for r in ordinary:
        user = r["actor"]["login"]
        if r["result"] == "denied":
            failures[r["actor"]["ip"]].add(user)
            failed[user] += 1
        if r["op"] == "report.export":
            exported[user] += r["report"]["rows"]
            assert r["report"]["rows"] < 2000
        if r["op"] in ("contact.update", "account.update"):
            changed[r["entity"]["id"]] += 1
        if r["op"] == "user.role_change":
            assert r["details"]["granted_role"] not in ("admin", "administrator")
        if r["op"] == "admin.audit_settings":
            assert all(c["to"] not in (None, "", "disabled", 0) for c in r["changes"])
        assert "on_behalf_of" not in r
    assert max((len(users) for users in failures.values()), default=0) < 5
    assert max(failed.values(), default=0) < 3
    assert max(exported.values()) < 5000 - 2 * 1900
    assert max(changed.values()) == 1
