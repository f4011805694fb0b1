"""Realistic CRM application audit traffic, as the CRM app's own JSON-lines audit log.

One JSON object per line, field names as the agent's default JSON mapping expects:

    {"timestamp": "2026-11-27T09:15:02.123Z", "event": "record.update",
     "outcome": "success", "user": {"id": "u-1007", "name": "jdoe", "email": "...",
     "roles": ["advisor"]}, "source_ip": "10.20.1.17", "device": "WS-0142",
     "user_agent": "...", "session_id": "s-...", "object": {"type": "customer",
     "id": "CUST-000123", "name": "..."}, "changes": [{"field": "email", "old": "...",
     "new": "..."}], "record_count": 1500, "reason": "bad_password", "message": "..."}

Keys that do not apply to an event are left out. Output is a pure function of
(count, seed, start, rate): the same arguments give the same lines.

Besides ordinary traffic (logins, views, updates, small exports, logouts, admin work)
the stream holds the suspicious patterns the detection rules look for, each once,
spread over the stream: a failed-login burst, an odd-hour login (03:xx UTC), a bulk
export of >= 2000 records, a rapid series of IBAN/address changes to one customer, a
privilege escalation (role.assign to admin) and audit-settings tampering.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROLES = ("advisor", "back_office", "compliance", "admin")
CHANGE_FIELDS = ("email", "phone", "address", "iban", "risk_rating")
FAIL_REASONS = ("bad_password", "bad_password", "bad_password", "mfa_failed", "account_locked")
BULK_EXPORT_MIN = 2000
DEFAULT_RATE = 5.0

_FIRST = (
    "Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ines", "Jonas",
    "Karin", "Lukas", "Marta", "Nils", "Olga", "Paul", "Quinn", "Rosa", "Stefan", "Tina",
    "Uwe", "Vera", "Walter", "Xenia", "Yusuf", "Zoe",
)  # fmt: skip
_LAST = (
    "Albrecht", "Becker", "Costa", "Dubois", "Engel", "Fischer", "Garcia", "Hoffmann",
    "Ivanova", "Jansen", "Keller", "Lang", "Meyer", "Novak", "Olsen", "Peters", "Rossi",
    "Schmidt", "Tanaka", "Ulrich", "Vogel", "Weber", "Young", "Zimmer",
)  # fmt: skip
_STREETS = ("Hauptstrasse", "Bahnhofstrasse", "Lindenweg", "Marktplatz", "Schillerstrasse")
_CITIES = (("10115", "Berlin"), ("20095", "Hamburg"), ("80331", "Muenchen"), ("50667", "Koeln"))
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
)
_ROLE_WEIGHTS = (("advisor", 12), ("back_office", 6), ("compliance", 3), ("admin", 2))
_ACTIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "advisor": (("record.view", 60), ("record.update", 18), ("record.export", 2), ("logout", 8)),
    "back_office": (
        ("record.view", 40), ("record.update", 35), ("record.export", 4), ("logout", 8),
    ),
    "compliance": (("record.view", 55), ("record.export", 10), ("logout", 8)),
    "admin": (("record.view", 30), ("role.assign", 2), ("settings.update", 1), ("logout", 8)),
}  # fmt: skip
# Routine audit-settings changes (none weakens auditing; the tampering pattern does).
_AUDIT_SETTINGS = (
    ("audit.log_level", "standard", "detailed"),
    ("audit.export_format", "csv", "jsonl"),
    ("audit.alert_email", "secops@bank.example", "soc@bank.example"),
)


@dataclass
class _User:
    id: str
    name: str
    email: str
    roles: list[str]
    ip: str
    device: str
    user_agent: str
    session: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "email": self.email, "roles": list(self.roles)}


@dataclass
class _Customer:
    id: str
    name: str
    values: dict[str, str] = field(default_factory=dict)


def parse_timestamp(value: str) -> dt.datetime:
    """Parse ISO 8601 (``Z`` allowed); a time without zone is taken as UTC."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def format_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


class _Generator:
    def __init__(self, seed: int, start: dt.datetime, rate_per_sec: float) -> None:
        # reproducible test data, not secrets: a seeded PRNG is the point
        self.rng = random.Random(seed)  # noqa: S311
        self.now = start.astimezone(dt.UTC)
        self.rate = rate_per_sec
        self.users = [self._make_user(i) for i in range(24)]
        self.customers = [self._make_customer(i) for i in range(400)]
        self.export_seq = 0

    # -- population

    def _person(self) -> tuple[str, str]:
        return self.rng.choice(_FIRST), self.rng.choice(_LAST)

    def _make_user(self, index: int) -> _User:
        first, last = self._person()
        roles_pool = [role for role, weight in _ROLE_WEIGHTS for _ in range(weight)]
        role = ROLES[index] if index < len(ROLES) else self.rng.choice(roles_pool)
        roles = [role]
        if role == "compliance" and self.rng.random() < 0.3:
            roles.append("advisor")
        login = f"{first[0]}{last}".lower() + (str(index) if index >= 20 else "")
        return _User(
            id=f"u-{1001 + index}",
            name=login,
            email=f"{first.lower()}.{last.lower()}@bank.example",
            roles=roles,
            ip=f"10.20.{1 + index // 8}.{10 + index}",
            device=f"WS-{100 + index * 7:04d}",
            user_agent=self.rng.choice(_AGENTS),
        )

    def _make_customer(self, index: int) -> _Customer:
        first, last = self._person()
        customer = _Customer(id=f"CUST-{100 + index * 3:06d}", name=f"{first} {last}")
        for name in CHANGE_FIELDS:
            customer.values[name] = self._value(name, customer)
        return customer

    def _value(self, name: str, customer: _Customer) -> str:
        rng = self.rng
        if name == "email":
            local = customer.name.lower().replace(" ", ".")
            return f"{local}{rng.randint(1, 99)}@{rng.choice(('mail.example', 'post.example'))}"
        if name == "phone":
            return f"+49 {rng.randint(150, 179)} {rng.randint(1000000, 9999999)}"
        if name == "address":
            postcode, city = rng.choice(_CITIES)
            return f"{rng.choice(_STREETS)} {rng.randint(1, 120)}, {postcode} {city}"
        if name == "iban":
            digits = "".join(str(rng.randint(0, 9)) for _ in range(18))
            return f"DE{rng.randint(10, 99)}{digits}"
        return rng.choice(("low", "medium", "high"))

    # -- time and records

    def _tick(self, mean_gap: float | None = None) -> None:
        gap = self.rng.expovariate(1.0 / (mean_gap or 1.0 / self.rate))
        # millisecond resolution and strictly increasing: one record per millisecond at most
        self.now += dt.timedelta(milliseconds=max(1, round(gap * 1000)))

    def _record(
        self, user: _User, event: str, outcome: str = "success", **extra: Any
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "timestamp": format_timestamp(self.now),
            "event": event,
            "outcome": outcome,
            "user": user.as_json(),
            "source_ip": extra.pop("source_ip", user.ip),
            "device": extra.pop("device", user.device),
            "user_agent": user.user_agent,
        }
        if user.session and not (event == "login" and outcome == "failure"):
            record["session_id"] = user.session
        record.update({key: value for key, value in extra.items() if value is not None})
        return record

    def _new_session(self, user: _User) -> None:
        user.session = f"s-{self.rng.getrandbits(64):016x}"

    def _login(self, user: _User, **extra: Any) -> dict[str, Any]:
        self._new_session(user)
        return self._record(user, "login", message=f"user {user.name} logged in", **extra)

    def _failed_login(self, user: _User, reason: str, **extra: Any) -> dict[str, Any]:
        return self._record(
            user,
            "login",
            "failure",
            reason=reason,
            message=f"login failed for {user.name}: {reason}",
            **extra,
        )

    def _object(self, customer: _Customer) -> dict[str, str]:
        return {"type": "customer", "id": customer.id, "name": customer.name}

    def _update(self, user: _User, customer: _Customer, fields: Iterable[str]) -> dict[str, Any]:
        changes = []
        for name in fields:
            old = customer.values[name]
            new = self._value(name, customer)
            while new == old:
                new = self._value(name, customer)
            customer.values[name] = new
            changes.append({"field": name, "old": old, "new": new})
        names = ", ".join(change["field"] for change in changes)
        return self._record(
            user,
            "record.update",
            object=self._object(customer),
            changes=changes,
            message=f"customer {customer.id} updated: {names}",
        )

    def _export(self, user: _User, count: int) -> dict[str, Any]:
        self.export_seq += 1
        export_id = f"EXP-{self.export_seq:05d}"
        segment = self.rng.choice(("all customers", "region north", "high risk", "retail"))
        return self._record(
            user,
            "record.export",
            object={"type": "customer_list", "id": export_id, "name": f"customers: {segment}"},
            record_count=count,
            message=f"{count} customer records exported as CSV ({export_id})",
        )

    # -- ordinary traffic

    def ordinary(self) -> Iterator[dict[str, Any]]:
        while True:
            self._tick()
            user = self.rng.choice(self.users)
            if user.session is None:
                if self.rng.random() < 0.06:
                    yield self._failed_login(user, self.rng.choice(FAIL_REASONS))
                    self._tick(2.0)
                yield self._login(user)
                continue
            actions = _ACTIONS[user.roles[0]]
            event = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
            yield self._action(user, event)

    def _action(self, user: _User, event: str) -> dict[str, Any]:
        rng = self.rng
        if event == "logout":
            record = self._record(user, "logout", message=f"user {user.name} logged out")
            user.session = None
            return record
        if event == "record.view":
            customer = rng.choice(self.customers)
            return self._record(
                user,
                "record.view",
                object=self._object(customer),
                message=f"customer {customer.id} viewed",
            )
        if event == "record.update":
            fields = rng.sample(CHANGE_FIELDS, k=rng.choice((1, 1, 1, 2)))
            return self._update(user, rng.choice(self.customers), fields)
        if event == "record.export":
            return self._export(user, rng.randint(5, 400))
        if event == "role.assign":
            target = rng.choice(self.users)
            new_role = rng.choice(("advisor", "back_office", "compliance"))
            return self._role_assign(user, target, new_role)
        key, old, new = rng.choice(_AUDIT_SETTINGS)
        return self._settings(user, key, old, new)

    def _role_assign(self, admin: _User, target: _User, new_role: str) -> dict[str, Any]:
        old = ",".join(target.roles)
        if new_role not in target.roles:
            target.roles = [*target.roles, new_role]
        return self._record(
            admin,
            "role.assign",
            object={"type": "user", "id": target.id, "name": target.name},
            changes=[{"field": "roles", "old": old, "new": ",".join(target.roles)}],
            message=f"role {new_role} assigned to {target.name}",
        )

    def _settings(self, admin: _User, key: str, old: str, new: str) -> dict[str, Any]:
        return self._record(
            admin,
            "settings.update",
            object={"type": "settings", "id": "audit", "name": "audit settings"},
            changes=[{"field": key, "old": old, "new": new}],
            message=f"audit setting {key} changed",
        )

    def _anyone(self, role: str) -> _User:
        return next(user for user in self.users if role in user.roles)

    # -- suspicious patterns (each yields a short burst of records)

    def failed_login_burst(self) -> Iterator[dict[str, Any]]:
        victim = self.rng.choice(self.users)
        attacker_ip = f"10.99.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
        for _ in range(8):
            self._tick(3.0)
            yield self._failed_login(
                victim, "bad_password", source_ip=attacker_ip, device="UNKNOWN"
            )
        self._tick(3.0)
        yield self._login(victim, source_ip=attacker_ip, device="UNKNOWN")

    def odd_hour_login(self) -> Iterator[dict[str, Any]]:
        # Jump forward to 03:xx UTC (the next such night), act there, and resume the
        # ordinary traffic at 07:30 that morning: timestamps stay non-decreasing.
        night = self.now.replace(hour=3, minute=0, second=0, microsecond=0)
        if night <= self.now:
            night += dt.timedelta(days=1)
        self.now = night + dt.timedelta(seconds=self.rng.randint(300, 3000))
        user = self._anyone("back_office")
        yield self._login(user, source_ip="10.77.0.23", device="VPN-HOME-17")
        for _ in range(3):
            self._tick(20.0)
            yield self._action(user, "record.view")
        self._tick(20.0)
        yield self._action(user, "logout")
        self.now = max(self.now, night.replace(hour=7, minute=30))

    def bulk_export(self) -> Iterator[dict[str, Any]]:
        user = self._anyone("advisor")
        if user.session is None:
            self._tick()
            yield self._login(user)
        self._tick()
        yield self._export(user, self.rng.randint(BULK_EXPORT_MIN, 12000))

    def rapid_bank_changes(self) -> Iterator[dict[str, Any]]:
        user = self._anyone("back_office")
        if user.session is None:
            self._tick()
            yield self._login(user)
        customer = self.rng.choice(self.customers)
        for fields in (("address",), ("iban",), ("address", "phone"), ("iban",)):
            self._tick(15.0)
            yield self._update(user, customer, fields)

    def privilege_escalation(self) -> Iterator[dict[str, Any]]:
        admin = self._anyone("admin")
        if admin.session is None:
            self._tick()
            yield self._login(admin)
        self._tick()
        target = self._anyone("advisor")
        yield self._role_assign(admin, target, "admin")

    def audit_tampering(self) -> Iterator[dict[str, Any]]:
        admin = self._anyone("admin")
        if admin.session is None:
            self._tick()
            yield self._login(admin)
        self._tick()
        yield self._settings(admin, "audit.record_export", "enabled", "disabled")


def generate(
    count: int,
    seed: int,
    start: dt.datetime,
    *,
    rate_per_sec: float = DEFAULT_RATE,
    suspicious: bool = True,
) -> Iterator[dict[str, Any]]:
    """`count` audit records starting at `start`, on average `rate_per_sec` per second."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if rate_per_sec <= 0:
        raise ValueError("rate_per_sec must be > 0")
    gen = _Generator(seed, start, rate_per_sec)
    patterns = [
        gen.failed_login_burst,
        gen.bulk_export,
        gen.rapid_bank_changes,
        gen.privilege_escalation,
        gen.odd_hour_login,
        gen.audit_tampering,
    ]
    # pattern k starts after (k+1)/(n+1) of the stream
    triggers = {count * (k + 1) // (len(patterns) + 1): k for k in range(len(patterns))}
    ordinary = gen.ordinary()
    emitted = 0
    while emitted < count:
        pattern = triggers.pop(emitted, None) if suspicious else None
        source: Iterable[dict[str, Any]] = (
            patterns[pattern]() if pattern is not None else [next(ordinary)]
        )
        for record in source:
            if emitted >= count:
                return
            yield record
            emitted += 1


def to_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: Path, events: Iterable[dict[str, Any]], *, append: bool = False) -> int:
    """Write `events` to `path`, one JSON object per line; returns the number written."""
    with Path(path).open("a" if append else "w", encoding="utf-8") as handle:
        return write_lines(handle, events)


def write_lines(handle: TextIO, events: Iterable[dict[str, Any]]) -> int:
    written = 0
    for record in events:
        handle.write(to_line(record) + "\n")
        written += 1
    return written
