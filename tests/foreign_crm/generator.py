"""A foreign CRM application audit log: nested JSON lines unlike the built-in sample.

The shape is that of a multi-tenant CRM the project has never seen (and which the
agent's default JSON mapping does not understand):

    {"ts": "2026-12-06T09:03:12.123+02:00",
     "tenant": {"id": "t-7f3a", "name": "Bankhaus Müller & Söhne KG"},
     "op": "contact.update", "result": "ok",
     "actor": {"id": "u-1007", "login": "ines.novak", "roles": ["advisor"],
               "ip": "10.20.1.17"},
     "client": {"device": "WS-0142", "ua": "Mozilla/5.0 ..."}, "session": "sess-…",
     "entity": {"kind": "Contact", "id": "C-100123", "label": "Dubois, Élodie"},
     "changes": [{"attr": "mobile", "from": null, "to": "+41 79 555 01 23"},
                 {"attr": "credit_limit", "from": 5000, "to": 7500}]}

Other keys appear where they apply: `report: {rows}` (exports), `on_behalf_of: {id,
login}` (impersonation), `subject: {id, login}` and `details: {granted_role}` (role
changes), `reason` (failed logins). Results are `ok | denied | error`; a failed login is
written either as `auth.login_failed` or, by older clients, as `auth.login` + `denied`.
Timestamps carry the office's UTC offset, not `Z`.

`generate(seed, start)` is a pure function of its arguments: ordinary traffic of the
head office in business hours over `span` from `start`, plus one injected incident per
seed pattern of the background article, each with the rule id and alert key that must
be found for it (`ForeignLog.incidents`). The business-hours calendars are part of the
result (fixed-offset zones in which `start` is 09:xx at the head office and the branch
login is 03:xx), so the same scenario works with event times now or days ago.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from typing import Any

SPAN = dt.timedelta(minutes=30)
OFFICE_HOUR = 9  # local hour of `start` at the head office
BRANCH_HOUR = 3  # local hour of the branch user's (odd-hour) login
BRANCH_LOGIN_AT = dt.timedelta(minutes=12)

TENANTS = (
    {"id": "t-7f3a", "name": "Bankhaus Müller & Söhne KG"},
    {"id": "t-51c0", "name": "Crédit Lémanique SA"},
)
_FIRST = (
    "anna", "ben", "clara", "david", "eva", "felix", "greta", "hugo", "ines", "jonas",
    "karin", "lukas", "marta", "nils", "olga", "paul", "rosa", "stefan", "tina", "uwe",
    "vera", "walter", "xenia", "yusuf", "zoë", "sören", "élodie", "jürgen",
)  # fmt: skip
_LAST = (
    "albrecht", "brandt", "costa", "dubois", "engel", "fischer", "garcia", "hoffmann",
    "ivanova", "jansen", "keller", "lang", "meyer", "novak", "olsen", "peters", "rossi",
    "schmidt", "tanaka", "ulrich", "vogel", "weiß", "young", "zimmer", "kühn",
)  # fmt: skip
_CUSTOMERS = (
    "Müller, Zoë", "Dubois, Élodie", "Weiß, Jürgen", "Straße, Günther", "Øberg, Åsa",
    "Novák, Tomáš", "García, José", "山田 花子", "佐藤 健", "Łukasiewicz, Paweł",
    "Ferreira, João", "Çelik, Ayşe", "Schröder, Björn", "Lefèvre, Chloé",
)  # fmt: skip
_STREETS = (
    "Hauptstraße 5, 8001 Zürich", "Rue de Genève 12, 1003 Lausanne",
    "Schloßallee 1, 20095 Hamburg", "丸の内1-1, 東京都千代田区", "Bahnhofplatz 3, 3011 Bern",
    "Kärntner Straße 9, 1010 Wien", "Avenue des Épinettes 4, 75017 Paris",
)  # fmt: skip
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "HelvetiaCRM-Desktop/7.4.2 (Windows 11)",
)
# Role grants admins do every day: none of them is privileged.
_ROUTINE_ROLES = ("advisor", "back_office", "read_only", "compliance")
# Normal export sizes stay far below the bulk/volume thresholds (2000 rows / 5000 per hour).
_EXPORT_ROWS = (5, 400)
_EXPORT_BUDGET = 1000  # rows one user exports at most in ordinary traffic


@dataclass(frozen=True)
class User:
    id: str
    login: str
    roles: tuple[str, ...]
    ip: str
    device: str
    ua: str
    tenant: dict[str, str]

    def actor(self, ip: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "login": self.login, "roles": list(self.roles), "ip": ip or self.ip}


@dataclass(frozen=True)
class Incident:
    """One injected pattern: the rule that must alert, with which key, from which lines."""

    rule_id: str
    key: str
    lines: tuple[int, ...]


@dataclass
class ForeignLog:
    lines: list[str]  # JSON, one record each, no newline
    incidents: list[Incident]
    normal: int  # records of ordinary traffic
    start: dt.datetime
    end: dt.datetime
    office_tz: str  # zone in which the whole log is business time at the head office
    branch_tz: str  # zone in which the branch user's login is at BRANCH_HOUR

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def fixed_zone(moment: dt.datetime, local_hour: int) -> tuple[str, int]:
    """(IANA `Etc/GMT±N` name, offset hours) of the zone where `moment` is `local_hour`:xx."""
    offset = (local_hour - moment.astimezone(dt.UTC).hour) % 24
    if offset > 14:  # Etc/GMT zones span UTC-12 .. UTC+14
        offset -= 24
    # POSIX sign convention: Etc/GMT-2 is two hours *ahead* of UTC.
    name = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"
    return name, offset


@dataclass
class _Entry:
    at: dt.datetime
    record: dict[str, Any]
    incidents: tuple[str, ...] = ()  # "rule|key" of each incident the line is evidence of


@dataclass
class _Builder:
    seed: int
    start: dt.datetime
    offset: dt.timezone
    entries: list[_Entry] = field(default_factory=list)
    current_session: str | None = None  # of the ordinary session being written

    def __post_init__(self) -> None:
        # reproducible test data, not secrets: a seeded PRNG is the point
        self.rng = random.Random(self.seed)
        self.customer_seq = 100_000
        self.account_seq = 200_000
        self.report_seq = 0

    def add(
        self,
        at: dt.datetime,
        user: User,
        op: str,
        result: str = "ok",
        *,
        ip: str | None = None,
        incident: str | tuple[str, ...] = (),
        **extra: Any,
    ) -> None:
        record: dict[str, Any] = {
            "ts": at.astimezone(self.offset).isoformat(timespec="milliseconds"),
            "tenant": user.tenant,
            "op": op,
            "result": result,
            "actor": user.actor(ip),
            "client": {"device": user.device, "ua": user.ua},
            "session": self.current_session or self.session_id(),
        }
        record.update(extra)
        tags = (incident,) if isinstance(incident, str) else incident
        self.entries.append(_Entry(at, record, tags))

    # -- data

    def session_id(self) -> str:
        return f"sess-{self.rng.getrandbits(48):012x}"

    def new_customer(self) -> dict[str, str]:
        """A customer no other ordinary event touches (so no rule counts two changes)."""
        self.customer_seq += 1
        name = self.rng.choice(_CUSTOMERS)
        return {"kind": "Contact", "id": f"C-{self.customer_seq}", "label": name}

    def new_account(self) -> dict[str, str]:
        self.account_seq += 1
        name = self.rng.choice(_CUSTOMERS)
        return {"kind": "Account", "id": f"A-{self.account_seq}", "label": name}

    def iban(self) -> str:
        digits = "".join(str(self.rng.randrange(10)) for _ in range(18))
        return f"CH{digits[:2]} {digits[2:6]} {digits[6:10]} {digits[10:14]} {digits[14:18]}"

    def phone(self) -> str:
        return f"+41 79 {self.rng.randrange(100, 999)} {self.rng.randrange(10, 99)} " + (
            f"{self.rng.randrange(10, 99)}"
        )

    def report(self, rows: int) -> tuple[dict[str, str], dict[str, int]]:
        self.report_seq += 1
        entity = {"kind": "Report", "id": f"RPT-{self.report_seq:05d}", "label": "Kundenliste"}
        return entity, {"rows": rows}


def _users(rng: random.Random, count: int) -> list[User]:
    logins: set[str] = set()
    out: list[User] = []
    while len(out) < count:
        login = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}"
        if login in logins:
            continue
        logins.add(login)
        index = len(out)
        role = "admin" if index % 8 == 0 else ("back_office" if index % 3 == 0 else "advisor")
        out.append(
            User(
                id=f"u-{1000 + index}",
                login=login,
                roles=(role,),
                ip=f"10.20.{index // 200}.{10 + index % 200}",
                device=f"WS-{100 + index:04d}",
                ua=rng.choice(_AGENTS),
                tenant=TENANTS[index % len(TENANTS)],
            )
        )
    return out


def _ordinary(b: _Builder, users: list[User], count: int, span: dt.timedelta) -> None:
    """Sessions of every user over the span: login, work, logout, all in business hours."""
    rng = b.rng
    per_user = max(4, count // len(users))
    exported = dict.fromkeys((u.login for u in users), 0)
    written = 0
    for user in users:
        n = min(per_user, count - written)
        if n <= 0:
            break
        at = b.start + span * rng.uniform(0.0, 0.1)
        step = (span * 0.85) / n
        done = 0
        if rng.random() < 0.15:  # a mistyped password now and then
            form = rng.choice((("auth.login_failed", "denied"), ("auth.login", "denied")))
            b.add(at, user, form[0], form[1], reason="bad_password")
            at += step
            done += 1
        b.current_session = b.session_id()
        b.add(at, user, "auth.login")
        done += 1
        while done < n - 1:
            at += step * rng.uniform(0.5, 1.0)
            _work(b, user, at, exported)
            done += 1
        b.add(at + step * 0.5, user, "auth.logout")
        b.current_session = None
        written += done + 1


def _work(b: _Builder, user: User, at: dt.datetime, exported: dict[str, int]) -> None:
    rng = b.rng
    roll = rng.random()
    admin = "admin" in user.roles
    if admin and roll < 0.08:
        subject = rng.choice(_FIRST) + ".neu"
        role = rng.choice(_ROUTINE_ROLES)
        b.add(at, user, "user.role_change",
              entity={"kind": "User", "id": f"u-{rng.randrange(5000, 6000)}", "label": subject},
              subject={"id": f"u-{rng.randrange(5000, 6000)}", "login": subject},
              details={"granted_role": role},
              changes=[{"attr": "role", "from": "read_only", "to": role}])  # fmt: skip
        return
    if admin and roll < 0.12:
        # routine audit settings: nothing is switched off (an int stays an int)
        change = rng.choice(
            (
                {"attr": "audit.retention_days", "from": 365, "to": 400},
                {"attr": "audit.alert_email", "from": "secops@bank.example",
                 "to": "soc@bank.example"},
            )
        )  # fmt: skip
        b.add(at, user, "admin.audit_settings",
              entity={"kind": "Setting", "id": "audit", "label": "Audit-Einstellungen"},
              changes=[change])  # fmt: skip
        return
    if roll < 0.55:
        customer = rng.choice(_CUSTOMERS)
        entity = {"kind": "Contact", "id": f"C-{rng.randrange(1, 99_999):05d}", "label": customer}
        result = "error" if rng.random() < 0.02 else "ok"
        b.add(at, user, "record.read", result, entity=entity)
    elif roll < 0.75:
        # one contact change per customer: ordinary traffic never repeats a customer
        changes: list[dict[str, Any]] = rng.choice(
            (
                [{"attr": "address", "from": rng.choice(_STREETS), "to": rng.choice(_STREETS)}],
                [{"attr": "mobile", "from": None, "to": b.phone()}],
                [{"attr": "fax", "from": b.phone(), "to": None}],
                [{"attr": "credit_limit", "from": 5000, "to": rng.choice((7500, 10000))},
                 {"attr": "risk_score", "from": 3, "to": 4}],
                [{"attr": "preferred_name", "from": "", "to": rng.choice(_CUSTOMERS)}],
            )
        )  # fmt: skip
        b.add(at, user, "contact.update", entity=b.new_customer(), changes=changes)
    elif roll < 0.82:
        b.add(at, user, "account.update", entity=b.new_account(),
              changes=[{"attr": "iban", "from": b.iban(), "to": b.iban()}])  # fmt: skip
    elif roll < 0.9:
        b.add(at, user, "contact.create", entity=b.new_customer(),
              changes=[{"attr": "address", "from": None, "to": rng.choice(_STREETS)}])  # fmt: skip
    else:
        rows = rng.randrange(*_EXPORT_ROWS)
        if exported[user.login] + rows > _EXPORT_BUDGET:
            b.add(at, user, "record.read", entity=b.new_customer())
            return
        exported[user.login] += rows
        entity, report = b.report(rows)
        b.add(at, user, "report.export", entity=entity, report=report)


def _incidents(b: _Builder, users: list[User], branch: User) -> None:
    rng = b.rng
    t = b.start
    minute = dt.timedelta(minutes=1)

    def pick(role: str | None = None) -> User:
        pool = [u for u in users if role is None or role in u.roles]
        return rng.choice(pool)

    # Failed-login burst from four addresses ("repeated attempts from various
    # locations"): 12 failures within 4 minutes, in both forms the app writes.
    victim = User("u-0999", "zoë.dubois", ("advisor",), "10.20.9.99", "WS-0999", _AGENTS[0],
                  TENANTS[1])  # fmt: skip
    for i in range(12):
        op, result = ("auth.login_failed", "denied") if i % 2 else ("auth.login", "denied")
        b.add(
            t + minute * 3 + dt.timedelta(seconds=20 * i),
            victim,
            op,
            result,
            ip=f"198.51.100.{10 + i % 4}",
            reason="bad_password",
            incident=("failed-login-burst|zoë.dubois", "failed-login-many-ips|zoë.dubois"),
        )

    # Password spray: one address, one failure for each of six users within 3 minutes.
    for i, user in enumerate(rng.sample(users, 6)):
        b.add(t + minute * 6 + dt.timedelta(seconds=30 * i), user, "auth.login_failed",
              "denied", ip="203.0.113.66", reason="bad_password",
              incident="password-spray|203.0.113.66")  # fmt: skip

    # Odd-hour login: the branch user, at 03:xx in the branch's time zone.
    b.add(t + BRANCH_LOGIN_AT, branch, "auth.login",
          incident=f"off-hours-login|{branch.login}")  # fmt: skip
    b.add(t + BRANCH_LOGIN_AT + minute, branch, "record.read", entity=b.new_customer())

    # Bulk export: one report of 2500 rows.
    hoarder = pick("back_office")
    entity, report = b.report(2500)
    b.add(t + minute * 14, hoarder, "report.export", entity=entity, report=report,
          incident=f"bulk-export|{hoarder.login}")  # fmt: skip

    # Export volume: 3 x 1900 rows within 15 minutes, each below the bulk threshold.
    collector = pick("advisor")
    while collector == hoarder:
        collector = pick("advisor")
    for i in range(3):
        entity, report = b.report(1900)
        b.add(t + minute * (8 + 6 * i), collector, "report.export", entity=entity,
              report=report, incident=f"export-volume|{collector.login}")  # fmt: skip

    # Rapid contact changes of one customer: address, e-mail, phone within 10 minutes.
    changer = pick("advisor")
    customer = b.new_customer()
    changes = (
        {"attr": "address", "from": "Hauptstraße 5, 8001 Zürich",
         "to": "Schloßallee 1, 20095 Hamburg"},
        {"attr": "email", "from": "zoe.mueller@example.ch", "to": "z.mueller@mailbox.example"},
        {"attr": "phone", "from": "+41 44 555 01 01", "to": "+49 40 555 02 02"},
    )  # fmt: skip
    for i, change in enumerate(changes):
        b.add(t + minute * (16 + 4 * i), changer, "contact.update", entity=customer,
              changes=[change], incident=f"rapid-customer-changes|{customer['id']}")  # fmt: skip

    # Bank details of one account changed three times within 10 minutes.
    fraudster = pick("back_office")
    account = b.new_account()
    ibans = [b.iban() for _ in range(3)]
    bank = (
        [{"attr": "iban", "from": ibans[0], "to": ibans[1]}],
        [{"attr": "bic", "from": "UBSWCHZH80A", "to": "REVOLT21"}],
        [{"attr": "iban", "from": ibans[1], "to": ibans[2]},
         {"attr": "account_holder", "from": account["label"], "to": "山田 花子"}],
    )  # fmt: skip
    for i, bank_change in enumerate(bank):
        b.add(t + minute * (17 + 3 * i), fraudster, "account.update", entity=account,
              changes=bank_change, incident=f"iban-changes|{account['id']}")  # fmt: skip

    # Privilege grant: an admin gives a user the admin role.
    admin, other_admin = rng.sample([u for u in users if "admin" in u.roles], 2)
    promoted = pick("advisor")
    b.add(t + minute * 21, admin, "user.role_change",
          entity={"kind": "User", "id": promoted.id, "label": promoted.login},
          subject={"id": promoted.id, "login": promoted.login},
          details={"granted_role": "admin"},
          changes=[{"attr": "role", "from": "advisor", "to": "admin"}],
          incident=f"privilege-change|{admin.login}")  # fmt: skip

    # Audit setting switched off.
    b.add(t + minute * 23, other_admin, "admin.audit_settings",
          entity={"kind": "Setting", "id": "audit", "label": "Audit-Einstellungen"},
          changes=[{"attr": "audit.export_logging", "from": "enabled", "to": "disabled"}],
          incident=f"audit-disabled|{other_admin.login}")  # fmt: skip

    # Impersonation: a support admin acts as a customer advisor, then reads as them.
    acted_as = pick("advisor")
    key = f"impersonation|{admin.login}|{acted_as.login}"
    behalf = {"id": acted_as.id, "login": acted_as.login}
    b.add(t + minute * 25, admin, "session.impersonate", on_behalf_of=behalf,
          entity={"kind": "User", "id": acted_as.id, "label": acted_as.login},
          incident=key)  # fmt: skip
    for i in range(3):
        b.add(t + minute * 26 + dt.timedelta(seconds=40 * i), admin, "record.read",
              on_behalf_of=behalf, entity=b.new_customer(), incident=key)  # fmt: skip


def generate(
    seed: int, start: dt.datetime, *, normal_count: int = 2000, span: dt.timedelta = SPAN
) -> ForeignLog:
    """Ordinary traffic plus every incident, in time order, from `start` over `span`."""
    start = start.astimezone(dt.UTC)
    office_tz, office_offset = fixed_zone(start, OFFICE_HOUR)
    branch_tz, _ = fixed_zone(start + BRANCH_LOGIN_AT, BRANCH_HOUR)
    b = _Builder(seed, start, dt.timezone(dt.timedelta(hours=office_offset)))
    users = _users(b.rng, 30)
    branch = User("u-0777", "山田.健二", ("branch_apac",), "10.60.1.20", "NB-0777", _AGENTS[2],
                  TENANTS[0])  # fmt: skip
    _ordinary(b, users, normal_count, span)
    normal = len(b.entries)
    _incidents(b, users, branch)
    real = b.entries
    # A stable sort: lines of the same millisecond keep the order they were made in.
    order = sorted(range(len(real)), key=lambda i: real[i].at)
    lines: list[str] = []
    evidence: dict[str, list[int]] = {}
    for position, index in enumerate(order):
        entry = real[index]
        lines.append(json.dumps(entry.record, ensure_ascii=False))
        for tag in entry.incidents:
            evidence.setdefault(tag, []).append(position)
    incidents = []
    for tag, positions in evidence.items():
        rule_id, key = tag.split("|", 1)
        incidents.append(Incident(rule_id, key, tuple(positions)))
    return ForeignLog(
        lines=lines,
        incidents=incidents,
        normal=normal,
        start=start,
        end=max(e.at for e in real),
        office_tz=office_tz,
        branch_tz=branch_tz,
    )
