"""The collector's optional dependencies (`crm-audit[collector]`).

A CRM host installs only the agent's dependencies (`make install ROLE=agent`), yet the
`crm-audit` and `crm-audit-collector` scripts come with the package. A command that needs
the OpenSearch client or the chart library then names the missing extra in one line
instead of ending in a traceback.
"""

from __future__ import annotations

# Top-level modules that only `crm-audit[collector]` installs.
COLLECTOR_EXTRA_MODULES = frozenset({"opensearchpy", "orjson", "matplotlib"})


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The operator's message when ``exc`` is a collector-only library, else None."""
    root = (exc.name or "").split(".", 1)[0]
    if root not in COLLECTOR_EXTRA_MODULES:
        return None
    return (
        f"this command needs {root}, which an agent-only install leaves out: "
        "install crm-audit[collector] (make install ROLE=collector)"
    )
