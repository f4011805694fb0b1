"""What an SQL statement does, for audit purposes: action, object, changed columns. Pure.

Not an SQL parser: a tokenizer (strings, quoted identifiers, comments, dollar quotes)
plus a few patterns over the top-level tokens — enough to tell a SELECT from an UPDATE,
name the table, list the columns an UPDATE sets (with the value when it is a literal),
and recognize privilege and audit-configuration changes. Any text is accepted; what
cannot be recognized becomes `db.<first keyword>` or no action at all.

Actions (see agent.parsers.categorize for their categories):
    db.select db.insert db.update db.delete db.merge db.truncate db.export db.import
    db.grant db.revoke db.role_change db.audit_config_change db.set
    db.create.<kind> db.alter.<kind> db.drop.<kind>  (DDL), db.<verb> otherwise
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Whitespace is consumed in front of every token rather than matched as a token of
# its own: half as many matches per statement (this runs once per database record).
# `punct` is any other non-space character.
_PG_TOKEN = re.compile(
    r"""
    \s*(?:
    (?P<comment>--[^\n]*|/\*(?:.*?\*/|.*\Z))
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$(?:.*?\$(?P=tag)\$|.*\Z))
  | (?P<string>[EeNnBbXxUu]?'(?:[^']|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z))
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<word>[^\W\d]\w*)
  | (?P<punct>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_MY_TOKEN = re.compile(
    r"""
    \s*(?:
    (?P<comment>(?:--\s|\#)[^\n]*|/\*(?:.*?\*/|.*\Z))
  | (?P<string>[Nn_]?(?:'(?:[^'\\]|''|\\.|\\\Z)*(?:'|\Z)|"(?:[^"\\]|""|\\.|\\\Z)*(?:"|\Z)))
  | (?P<quoted>`(?:[^`]|``)*(?:`|\Z))
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<word>[^\W\d][\w$]*)
  | (?P<punct>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)
_MY_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "Z": "\x1a", "b": "\b"}

# SET/ALTER SYSTEM of these settings changes what gets audited or logged.
_AUDIT_SETTINGS = (
    "pgaudit.",
    "server_audit",
    "audit_log",
    "log_",
    "logging_collector",
    "general_log",
    "sql_log_off",
    "shared_preload_libraries",
    "session_preload_libraries",
)
_AUDIT_COMPONENTS = ("pgaudit", "server_audit", "audit_log")
_ROLE_WORDS = {"ROLE", "USER", "GROUP"}
_CLAUSE_END = {"WHERE", "FROM", "RETURNING", "ORDER", "LIMIT", "ON", "OUTPUT"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word | string | quoted | number | punct | dollar
    text: str  # as written
    value: str  # keyword upper-cased, identifier folded, literal unquoted


@dataclass(slots=True)
class SqlInfo:
    """The audit-relevant facts of one statement."""

    action: str = ""
    verb: str = ""  # first keyword(s), upper case (e.g. "ALTER ROLE")
    object_type: str = ""
    object_name: str = ""
    # (column, new value) — the value only when the statement gives it as a literal.
    changes: list[tuple[str, str | None]] = field(default_factory=list)


_Handler = Callable[[str, list[Token], list[str], bool], SqlInfo]


def tokens(sql: str, mysql: bool = False) -> list[Token]:
    """Significant tokens (no whitespace or comments) of `sql`."""
    out: list[Token] = []
    pattern = _MY_TOKEN if mysql else _PG_TOKEN
    for match in pattern.finditer(sql):
        kind = match.lastgroup or "punct"
        if kind == "tag":  # pragma: no cover - inner group never last
            kind = "dollar"
        if kind == "comment":
            continue
        text = match.group(kind)
        if kind == "word":
            value = text.upper()
        elif kind == "quoted":
            value = _unquote_ident(text)
        elif kind == "string":
            value = _unquote_string(text, mysql)
        elif kind == "dollar":
            kind, value = "string", _undollar(text)
        else:
            value = text
        out.append(Token(kind, text, value))
    return out


def _unquote_ident(text: str) -> str:
    quote = text[0]
    inner = text[1:-1] if len(text) > 1 and text.endswith(quote) else text[1:]
    return inner.replace(quote * 2, quote)


def _unquote_string(text: str, mysql: bool) -> str:
    start = text.find("'") if "'" in text[:2] else text.find('"')
    quote = text[start]
    inner = text[start + 1 :]
    if inner.endswith(quote) and len(inner) >= 1:
        inner = inner[:-1]
    if not mysql:
        return inner.replace("''", "'")
    out: list[str] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            nxt = inner[i + 1]
            out.append(_MY_ESCAPES.get(nxt, nxt))
            i += 2
        elif ch == quote and i + 1 < len(inner) and inner[i + 1] == quote:
            out.append(quote)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _undollar(text: str) -> str:
    end = text.find("$", 1)
    tag = text[: end + 1]
    inner = text[end + 1 :]
    return inner[: -len(tag)] if inner.endswith(tag) and len(inner) >= len(tag) else inner


def classify(sql: str, mysql: bool = False) -> SqlInfo:
    """The action and details of the first statement in `sql`."""
    toks = tokens(sql, mysql)
    i = 0
    while i < len(toks) and toks[i].text in ("(", ";"):
        i += 1
    # Only the first statement counts: a terminating `;` (clients such as psql pass it
    # through, and pgaudit logs it) is not part of any name or value.
    end = next(
        (j for j in range(i, len(toks)) if toks[j].kind == "punct" and toks[j].text == ";"), -1
    )
    if end >= 0:
        toks = toks[:end]
    if i >= len(toks) or toks[i].kind != "word":
        return SqlInfo()
    if toks[i].value == "WITH":
        i = _after_cte(toks, i + 1)
        if i >= len(toks):
            return SqlInfo(action="db.select", verb="SELECT")
    return _classify_at(toks, i, mysql)


def _classify_at(toks: list[Token], i: int, mysql: bool) -> SqlInfo:
    verb = toks[i].value
    rest = toks[i + 1 :]
    words = [t.value if t.kind == "word" else "" for t in rest[:4]]
    handler = _HANDLERS.get(verb)
    if handler is not None:
        return handler(verb, rest, words, mysql)
    return SqlInfo(action=f"db.{verb.lower()}", verb=verb)


def _after_cte(toks: list[Token], i: int) -> int:
    """Index of the main statement's verb after `WITH [RECURSIVE] name AS (...), ...`."""
    depth = 0
    for j in range(i, len(toks)):
        text = toks[j].text
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif (
            depth == 0
            and toks[j].kind == "word"
            and toks[j].value
            in (
                "SELECT",
                "INSERT",
                "UPDATE",
                "DELETE",
                "MERGE",
            )
        ):
            return j
    return len(toks)


def _name(toks: list[Token], i: int) -> tuple[str, int]:
    """A possibly qualified name starting at `i` and the index after it."""
    parts: list[str] = []
    while i < len(toks) and toks[i].kind in ("word", "quoted"):
        token = toks[i]
        parts.append(token.value.lower() if token.kind == "word" else token.value)
        if (
            i + 2 < len(toks)
            and toks[i + 1].text == "."
            and toks[i + 2].kind
            in (
                "word",
                "quoted",
            )
        ):
            i += 2
            continue
        i += 1
        break
    return ".".join(parts), i


def _skip_words(toks: list[Token], i: int, skip: set[str]) -> int:
    while i < len(toks) and toks[i].kind == "word" and toks[i].value in skip:
        i += 1
    return i


def _top_level_index(toks: list[Token], words: set[str], start: int = 0) -> int:
    depth = 0
    for j in range(start, len(toks)):
        text = toks[j].text
        if text == "(":
            depth += 1
        elif text == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and toks[j].kind == "word" and toks[j].value in words:
            return j
    return -1


def _split_top(toks: list[Token], sep: str = ",") -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in toks:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if depth == 0 and token.text == sep and token.kind == "punct":
            parts.append([])
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def _literal(toks: list[Token]) -> str | None:
    """The value of an expression that is a single literal (optionally cast or signed)."""
    if len(toks) >= 3 and toks[-2].text == ":" and toks[-3].text == ":":
        toks = toks[:-3]  # 'x'::text
    elif len(toks) >= 3 and toks[-3].text == ":" and toks[-2].text == ":":
        toks = toks[:-3]
    sign = ""
    if len(toks) == 2 and toks[0].text in ("-", "+") and toks[1].kind == "number":
        sign, toks = toks[0].text.strip("+"), toks[1:]
    if len(toks) != 1:
        return None
    token = toks[0]
    if token.kind == "string":
        return token.value
    if token.kind == "number":
        return sign + token.text
    if token.kind == "word" and token.value in ("NULL", "TRUE", "FALSE"):
        return "" if token.value == "NULL" else token.value.lower()
    return None


def _column(toks: list[Token]) -> str:
    """The column an assignment target names (`t.col` → `col`)."""
    names = [t for t in toks if t.kind in ("word", "quoted")]
    if not names:
        return ""
    last = names[-1]
    return last.value.lower() if last.kind == "word" else last.value


def _assignments(toks: list[Token]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in _split_top(toks):
        eq = next((k for k, t in enumerate(part) if t.text == "=" and t.kind == "punct"), -1)
        if eq <= 0:
            continue
        target = part[:eq]
        if target[0].text == "(":  # (a, b) = (...)
            for group in _split_top(target[1:-1] if target[-1].text == ")" else target[1:]):
                column = _column(group)
                if column:
                    out.append((column, None))
            continue
        column = _column(target)
        if column:
            out.append((column, _literal(part[eq + 1 :])))
    return out


def _select(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    into = _top_level_index(rest, {"INTO"})
    if into >= 0 and into + 1 < len(rest) and rest[into + 1].value in ("OUTFILE", "DUMPFILE"):
        action = "db.export"
    else:
        action = "db.select"
    info = SqlInfo(action=action, verb="SELECT")
    start = _top_level_index(rest, {"FROM"})
    if start >= 0:
        name, _ = _name(rest, _skip_words(rest, start + 1, {"ONLY", "LATERAL"}))
        if name:
            info.object_type, info.object_name = "table", name
    return info


def _insert(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    info = SqlInfo(action="db.insert", verb=verb)
    i = _skip_words(rest, 0, {"INTO", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"})
    name, i = _name(rest, i)
    if not name:
        return info
    info.object_type, info.object_name = "table", name
    if i < len(rest) and rest[i].kind == "word" and rest[i].value == "SET":
        info.changes = _assignments(_until(rest[i + 1 :], {"ON"}))
        return info
    columns: list[str] = []
    if i < len(rest) and rest[i].text == "(":
        close = _matching(rest, i)
        columns = [_column(group) for group in _split_top(rest[i + 1 : close])]
        i = close + 1
    values: list[str | None] = [None] * len(columns)
    if i < len(rest) and rest[i].kind == "word" and rest[i].value in ("VALUES", "VALUE"):
        j = i + 1
        if j < len(rest) and rest[j].text == "(":
            close = _matching(rest, j)
            tuples_after = close + 1 < len(rest) and rest[close + 1].text == ","
            row = _split_top(rest[j + 1 : close])
            if not tuples_after and len(row) == len(columns):
                values = [_literal(group) for group in row]
    info.changes = [(c, v) for c, v in zip(columns, values, strict=True) if c]
    return info


def _until(toks: list[Token], stop: set[str]) -> list[Token]:
    end = _top_level_index(toks, stop)
    return toks if end < 0 else toks[:end]


def _matching(toks: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].text == "(":
            depth += 1
        elif toks[j].text == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(toks)


def _update(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    info = SqlInfo(action="db.update", verb="UPDATE")
    i = _skip_words(rest, 0, {"ONLY", "LOW_PRIORITY", "IGNORE"})
    name, _ = _name(rest, i)
    if name:
        info.object_type, info.object_name = "table", name
    set_at = _top_level_index(rest, {"SET"})
    if set_at >= 0:
        info.changes = _assignments(_until(rest[set_at + 1 :], _CLAUSE_END))
    return info


def _delete(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    info = SqlInfo(action="db.delete", verb="DELETE")
    start = _top_level_index(rest, {"FROM"})
    i = start + 1 if start >= 0 else 0
    name, _ = _name(rest, _skip_words(rest, i, {"ONLY"}))
    if name:
        info.object_type, info.object_name = "table", name
    return info


def _table_verb(action: str) -> _Handler:
    def handler(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
        info = SqlInfo(action=action, verb=verb)
        i = _skip_words(rest, 0, {"INTO", "TABLE", "ONLY"})
        name, _ = _name(rest, i)
        if name:
            info.object_type, info.object_name = "table", name
        return info

    return handler


def _copy(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    direction = _top_level_index(rest, {"TO", "FROM"})
    to = direction >= 0 and rest[direction].value == "TO"
    info = SqlInfo(action="db.export" if to else "db.import", verb="COPY")
    if rest and rest[0].text == "(":
        inner = classify_tokens(rest[1 : _matching(rest, 0)], mysql)
        info.object_type, info.object_name = inner.object_type, inner.object_name
    else:
        name, _ = _name(rest, 0)
        if name:
            info.object_type, info.object_name = "table", name
    return info


def classify_tokens(toks: list[Token], mysql: bool) -> SqlInfo:
    if not toks or toks[0].kind != "word":
        return SqlInfo()
    return _classify_at(toks, 0, mysql)


def _grant(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    info = SqlInfo(action="db.grant" if verb == "GRANT" else "db.revoke", verb=verb)
    target = _top_level_index(rest, {"TO"} if verb == "GRANT" else {"FROM"})
    if target >= 0:
        grantee, _ = _name(rest, _skip_words(rest, target + 1, {"ROLE", "USER", "GROUP"}))
        if not grantee and target + 1 < len(rest) and rest[target + 1].kind == "string":
            grantee = rest[target + 1].value  # MySQL 'user'@'host'
        info.object_type, info.object_name = "role", grantee
    return info


# The value a RESET (or `SET x TO DEFAULT`) gives a setting: the server's default, which
# the log does not show.
RESET_VALUE = "DEFAULT"


def _setting_name(name_toks: list[Token]) -> str:
    name = "".join(t.value.lower() if t.kind == "word" else t.value for t in name_toks)
    return name.removeprefix("@@").removeprefix("global.").removeprefix("session.")


def _setting_value(value_toks: list[Token]) -> str | None:
    if len(value_toks) == 1 and value_toks[0].kind in ("word", "quoted"):
        token = value_toks[0]
        if token.kind == "word" and token.value == RESET_VALUE:
            return RESET_VALUE
        return token.text.strip('"`')  # SET x = off / TO none
    return _literal(value_toks)


def _setting(
    name_toks: list[Token], value_toks: list[Token], mysql: bool
) -> tuple[str, str | None]:
    name = _setting_name(name_toks)
    if mysql:
        return name, _setting_value(value_toks)
    # PostgreSQL: one parameter, whose value may be a list (`SET pgaudit.log = read, ddl`).
    items = [_setting_value(item) for item in _split_top(value_toks)]
    if not items or any(item is None for item in items):
        return name, None
    return name, ", ".join(item for item in items if item is not None)


def _is_audit_setting(name: str) -> bool:
    return name.startswith(_AUDIT_SETTINGS)


def _set_clause(toks: list[Token], mysql: bool) -> list[tuple[str, str | None]]:
    """`name = value` / `name TO value` pairs of SET / ALTER SYSTEM SET / ALTER ROLE SET.

    MySQL assigns several variables in one SET (`SET GLOBAL a = 1, b = 2`); PostgreSQL
    sets one parameter whose value may be a comma-separated list.
    """
    out = []
    for part in _split_top(toks) if mysql else [toks]:
        sep = next(
            (
                k
                for k, t in enumerate(part)
                if (t.kind == "punct" and t.text == "=")
                or (t.kind == "word" and t.value == "TO" and k > 0)
            ),
            -1,
        )
        if sep > 0:
            out.append(_setting(part[:sep], part[sep + 1 :], mysql))
        elif part:
            out.append((_setting_name(part), None))
    return out


def _set_or_reset(toks: list[Token], at: int, mysql: bool) -> list[tuple[str, str | None]]:
    """The settings changed by the SET or RESET clause whose keyword is `toks[at]`."""
    if at < 0 or at >= len(toks):
        return []
    rest = toks[at + 1 :]
    if toks[at].value == "RESET":
        # RESET x / RESET ALL: back to the default (PostgreSQL takes one name).
        return [(_setting_name(rest), RESET_VALUE)] if rest else []
    return _set_clause(rest, mysql)


def _reset(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    """PostgreSQL `RESET name` (session): the setting goes back to its default."""
    settings: list[tuple[str, str | None]] = [(_setting_name(rest), RESET_VALUE)] if rest else []
    return _settings_change("RESET", "db.reset", settings)


def _set(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    if words and words[0] == "ROLE":
        return SqlInfo(action="db.set_role", verb="SET ROLE")
    if words and words[0] == "PASSWORD":
        return SqlInfo(action="db.role_change", verb="SET PASSWORD", object_type="role")
    i = _skip_words(rest, 0, {"SESSION", "LOCAL", "GLOBAL", "PERSIST", "PERSIST_ONLY"})
    return _settings_change("SET", "db.set", _set_clause(rest[i:], mysql))


def _settings_change(verb: str, action: str, settings: list[tuple[str, str | None]]) -> SqlInfo:
    """`action` for ordinary settings; an audit-configuration change (naming only the audit
    settings) as soon as one of them is among `settings`."""
    audit = [s for s in settings if _is_audit_setting(s[0])]
    if audit:
        return SqlInfo(
            action="db.audit_config_change",
            verb=verb,
            object_type="setting",
            object_name=audit[0][0],
            changes=audit,
        )
    return SqlInfo(action=action, verb=verb, changes=settings)


def _ddl(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    kinds = [w for w in words if w]
    skip = {"OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "UNIQUE", "GLOBAL", "LOCAL"}
    skip |= {"DEFINER", "MATERIALIZED", "FOREIGN"}
    i = _skip_words(rest, 0, skip)
    kind = rest[i].value if i < len(rest) and rest[i].kind == "word" else ""
    if verb == "ALTER" and kind == "SYSTEM":
        settings = _set_or_reset(rest, _top_level_index(rest, {"SET", "RESET"}, i + 1), mysql)
        first = settings[0][0] if settings else ""
        return SqlInfo(
            action="db.audit_config_change",
            verb="ALTER SYSTEM",
            object_type="setting",
            object_name=first,
            changes=settings,
        )
    name_at = _skip_words(rest, i + 1, {"IF", "NOT", "EXISTS"})
    name, after = _name(rest, name_at)
    if not name and name_at < len(rest) and rest[name_at].kind == "string":
        name = rest[name_at].value  # MySQL 'user'@'host'
    if kind in _ROLE_WORDS or (kind == "" and kinds[:1] in (["ROLE"], ["USER"])):
        set_at = _top_level_index(rest, {"SET", "RESET"}, after)
        settings = _set_or_reset(rest, set_at, mysql)
        audit = [s for s in settings if _is_audit_setting(s[0])]
        return SqlInfo(
            action="db.audit_config_change" if audit else "db.role_change",
            verb=f"{verb} {kind}",
            object_type="role",
            object_name=name,
            changes=audit,
        )
    if kind in ("EXTENSION", "PLUGIN") and name.split(".")[-1] in _AUDIT_COMPONENTS:
        return SqlInfo(
            action="db.audit_config_change",
            verb=f"{verb} {kind}",
            object_type=kind.lower(),
            object_name=name,
        )
    if kind == "DATABASE" and verb == "ALTER":
        set_at = _top_level_index(rest, {"SET", "RESET"}, after)
        settings = _set_or_reset(rest, set_at, mysql)
        audit = [s for s in settings if _is_audit_setting(s[0])]
        if audit:
            return SqlInfo(
                action="db.audit_config_change",
                verb="ALTER DATABASE",
                object_type="database",
                object_name=name,
                changes=audit,
            )
    if not kind:
        return SqlInfo(action=f"db.{verb.lower()}", verb=verb)
    return SqlInfo(
        action=f"db.{verb.lower()}.{kind.lower()}",
        verb=f"{verb} {kind}",
        object_type=kind.lower(),
        object_name=name,
    )


def _rename(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    if words[:1] == ["USER"]:
        return SqlInfo(action="db.role_change", verb="RENAME USER", object_type="role")
    return _ddl(verb, rest, words, mysql)


def _plugin(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    text = " ".join(t.value.lower() for t in rest)
    audit = any(name in text for name in _AUDIT_COMPONENTS)
    return SqlInfo(
        action="db.audit_config_change" if audit else f"db.{verb.lower()}.plugin",
        verb=f"{verb} {words[0] if words else ''}".strip(),
        object_type="plugin",
        object_name=rest[1].value.lower() if len(rest) > 1 else "",
    )


def _load(verb: str, rest: list[Token], words: list[str], mysql: bool) -> SqlInfo:
    if words[:1] == ["DATA"]:
        into = _top_level_index(rest, {"TABLE"})
        name = _name(rest, into + 1)[0] if into >= 0 else ""
        return SqlInfo(
            action="db.import",
            verb="LOAD DATA",
            object_type="table" if name else "",
            object_name=name,
        )
    return SqlInfo(action="db.load", verb=verb)


_HANDLERS: dict[str, _Handler] = {
    "SELECT": _select,
    "TABLE": _table_verb("db.select"),
    "VALUES": lambda v, r, w, m: SqlInfo(action="db.select", verb="VALUES"),
    "INSERT": _insert,
    "REPLACE": _insert,
    "UPDATE": _update,
    "DELETE": _delete,
    "MERGE": _table_verb("db.merge"),
    "TRUNCATE": _table_verb("db.truncate"),
    "COPY": _copy,
    "GRANT": _grant,
    "REVOKE": _grant,
    "SET": _set,
    "RESET": _reset,
    "CREATE": _ddl,
    "ALTER": _ddl,
    "DROP": _ddl,
    "RENAME": _rename,
    "INSTALL": _plugin,
    "UNINSTALL": _plugin,
    "LOAD": _load,
}


# Objects that live in a schema (MySQL/MariaDB: a database) and are named by it.
_SCHEMA_OBJECTS = frozenset({"table", "view", "sequence", "procedure", "function", "trigger"})


def qualified(info: SqlInfo, schema: str) -> str:
    """The statement's object name, qualified with `schema` (the session's current
    database on MySQL/MariaDB) when the statement did not qualify it, so the same table
    has one name whichever record or parser reports it."""
    name = info.object_name
    if schema and name and "." not in name and info.object_type in _SCHEMA_OBJECTS:
        return f"{schema}.{name}"
    return name


def action_for_command(command: str) -> str:
    """The action for a command tag such as pgaudit's COMMAND ("ALTER ROLE", "SELECT")."""
    parts = command.strip().upper().split()
    if not parts:
        return ""
    head = parts[0]
    simple = {
        "SELECT": "db.select",
        "INSERT": "db.insert",
        "UPDATE": "db.update",
        "DELETE": "db.delete",
        "MERGE": "db.merge",
        "TRUNCATE": "db.truncate",
        "GRANT": "db.grant",
        "REVOKE": "db.revoke",
        "SET": "db.set",
    }
    if head in simple and (len(parts) == 1 or head not in ("SET",)):
        return simple[head]
    if head in ("CREATE", "ALTER", "DROP") and len(parts) > 1:
        kind = parts[1]
        if kind in _ROLE_WORDS:
            return "db.role_change"
        if kind == "SYSTEM":
            return "db.audit_config_change"
        return f"db.{head.lower()}.{'_'.join(parts[1:]).lower()}"
    return "db." + "_".join(parts).lower()
