"""Finding the compiled kernels (``native/``, module ``crm_audit_native``). Pure.

The agent and the collector each use their own part of the one module, and each checks
its own interface version, so an older build is used by neither side that changed.
Optional everywhere: without the module, or with ``CRM_AUDIT_NATIVE=off`` in the
environment, everything is done in Python (the reference), and each process says which
in its start-up log.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

MODULE = "crm_audit_native"


def import_kernel(version_name: str, version: int) -> tuple[ModuleType | None, str]:
    """The kernel module if it speaks `version` (its attribute `version_name`), else
    None; with the reason it is not used ("" when it is)."""
    if os.environ.get("CRM_AUDIT_NATIVE", "").strip().lower() in ("off", "0", "false", "no"):
        return None, "CRM_AUDIT_NATIVE=off"
    try:
        module = importlib.import_module(MODULE)
    except ImportError:
        return None, f"the compiled kernel {MODULE} is not installed"
    found = getattr(module, version_name, None)
    if found != version:
        return None, (
            f"{MODULE} speaks {version_name} {found}, this program {version}: reinstall native/"
        )
    return module, ""
