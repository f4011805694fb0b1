"""Peers: rsyslog and syslog-ng shipping the same corpus into the same node.

Same files, written the same way, into the same OpenSearch, measured the same way as
the end-to-end scenario: warm-up line searchable first, then the corpus appended to one
file, the clock stops when ``_count`` shows every line. CPU seconds and peak RSS are
those of the peer's one process. Both write one document per line into their own index
with bench/templates/rsyslog-index-template.json (strings as keywords, the raw line
stored but not indexed, like our mapping): ``@timestamp``, the file path, the raw line
and the parsed record.

What the peers do and do not do, beside our agent + collector (which parse into the ECS
document, hash-chain, sign, verify seals and the chain before acking, store seals and
checkpoints, and dead-letter refused documents):

- rsyslog (bench/templates/rsyslog.conf; imfile -> mmjsonparse -> omelasticsearch):
  bulk ``create`` with ``_id`` = file:offset (a resent document is refused as a
  duplicate); no normalization beyond parsing the JSON; no integrity; in-memory queues.
- syslog-ng (bench/templates/syslog-ng.conf; wildcard-file -> json-parser ->
  elasticsearch-http, Debian's 3.38 unpacked by bench/install-syslog-ng.sh): bulk
  ``index`` (a resent document overwrites) with ``_id`` = syslog-ng's per-message id;
  only the HTTP status of a bulk request is checked, not its items (a refused document
  is dropped without a trace); every parsed value arrives as a string (numbers, lists);
  no integrity; in-memory queue (no disk buffer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.corpus import warmup_line
from bench.pipeline import Bench, rsyslog, run_scope, syslog_ng
from bench.processes import Proc
from bench.procstat import CpuMark, peak_rss_kib
from bench.scenarios.base import NodeCpu, Run, per_million, rounded
from bench.scenarios.shipping import wait_warmed, write_and_wait

Running = contextlib.AbstractContextManager[Proc]
# (bench, run directory, index, logs directory) -> the running peer
Start = Callable[[Bench, Path, str, Path], Running]


def start_rsyslog(
    bench: Bench, directory: Path, index: str, logs: Path
) -> contextlib.AbstractContextManager[Proc]:
    return rsyslog(bench, directory, index, str(logs / "*.jsonl"))


def start_syslog_ng(
    bench: Bench, directory: Path, index: str, logs: Path
) -> contextlib.AbstractContextManager[Proc]:
    return syslog_ng(bench, directory, index, logs, "*.jsonl")


PEERS: dict[str, Start] = {"rsyslog": start_rsyslog, "syslog-ng": start_syslog_ng}


def run_once(bench: Bench, lines: Sequence[bytes], chunk: int, peer: str = "rsyslog") -> Run:
    with run_scope(bench, peer) as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        index = f"{prefix}-{peer}"
        with contextlib.ExitStack() as stack:
            proc = stack.enter_context(PEERS[peer](bench, directory, index, logs))
            wait_warmed(bench.os, index, (proc,))
            cpu = CpuMark.now(proc.pid)
            node_cpu = NodeCpu(bench.node_pid)
            shipped = write_and_wait(
                bench.os, logs / "crm-audit.jsonl", lines, chunk, index, (proc,)
            )
            run = {
                **shipped.throughput(),
                "cpu_s_per_m": per_million(cpu.since(), len(lines)),
                "peak_rss_mib": peak_rss_kib(proc.pid) / 1024,
                **node_cpu.per_million(len(lines)),
            }
            return rounded({**run, **shipped.stored(bench.os, index)})
