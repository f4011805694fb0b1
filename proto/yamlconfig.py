"""Load a YAML config file into a pydantic model, reporting every error at once.

Both the agent and the collector validate their configs through this one function so
that operators see the same error shape everywhere:

    agent.yaml:12: sources.0.paths: field required

Each problem is one line naming the file, the line (when known) and the dotted key path.
The caller turns the returned problems into its own package's ConfigError.

Secrets stay out of the file: every string value may contain ``${NAME}`` (an
environment variable) or ``${file:PATH}`` (a file's content, one trailing newline
removed; a relative PATH resolves against the config file's directory); ``$${`` is a
literal ``${``. Substitution happens on string scalars after parsing and before
validation, so a substituted value is validated like a typed one. An unset variable or
an unreadable file is a problem like any other (``file:line: key.path: message``); the
value itself never appears in a message. `dump_effective` prints a validated config
with every substituted value and every secret-looking field masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)

KeyPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers on which line each key path starts."""


def _compose_lines(
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    duplicates: list[tuple[KeyPath, int, int]],
) -> None:
    """Index the line of every key path; collect keys given twice in one mapping as
    (key path, first line, repeated line): YAML loaders keep the last silently."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in first_seen and key != "<<":
                duplicates.append(((*path, key), first_seen[key], line))
            first_seen.setdefault(key, line)
            lines[(*path, key)] = line
            _compose_lines(value_node, (*path, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _compose_lines(item, (*path, index), lines, duplicates)


def _line_for(path: Sequence[str | int], lines: Mapping[KeyPath, int]) -> int | None:
    # The deepest known ancestor: a missing key is reported at its parent's line.
    probe: KeyPath = tuple(path)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get((), None)


def format_path(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def load_yaml(path: Path) -> tuple[Any, dict[KeyPath, int], list[str]]:
    """Read and parse a YAML file; returns (data, line index, problems). A key given
    twice in one mapping is a problem, reported with `data` still returned."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}, [f"{label}: config file not found"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [f"{label}: cannot read config file: {exc}"]
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, {}, [f"{label}{where}: invalid YAML: {problem}"]
    lines: dict[KeyPath, int] = {}
    duplicates: list[tuple[KeyPath, int, int]] = []
    if node is not None:
        _compose_lines(node, (), lines, duplicates)
    problems = [
        f"{label}:{again}: {format_path(key)}: duplicate key (first given on line {first})"
        for key, first, again in duplicates
    ]
    return data, lines, problems


# `$${` (escape), `${body}`, or an unterminated `${`.
_REFERENCE_RE = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _SubstitutionError(ValueError):
    """One reference in a value could not be resolved (message names no secret)."""


def _read_secret_file(body: str, config_dir: Path) -> str:
    name = body[len("file:") :].strip()
    if not name:
        raise _SubstitutionError("${file:}: empty file path")
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = config_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _SubstitutionError(f"${{file:{name}}}: file not found: {path}") from None
    except IsADirectoryError:
        raise _SubstitutionError(f"${{file:{name}}}: not a regular file: {path}") from None
    except OSError as exc:
        raise _SubstitutionError(f"${{file:{name}}}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise _SubstitutionError(f"${{file:{name}}}: not UTF-8 text: {path}") from None
    # Exactly one trailing newline goes: `echo secret > file` is the common way to write
    # it, while a value that really ends in a newline can still be expressed with two.
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def substitute(value: str, env: Mapping[str, str], config_dir: Path) -> tuple[str, bool]:
    """Resolve the references in one string; returns (result, whether any was resolved).

    Raises ValueError (message without any secret) for an unset variable, an unreadable
    file or a malformed reference.
    """
    if "${" not in value:
        return value, False
    used = False

    def replace(match: re.Match[str]) -> str:
        nonlocal used
        text = match.group(0)
        if text == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            raise _SubstitutionError("unterminated ${ (write $${ for a literal ${)")
        used = True
        if body.startswith("file:"):
            return _read_secret_file(body, config_dir)
        if not _ENV_NAME_RE.match(body):
            raise _SubstitutionError(
                f"invalid reference ${{{body}}}: expected ${{NAME}} or ${{file:PATH}} "
                "(write $${ for a literal ${)"
            )
        if body not in env:
            raise _SubstitutionError(f"environment variable {body} is not set")
        return env[body]

    return _REFERENCE_RE.sub(replace, value), used


def _substitute_tree(
    data: Any,
    path: KeyPath,
    env: Mapping[str, str],
    config_dir: Path,
    used: dict[KeyPath, str],
    failed: dict[KeyPath, str],
) -> Any:
    if isinstance(data, str):
        try:
            result, changed = substitute(data, env, config_dir)
        except _SubstitutionError as exc:
            failed[path] = str(exc)
            return data
        if changed:
            used[path] = result
        return result
    if isinstance(data, dict):
        return {
            key: _substitute_tree(value, (*path, str(key)), env, config_dir, used, failed)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [
            _substitute_tree(item, (*path, index), env, config_dir, used, failed)
            for index, item in enumerate(data)
        ]
    return data


@dataclass(frozen=True)
class Loaded(Generic[ModelT]):
    """The outcome of `load`: the config (None when invalid), every problem, and the key
    paths whose values came from ``${...}`` substitution (for `dump_effective`)."""

    config: ModelT | None
    problems: list[str]
    secret_paths: frozenset[KeyPath] = field(default_factory=frozenset)


def _where(path: Path, loc: Sequence[str | int], lines: Mapping[KeyPath, int]) -> str:
    line = _line_for(loc, lines)
    return f"{path}:{line}" if line is not None else str(path)


def load(path: Path, model: type[ModelT], env: Mapping[str, str] | None = None) -> Loaded[ModelT]:
    """Read, substitute and validate `path`; every problem at once, one line each.

    `env` holds the variables ``${NAME}`` may use. Callers outside a CLI should pass it
    explicitly; None means the process environment (so that every config loaded through
    here supports substitution even where the caller predates it).
    """
    data, lines, problems = load_yaml(path)
    if problems and data is None:
        return Loaded(None, problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return Loaded(
            None,
            [f"{path}:1: (top level): expected a mapping of keys, got {type(data).__name__}"],
        )
    config_dir = path.resolve().parent
    used: dict[KeyPath, str] = {}
    failed: dict[KeyPath, str] = {}
    data = _substitute_tree(data, (), os.environ if env is None else env, config_dir, used, failed)
    out = problems + [
        f"{_where(path, loc, lines)}: {format_path(loc)}: {message}"
        for loc, message in failed.items()
    ]
    try:
        config = model.model_validate(data, context={"config_dir": config_dir})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            # A value whose reference failed is reported once, for the reference.
            if any(loc[: len(bad)] == bad for bad in failed):
                continue
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            elif message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            # Validators quote bad values ("got 'ftp://user:pw@host'"): a substituted
            # value may be a secret, so it never appears in a message.
            for value in used.values():
                if len(value) >= 3:
                    message = message.replace(value, MASK)
            out.append(f"{_where(path, loc, lines)}: {format_path(loc)}: {message}")
        return Loaded(None, out)
    if out:
        return Loaded(None, out)
    return Loaded(config, [], frozenset(used))


def validate(
    path: Path, model: type[ModelT], env: Mapping[str, str] | None = None
) -> tuple[ModelT | None, list[str]]:
    """Return (config, []) or (None, problems), one line per problem (see `load`)."""
    loaded = load(path, model, env)
    return loaded.config, loaded.problems


MASK = "********"
# Field names whose values are secrets themselves. A field holding a file *path*
# (tls.key, password_file) is shown: the path is not the secret, the content is.
_SECRET_NAME_RE = re.compile(
    r"(^|_)(password|passwd|passphrase|secret|token|credentials?|apikey|key)($|_)",
    re.IGNORECASE,
)


# A password in a URL's user info (https://user:password@host).
_URL_PASSWORD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*@")


def looks_secret(name: str) -> bool:
    """Whether a field name suggests its value is a secret (password, token, key...)."""
    return bool(_SECRET_NAME_RE.search(name))


def _masks_by_name(name: str, value: Any) -> bool:
    if value is None or isinstance(value, Path | dict | list | tuple | bool):
        return False
    # `*_file`, `*_path`, `*_dir` name where a secret lives, not the secret; `key_id`
    # and the like name a secret without being one.
    suffixes = ("_file", "_path", "_dir", "_id", "_name")
    return looks_secret(name) and not name.lower().endswith(suffixes)


def _masked(python: Any, plain: Any, path: KeyPath, secret_paths: frozenset[KeyPath]) -> Any:
    if path in secret_paths:
        return MASK
    if isinstance(python, dict) and isinstance(plain, dict):
        out: dict[str, Any] = {}
        pairs = zip(python.values(), plain.items(), strict=True)
        for value, (plain_key, plain_value) in pairs:
            name = str(plain_key)
            if _masks_by_name(name, value):
                out[name] = MASK
            else:
                out[name] = _masked(value, plain_value, (*path, name), secret_paths)
        return out
    if isinstance(python, list | tuple) and isinstance(plain, list):
        return [
            _masked(item, plain_item, (*path, index), secret_paths)
            for index, (item, plain_item) in enumerate(zip(python, plain, strict=True))
        ]
    if isinstance(plain, str):
        return _URL_PASSWORD_RE.sub(r"\g<1>" + MASK + "@", plain)
    return plain


def dump_effective(model: BaseModel, secret_paths: Iterable[KeyPath] = ()) -> str:
    """The validated config as YAML, defaults included, with secrets masked.

    Masked: every value at `secret_paths` (those `load` substituted, whatever their
    name) and every non-path value of a field whose name looks secret. Keys are the
    YAML keys (aliases), so the output can be read against the file.
    """
    python = model.model_dump(mode="python", by_alias=True)
    plain = model.model_dump(mode="json", by_alias=True)
    data = _masked(python, plain, (), frozenset(tuple(p) for p in secret_paths))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
