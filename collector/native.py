"""The compiled collector kernel (``native/``, module ``crm_audit_native``), when installed.

It does a stream format 2 batch's per-event work in Rust, without the GIL and without
a Python object per field: `SCANNER` decodes and hashes the event bytes for
`proto.integrity.verify_batch` (a `proto.integrity.Scanner`), and `KERNEL` turns them
into the JSON documents the bulk body carries, the documents
`collector.documents.to_document` and `collector.formatv2.documents_v2` build in
Python. Python stays the reference: `crm-audit verify` re-derives every stored document
with it, and the kernel declines (None) each event it would not build exactly the same
way (an address other than dotted IPv4 or IPv6 without a zone, or an IPv4-mapped one; a
port over 65535; a change value typed as a number that is not plain decimal; an invalid
stream id), which is then built in Python.

Optional: ``make venv`` / ``make install`` build it where cargo is installed; without
it, or with ``CRM_AUDIT_NATIVE=off`` in the collector's environment, everything is done
in Python. The collector logs which at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from proto.integrity import EventFacts, Scanner
from proto.native import MODULE, import_kernel

log = logging.getLogger(__name__)

# The kernel's interface version this collector speaks (KERNEL_VERSION in native/).
KERNEL_VERSION = 3

# (doc_id, sequence, timestamp_unix_nano, document JSON, original line), or None where
# the kernel declined the event.
Built = tuple[str, int, int, bytes, str] | None


class Kernel(Protocol):
    def __call__(
        self,
        datas: list[bytes],
        heads: list[bytes | None],
        event_hashes: list[bytes],
        agent_id: str,
        received_unix_nano: int,
        inline_bytes: bool,
        /,
    ) -> Sequence[Built]: ...


def guarded_kernel(kernel: Kernel) -> Kernel:
    """`kernel`, where a failure (a bug: it declines what it cannot build) costs speed,
    not the batch: it is logged and the batch's documents are built in Python."""

    def documents(
        datas: list[bytes],
        heads: list[bytes | None],
        event_hashes: list[bytes],
        agent_id: str,
        received_unix_nano: int,
        inline_bytes: bool,
        /,
    ) -> Sequence[Built]:
        try:
            return kernel(datas, heads, event_hashes, agent_id, received_unix_nano, inline_bytes)
        except Exception as exc:  # noqa: BLE001 - any kernel failure falls back to Python
            log.error(
                "compiled kernel failed building documents (%s: %s); this batch's are built "
                "in Python",
                type(exc).__name__,
                exc,
            )
            return [None] * len(datas)

    return documents


def guarded_scanner(scanner: Scanner) -> Scanner:
    """`scanner`, where a failure is logged and the batch is parsed in Python."""

    def scan(
        datas: list[bytes], domain: bytes, /
    ) -> tuple[Sequence[EventFacts], list[bytes]] | None:
        try:
            return scanner(datas, domain)
        except Exception as exc:  # noqa: BLE001 - any kernel failure falls back to Python
            log.error(
                "compiled kernel failed reading a batch (%s: %s); it is parsed in Python",
                type(exc).__name__,
                exc,
            )
            return None

    return scan


def load() -> tuple[Kernel | None, Scanner | None, str]:
    """The kernel's two functions (or None) and a one-line description of what runs."""
    module, why = import_kernel("KERNEL_VERSION", KERNEL_VERSION)
    if module is None:
        return None, None, f"format 2 batches read and documents built in Python ({why})"
    return (
        guarded_kernel(module.documents),
        guarded_scanner(module.scan),
        f"format 2 batches read and documents built by the compiled kernel {MODULE}",
    )


KERNEL, SCANNER, DESCRIPTION = load()
