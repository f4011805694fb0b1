"""An agent-only install (`crm-audit`, `crm-audit[agent]`) pulls no collector library.

The dependency closure is resolved from pyproject.toml over the metadata of the
distributions installed in this virtualenv (which holds everything, `.[dev]`), so the
check needs no network and no pip run; tests/test_install.py builds a real agent-only
virtualenv as well (integration).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from collector.admin import cli as admin_cli

REPO = Path(__file__).resolve().parents[1]
# What the central host needs and a CRM host must not carry.
COLLECTOR_ONLY = {
    "opensearch-py",
    "orjson",
    "matplotlib",
    "numpy",
    "pillow",
    "fonttools",
    "contourpy",
}


def _project() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert isinstance(project, dict)
    return project


def _closure(requirements: list[str]) -> set[str]:
    """Names of every distribution these requirements pull in, transitively."""
    seen: set[str] = set()
    pending = [(Requirement(text), "") for text in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "crm-audit":  # a self-reference such as crm-audit[collector]
            for wanted in requirement.extras:
                extras = _project()["optional-dependencies"]
                assert isinstance(extras, dict)
                pending.extend((Requirement(text), "") for text in extras[wanted])
            continue
        for wanted in ("", *sorted(requirement.extras)):
            if wanted == "" and name in seen:
                continue
            seen.add(name)
            for text in metadata.distribution(name).requires or ():
                pending.append((Requirement(text), wanted))
    return seen


def test_agent_install_pulls_no_collector_library() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    base = list(project["dependencies"])  # type: ignore[call-overload]
    agent = _closure(base + list(extras["agent"]))
    assert {"grpcio", "protobuf", "cryptography", "pydantic", "watchdog"} <= agent
    assert not agent & COLLECTOR_ONLY, sorted(agent & COLLECTOR_ONLY)
    # The collector extra and the developer install (make venv / make test) carry them.
    for name in ("collector", "dev"):
        full = _closure(base + list(extras[name]))
        assert {"opensearch-py", "matplotlib", "numpy"} <= full, name


def test_collector_command_without_its_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As on an agent-only host: opensearchpy cannot be imported.
    monkeypatch.setitem(sys.modules, "opensearchpy", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "collector.index", raising=False)
    code = admin_cli.main(["verify", "--opensearch", "http://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs opensearchpy" in err and "crm-audit[collector]" in err
