"""A scenario generator: normal CRM traffic (collector.admin.sample) with each suspicious
pattern injected once, as CRM JSON-lines records, plus what every rule should find.

Records go through the real agent parser and `collector.documents.to_document` (see
`build_documents`), exactly as the pipeline would index them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.parsers import get_parser
from collector.admin.sample import format_timestamp, generate
from collector.documents import EventDocument, to_document

START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)  # a Monday, 09:00 in Berlin
RANGE_FROM = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
RANGE_TO = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
AGENT = "scn-agent"


@dataclass
class Incident:
    """One injected pattern: the rule that must fire, its key, and the evidence records."""

    rule_id: str
    key: str
    records: list[int] = field(default_factory=list)  # indices into Scenario.records


@dataclass
class Scenario:
    records: list[dict[str, Any]]
    incidents: list[Incident]
    normal: int  # how many records are ordinary traffic

    def doc_id(self, index: int) -> str:
        return f"{AGENT}:{index + 1}"


def _user(name: str, roles: tuple[str, ...] = ("advisor",)) -> dict[str, Any]:
    return {"id": f"id-{name}", "name": name, "email": f"{name}@bank.example", "roles": list(roles)}


class _Builder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.incidents: list[Incident] = []

    def add(
        self,
        when: dt.datetime,
        user: str,
        event: str,
        outcome: str = "success",
        *,
        ip: str = "10.20.9.9",
        roles: tuple[str, ...] = ("advisor",),
        **extra: Any,
    ) -> int:
        record = {
            "timestamp": format_timestamp(when),
            "event": event,
            "outcome": outcome,
            "user": _user(user, roles),
            "source_ip": ip,
            "device": "WS-9999",
            "user_agent": "Mozilla/5.0",
            **extra,
        }
        self.records.append(record)
        return len(self.records) - 1

    def incident(self, rule_id: str, key: str, records: list[int]) -> None:
        self.incidents.append(Incident(rule_id, key, records))


def _minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def build(seed: int = 5, normal_count: int = 600) -> Scenario:
    """Normal traffic from 08:00 UTC (0.1 events/s) with every pattern injected."""
    normal = list(generate(normal_count, seed, START, rate_per_sec=0.1, suspicious=False))
    b = _Builder()
    b.records.extend(normal)
    t = START

    # failed-login-burst: 12 failures in 4 min; a second burst 30 min later is suppressed.
    burst = [b.add(t + _minutes(10) + dt.timedelta(seconds=20 * i), "v.burst", "login", "failure",
                   reason="bad_password") for i in range(12)]  # fmt: skip
    b.incident("failed-login-burst", "v.burst", burst[:10])
    for i in range(12):
        b.add(t + _minutes(40) + dt.timedelta(seconds=20 * i), "v.burst", "login", "failure")
    # failed-login-many-ips: 4 failures from 4 addresses.
    roam = [b.add(t + _minutes(20 + i), "v.roam", "login", "failure", ip=f"198.51.100.{i + 1}")
            for i in range(4)]  # fmt: skip
    b.incident("failed-login-many-ips", "v.roam", roam[:3])
    # password-spray: one address, 6 users.
    spray = [b.add(t + _minutes(30) + dt.timedelta(seconds=25 * i), f"spray{i}", "login",
                   "failure", ip="203.0.113.66") for i in range(6)]  # fmt: skip
    b.incident("password-spray", "203.0.113.66", spray[:5])
    # login-after-failures: 6 failures, then a success.
    guess = [b.add(t + _minutes(45) + dt.timedelta(seconds=15 * i), "v.guess", "login",
                   "failure", ip="192.0.2.10") for i in range(6)]  # fmt: skip
    guess.append(b.add(t + _minutes(47), "v.guess", "login", ip="192.0.2.10"))
    b.incident("login-after-failures", "v.guess", guess)
    # bulk-export: one export of 2500 records.
    exp = b.add(t + _minutes(50), "v.exporter", "record.export", record_count=2500,
                object={"type": "customer_list", "id": "EXP-90001", "name": "all"})  # fmt: skip
    b.incident("bulk-export", "v.exporter", [exp])
    # export-volume: 3 x 1900 records within an hour (each below the bulk threshold).
    hoard = [b.add(t + _minutes(55 + 5 * i), "v.hoarder", "record.export", record_count=1900,
                   object={"type": "customer_list", "id": f"EXP-9100{i}", "name": "region"})
             for i in range(3)]  # fmt: skip
    b.incident("export-volume", "v.hoarder", hoard)
    # rapid-customer-changes: address, phone, email of one customer within 10 minutes.
    cust = {"type": "customer", "id": "CUST-999001", "name": "Target Customer"}
    rapid = [b.add(t + _minutes(70 + 5 * i), "v.changer", "record.update", object=cust,
                   changes=[{"field": f, "old": "a", "new": "b"}])
             for i, f in enumerate(("address", "phone", "email"))]  # fmt: skip
    b.incident("rapid-customer-changes", "CUST-999001", rapid)
    # bank-change-then-export: IBAN change, then an export by the same user.
    fraud = [
        b.add(t + _minutes(85), "v.fraud", "record.update",
              object={"type": "customer", "id": "CUST-999002", "name": "Victim"},
              changes=[{"field": "iban", "old": "DE00", "new": "DE99"}]),
        b.add(t + _minutes(90), "v.fraud", "record.export", record_count=40,
              object={"type": "customer_list", "id": "EXP-92000", "name": "vip"}),
    ]  # fmt: skip
    b.incident("bank-change-then-export", "v.fraud", fraud)
    # off-hours-login: 01:30 UTC = 02:30 in Berlin.
    night = b.add(RANGE_FROM + _minutes(90), "v.night", "login", ip="10.20.9.77")
    b.incident("off-hours-login", "v.night", [night])
    # new-network: four logins from the office network in October, then one elsewhere.
    for day in range(4):
        b.add(dt.datetime(2026, 10, 20 + day, 9, tzinfo=dt.UTC), "v.travel", "login",
              ip="10.30.1.5")  # fmt: skip
    b.add(t + _minutes(5), "v.travel", "login", ip="10.30.1.6")  # same /24: fine
    travel = b.add(t + _minutes(95), "v.travel", "login", ip="100.64.7.20")
    b.incident("new-network", "v.travel", [travel])
    # privilege-change: admin role granted.
    grant = b.add(t + _minutes(100), "v.admin", "role.assign", roles=("admin",),
                  object={"type": "user", "id": "id-v.target", "name": "v.target"},
                  changes=[{"field": "roles", "old": "advisor",
                            "new": "advisor,admin"}])  # fmt: skip
    b.incident("privilege-change", "v.admin", [grant])
    # audit-disabled: CRM audit setting off, and a database audit configuration change.
    off = b.add(t + _minutes(105), "v.admin2", "settings.update", roles=("admin",),
                object={"type": "settings", "id": "audit", "name": "audit settings"},
                changes=[{"field": "audit.record_export", "old": "enabled",
                          "new": "disabled"}])  # fmt: skip
    b.incident("audit-disabled", "v.admin2", [off])
    db = b.add(t + _minutes(107), "dbadmin", "db.audit_config_change", roles=("dba",),
               message="ALTER SYSTEM SET pgaudit.log = 'none'")  # fmt: skip
    b.incident("audit-disabled", "dbadmin", [db])
    return Scenario(b.records, b.incidents, len(normal))


def build_documents(
    records: list[dict[str, Any]], agent_id: str = AGENT
) -> Iterator[EventDocument]:
    """Each record through the agent's jsonlines parser and the collector's mapping."""
    parse = get_parser("jsonlines", {})
    for sequence, record in enumerate(records, start=1):
        event = parse(json.dumps(record).encode())
        assert event is not None
        event.sequence = sequence
        event.observer.agent_id = agent_id
        event.observed_unix_nano = time.time_ns()
        yield to_document(event, agent_id=agent_id, received_unix_nano=time.time_ns())
