"""`crm-audit verify`: prove from OpenSearch content, public keys and checkpoints that
nothing was altered, removed, inserted or reordered — or say exactly where it was.

Inputs: the events indices (``{prefix}-events-*``), ``{prefix}-seals``,
``{prefix}-chainheads``, the agents' public keys (``--keys``, the collector's
``integrity.keys_dir``) and optionally the signed checkpoints (``--checkpoints``) and
the signed retention records (``{prefix}-retention`` and the checkpoint directory's
``retention-*.jsonl``, trusted with the collector key: `collector.retention_job.records`).

Per stream — an agent's format 1 history, and each format 2 stream (``agent.stream``) —
seals (sorted by ``seal.first_sequence``) and events (sorted by ``event.sequence``,
filtered by agent and stream; never by ``_id``, whose fielddata is deprecated) are
streamed with point-in-time searches and ``search_after``; only one seal's range of
events is held in memory per stream, and ``--jobs`` streams run in parallel, each
in a worker process of its own (`Verifier._verify_units`); a large format 2 stream
is cut into sequence ranges at seal boundaries, walked in parallel with the same
report as one walk (`collector.verify.ranges`). Format 2
streams are judged from signed material only (`collector.verify.signed`); below is the
format 1 walk. For each seal with a valid signature by a key
registered for the agent, the chain is recomputed from the seal's ``prev_chain_head``
over the events' stored canonical bytes and must end at the sealed head; every
searchable field is re-derived from the canonical bytes (`collector.documents`) and
compared with what is stored.

Every sequence ends up with exactly one verdict; the verdicts, what each means and the
rule choosing between them are stated once, in `collector.verify.verdicts`.

Modules, one responsibility each:

    reading    point-in-time streams over OpenSearch; streams, events and seals as
               read back
    batches    format 2 event bytes from batch documents, for event documents
               without inline bytes
    checks     a format 1 agent's walk: chain and seal checks, seal links, unsealed runs
    signed     a format 2 stream's walk: each event against its signed hash
    ranges     one format 2 stream cut into ranges for worker processes, merged back
    verdicts   the verdicts, their precedence, ranges and `resolve`
    verifier   streams in parallel processes, trust, retention and the tail (`Verifier`)
    report     per stream ranges and stream findings, as text or JSON
    anchors    trust roots from the keys directory, checkpoints, ``--state``
    receipts   receipts exported by agents (``--receipts``)

Exit code (see `collector.admin.cli`): 0 only when every range is VALID or PENDING.
"""

from __future__ import annotations

from collector.verify.fields import field_differences
from collector.verify.reading import Reader, VerifyError
from collector.verify.report import AgentReport, Report
from collector.verify.verdicts import (
    ALTERED,
    CHAIN_BREAK,
    EXPIRED,
    GAP_AT_SOURCE,
    INSERTED,
    MISSING,
    NOT_FINDINGS,
    PENDING,
    PRECEDENCE,
    REORDERED,
    SEAL_INVALID,
    SEAL_MISSING,
    TAIL_TRUNCATED,
    UNVERIFIABLE,
    VALID,
    Range,
    resolve,
)
from collector.verify.verifier import Verifier

__all__ = [
    "ALTERED",
    "CHAIN_BREAK",
    "EXPIRED",
    "GAP_AT_SOURCE",
    "INSERTED",
    "MISSING",
    "NOT_FINDINGS",
    "PENDING",
    "PRECEDENCE",
    "REORDERED",
    "SEAL_INVALID",
    "SEAL_MISSING",
    "TAIL_TRUNCATED",
    "UNVERIFIABLE",
    "VALID",
    "AgentReport",
    "Range",
    "Reader",
    "Report",
    "Verifier",
    "VerifyError",
    "field_differences",
    "resolve",
]
