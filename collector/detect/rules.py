"""The detection rules file (`config/rules.yaml`), validated with pydantic.

`load_rules(path)` returns a frozen `RuleSet` or raises `RulesError` holding every
problem at once, one line each (``rules.yaml:LINE: rules.3.window: message``).

A rule has an id, a description, a severity, a kind (what it looks for, see `KINDS`), a
key (the field(s) an incident is about: a user, a customer, an IP), a window, a
threshold, a suppression period (no second alert for the same rule and key within it),
an allow-list (users, IPs or CIDRs never counted) and an optional response hook.
Anything a rule leaves out takes the default of its kind (`DEFAULTS`), so the shipped
file stays short and every threshold is still configurable.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.detect.alerts import Event
from collector.detect.conditions import Condition, actions_named, fields_named
from collector.detect.errors import RulesError
from collector.detect.fields import check_field, lookup, unknown_field_message
from proto.yamlconfig import validate

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}

# Per-event kinds run inline on every indexed batch; windowed kinds run as periodic
# aggregation queries over recent data.
INLINE_KINDS = ("bulk_export", "off_hours_login", "privilege_change", "audit_tampering", "match")
WINDOWED_KINDS = (
    "failed_login_burst",
    "failed_login_distinct_ips",
    "password_spray",
    "success_after_failures",
    "export_volume",
    "rapid_customer_changes",
    "bank_change_then_export",
    "new_network",
    "integrity",
    "threshold",
)
#: Kinds written entirely in YAML (``where`` conditions instead of built-in logic).
GENERIC_KINDS = ("match", "threshold")
KINDS = INLINE_KINDS + WINDOWED_KINDS
Kind = Literal[
    "bulk_export",
    "off_hours_login",
    "privilege_change",
    "audit_tampering",
    "failed_login_burst",
    "failed_login_distinct_ips",
    "password_spray",
    "success_after_failures",
    "export_volume",
    "rapid_customer_changes",
    "bank_change_then_export",
    "new_network",
    "integrity",
    "match",
    "threshold",
]
Aggregate = Literal["count", "sum", "distinct_count"]

_LOGINS = ["login", "login.failed"]
_EXPORTS = ["record.export", "db.export"]
_CONTACT_FIELDS = ["email", "phone", "mobile", "address", "street", "city", "postcode"]
_BANK_FIELDS = ["iban", "bic", "bank_account", "account_number", "routing_number"]
_PAYMENTS = [*_EXPORTS, "payment.create", "payment.approve", "transfer.create"]
_PRIVILEGE = [
    "role.assign",
    "role.grant",
    "role.update",
    "permission.grant",
    "permission.assign",
    "user.role.change",
    "db.grant",
    "db.role_change",
]

#: What each kind uses when the rule leaves a setting out.
DEFAULTS: dict[str, dict[str, Any]] = {
    "failed_login_burst": {
        "key": ["user.name"], "window": 600, "threshold": 10, "actions": _LOGINS,
    },
    "failed_login_distinct_ips": {
        "key": ["user.name"], "window": 600, "threshold": 3, "actions": _LOGINS,
    },
    "password_spray": {
        "key": ["source.ip"], "window": 600, "threshold": 5, "actions": _LOGINS,
    },
    "success_after_failures": {
        "key": ["user.name"], "window": 600, "threshold": 5, "actions": _LOGINS,
    },
    "bulk_export": {"key": ["user.name"], "threshold": 2000, "actions": _EXPORTS, "suppression": 0},
    "export_volume": {"key": ["user.name"], "window": 3600, "threshold": 5000, "actions": _EXPORTS},
    "rapid_customer_changes": {
        "key": ["crm.object.id"], "window": 3600, "threshold": 3, "actions": ["record.update"],
        "fields": [*_CONTACT_FIELDS, *_BANK_FIELDS], "object_types": ["customer"],
    },
    "bank_change_then_export": {
        "key": ["user.name"], "window": 900, "threshold": 1, "actions": _PAYMENTS,
        "fields": _BANK_FIELDS, "object_types": ["customer"],
    },
    "off_hours_login": {"key": ["user.name"], "actions": ["login"], "suppression": 8 * 3600},
    "new_network": {"key": ["user.name"], "window": 30 * 86400, "threshold": 3,
                    "actions": ["login"]},
    "privilege_change": {"key": ["user.name"], "actions": _PRIVILEGE, "suppression": 0},
    "audit_tampering": {
        "key": ["user.name"], "actions": ["settings.update", "db.audit_config_change"],
        "fields": ["audit"], "suppression": 0,
    },
    "integrity": {"key": ["agent.id"], "suppression": 0},
    "match": {},
    "threshold": {"aggregate": "count"},
}  # fmt: skip

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RE = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"1h"``, ``"7d"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m, 1h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 10m, 1h or 7d, got {value!r}")
        seconds = float(match[1]) * _UNITS[match[2]]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(value.strip(), strict=False)


class AllowList(_Model):
    """Users and source addresses a rule never counts (service accounts, scanners)."""

    users: list[str] = []
    ips: list[str] = Field(default=[], description="IP addresses or CIDR networks")

    @field_validator("ips")
    @classmethod
    def _ips(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(_network(item)))
            except ValueError:
                raise ValueError(f"not an IP address or CIDR network: {item!r}") from None
        return out

    def allows_event(self, event: Event) -> bool:
        """`allows` for an event's ``user.name`` and ``source.ip``. Most rules allow no
        one: then the event's fields are not read (this runs per event per rule)."""
        if not self.users and not self.ips:
            return False
        return self.allows(event.text("user.name"), event.text("source.ip"))

    def allows(self, user: str | None, ip: str | None) -> bool:
        """True when the event's user or source address is allow-listed."""
        if user and user in self.users:
            return True
        if ip and self.ips:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            return any(addr in _network(net) for net in self.ips)
        return False


class Calendar(_Model):
    """Business hours of a user group, in its own time zone."""

    timezone: str = "UTC"
    days: list[str] = ["mon", "tue", "wed", "thu", "fri"]
    start: str = "07:00"
    end: str = "19:00"
    holidays: list[dt.date] = []

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Berlin)") from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if d not in _DAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}; use {', '.join(_DAYS)}")
        return value

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _TIME_RE.match(str(value)):
            raise ValueError(f"expected HH:MM (24 h), got {value!r}")
        return str(value)

    def is_business_time(self, unix_nano: int) -> bool:
        local = dt.datetime.fromtimestamp(unix_nano / 1e9, ZoneInfo(self.timezone))
        if local.date() in self.holidays or _DAYS[local.weekday()] not in self.days:
            return False
        minute = local.hour * 60 + local.minute
        sh, sm = (int(x) for x in self.start.split(":"))
        eh, em = (int(x) for x in self.end.split(":"))
        return sh * 60 + sm <= minute < eh * 60 + em


class CommandHook(_Model):
    """Run a command with the alert JSON on stdin (e.g. a script freezing the account)."""

    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=10, gt=0, le=600)


class WebhookHook(_Model):
    """POST the alert JSON to a URL (e.g. the CRM's freeze-account API)."""

    url: str
    secret_file: Path | None = None
    timeout_s: float = Field(default=10, gt=0, le=600)
    max_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("secret_file", mode="before")
    @classmethod
    def _secret(cls, value: Any, info: ValidationInfo) -> Path | None:
        return resolve_secret_file(value, info)


def resolve_secret_file(value: Any, info: ValidationInfo) -> Path | None:
    """Resolve against the config dir; the file must exist and not be world-readable."""
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("config_dir")
        if base is not None:
            path = Path(base) / path
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    if path.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ValueError(f"secret file {path} is accessible to other users; chmod 600 it")
    if not path.read_bytes().strip():
        raise ValueError(f"secret file {path} is empty")
    return path


class Response(_Model):
    """A rule's response action: exactly one of `command` or `webhook`."""

    command: CommandHook | None = None
    webhook: WebhookHook | None = None

    @model_validator(mode="after")
    def _one(self) -> Response:
        if (self.command is None) == (self.webhook is None):
            raise ValueError("give exactly one of command or webhook")
        return self


def _kind_problem(kind: str, name: str, value: Any, data: dict[str, Any]) -> str | None:
    """What is wrong with setting `name` = `value` for a rule of `kind` (generic kinds
    take `where` instead of the built-in kinds' settings, and need key, window...)."""
    generic = kind in GENERIC_KINDS
    if name in ("actions", "fields", "object_types", "calendar"):
        if generic and value is not None:
            return f"kind {kind} does not use {name}; write a where condition"
        return None
    if name == "key":
        return f"kind {kind} needs a key (e.g. [user.name])" if generic and value is None else None
    if name == "where":
        if not generic:
            return None if value is None else "only kinds match and threshold take where"
        if kind == "match" and not value:
            return "kind match needs at least one condition"
        return None
    if kind == "match" and value is not None:  # window, threshold, aggregate, field
        return f"kind match alerts per event; no {name}"
    if name in ("aggregate", "field") and kind != "threshold":
        return None if value is None else f"only kind threshold takes {name}"
    if kind != "threshold":
        return None
    if name in ("window", "threshold") and not value:
        example = "1h" if name == "window" else "3"
        return f"kind threshold needs a {name} (e.g. {example})"
    if name == "field" and "aggregate" in data:
        aggregate = data["aggregate"] or "count"
        if aggregate == "count":
            return "aggregate count counts events; no field" if value is not None else None
        if value is None:
            return f"aggregate {aggregate} needs a field"
        info = lookup(str(value))
        if info is not None and aggregate == "sum" and not info.numeric:
            return f"sum needs a number field, {value} is {info.type}"
        if info is not None and not info.searchable:
            return f"{value} ({info.type}) cannot be aggregated"
    return None


class Rule(_Model):
    """One detection rule (settings a kind does not use are refused)."""

    id: str
    description: str = ""
    severity: Severity = "medium"
    kind: Kind
    enabled: bool = True
    # validate_default: a setting the kind needs is reported at its own key when missing
    key: list[str] | None = Field(default=None, validate_default=True)
    window: Duration | None = Field(default=None, validate_default=True)
    threshold: float | None = Field(default=None, gt=0, validate_default=True)
    suppression: Duration | None = None
    allow: AllowList = AllowList()
    actions: list[str] | None = None
    fields: list[str] | None = None
    object_types: list[str] | None = None
    # off_hours_login: calendar name for everyone, and per role (first match wins).
    calendar: str | None = None
    groups: dict[str, str] = {}
    # new_network: history needed before a network counts as new, prefix lengths.
    min_history: int = Field(default=3, ge=0)
    prefix_v4: int = Field(default=24, ge=8, le=32)
    prefix_v6: int = Field(default=48, ge=16, le=128)
    # audit_tampering: "disable" fires on CRM settings turned off (and every DB audit
    # config change); "any" on every change of an audit setting.
    mode: Literal["disable", "any"] = "disable"
    # privilege_change: only CRM role changes whose new value names one of these roles
    # alert (none: every grant). Database grants always alert (no structured role).
    privileged_roles: list[str] | None = None
    # match / threshold: conditions every counted event meets (collector.detect.conditions)
    where: list[Condition] | None = Field(default=None, validate_default=True)
    # threshold: what is compared with `threshold` per key within `window`
    aggregate: Aggregate | None = None
    field: str | None = Field(default=None, validate_default=True)
    notify: bool = True
    response: Response | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"must be lowercase letters, digits, '.', '_' or '-', got {value!r}")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("at least one key field is required")
        problems = []
        for name in value or []:
            info = lookup(name)
            if info is None:
                problems.append(unknown_field_message(name))
            elif info.nested is not None:
                problems.append(f"key field {name} is inside the nested {info.nested}")
            elif not info.searchable:
                problems.append(f"key field {name} ({info.type}) cannot be aggregated")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None:
            check_field(value)
        return value

    @field_validator(
        "key", "window", "threshold", "actions", "fields", "object_types", "calendar",
        "where", "aggregate", "field",
    )  # fmt: skip
    @classmethod
    def _fits_kind(cls, value: Any, info: ValidationInfo) -> Any:
        if "kind" not in info.data:  # the kind itself is wrong (reported there)
            return value
        problem = _kind_problem(str(info.data["kind"]), str(info.field_name), value, info.data)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _fill(self) -> Rule:
        defaults = DEFAULTS[self.kind]
        for name in ("key", "window", "threshold", "actions", "fields", "object_types"):
            if getattr(self, name) is None and name in defaults:
                object.__setattr__(self, name, defaults[name])
        if self.suppression is None:
            fallback = defaults.get("suppression", 3600.0)
            object.__setattr__(self, "suppression", float(fallback))
        if self.kind in WINDOWED_KINDS and self.kind != "integrity" and not self.window:
            raise ValueError(f"window: kind {self.kind} needs a window greater than 0")
        if self.kind == "off_hours_login" and self.calendar is None and not self.groups:
            raise ValueError("calendar: kind off_hours_login needs a calendar (or groups)")
        return self

    # typed accessors (filled in by _fill)
    @property
    def window_ns(self) -> int:
        return int((self.window or 0) * 1e9)

    @property
    def suppression_ns(self) -> int:
        return int((self.suppression or 0) * 1e9)

    @property
    def limit(self) -> float:
        return float(self.threshold or 0)

    @property
    def key_fields(self) -> list[str]:
        return list(self.key or [])

    @property
    def action_list(self) -> list[str]:
        return list(self.actions or [])

    @property
    def field_list(self) -> list[str]:
        return list(self.fields or [])

    @property
    def inline(self) -> bool:
        return self.kind in INLINE_KINDS

    @property
    def conditions(self) -> list[Condition]:
        return list(self.where or [])

    @property
    def aggregation(self) -> str:
        return self.aggregate or "count"


class RuleSet(_Model):
    """The whole rules file."""

    calendars: dict[str, Calendar] = {}
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _cross(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rules: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            for name in [rule.calendar, *rule.groups.values()]:
                if name is not None and name not in self.calendars:
                    known = ", ".join(sorted(self.calendars)) or "none"
                    raise ValueError(
                        f"rules: rule {rule.id!r} names calendar {name!r}, not one of "
                        f"calendars ({known})"
                    )
        return self

    def enabled(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.enabled]

    def calendar_for(self, rule: Rule, roles: list[str]) -> Calendar | None:
        for role in roles:
            if role in rule.groups:
                return self.calendars[rule.groups[role]]
        return self.calendars.get(rule.calendar) if rule.calendar else None


def referenced(rule: Rule) -> tuple[list[str], list[str]]:
    """(document fields, ``event.action`` values) `rule` relies on finding in events."""
    names = [*rule.key_fields, *fields_named(rule.conditions)]
    if rule.field:
        names.append(rule.field)
    if rule.kind in GENERIC_KINDS:
        actions = actions_named(rule.conditions)
    else:
        actions = rule.action_list if rule.kind != "integrity" else []
    return list(dict.fromkeys(names)), list(dict.fromkeys(actions))


def load_rules(path: Path) -> RuleSet:
    """Validate `path`; raise `RulesError` with every problem, one line each."""
    rules, problems = validate(path, RuleSet)
    if rules is None:
        raise RulesError(problems)
    return rules
