"""`crm-audit-agent status`: what the agent's state directory says, without the agent.

Read-only: stream.json (the stream id), checkpoint.json (acked watermark, the stream
head after it, file positions; its modification time is the time of the last ack,
since it is rewritten on every ack) and the spool (records past the watermark: depth,
and each file's read position). Per file: the position read and spooled, the position
acknowledged, the file's current size and the lag (size - read position). A file
whose path now names another file (rotated, deleted) shows no size.

When `metrics.listen` is set and the agent answers there, a few live numbers are added
(connection state per collector, batches in flight, last ack age, files watched).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent import stream
from agent.checkpoint import CheckpointStore
from agent.config import AgentConfig
from agent.receipts import ReceiptStore
from agent.spool import DIR_NAME as SPOOL_DIR
from agent.spool import inspect
from agent.statedisk import disk_full
from agent.tail.reader import file_key

Fetch = Callable[[str], str | None]  # URL → Prometheus text, None when nobody answers


def _source_of(path: str, config: AgentConfig) -> str:
    for source in config.sources:
        if any(fnmatch.fnmatch(path, p) for p in source.paths):
            return source.name
    return "-"


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")


def _file(key: str, path: str, read: int, acked: int | None, config: AgentConfig) -> dict[str, Any]:
    size: int | None = None
    note = ""
    try:
        st = os.stat(path)  # noqa: PTH116 - plain string path from the checkpoint
        if file_key(st) == key:
            size = st.st_size
        else:
            note = "path now names another file (rotated)"
    except OSError:
        note = "gone (rotated or deleted)"
    return {
        "source": _source_of(path, config),
        "path": path,
        "key": key,
        "offset": read,
        "acked_offset": acked,
        "size": size,
        "lag_bytes": None if size is None else max(0, size - read),
        "note": note,
    }


def collect(config: AgentConfig, *, now: float, fetch: Fetch | None = None) -> dict[str, Any]:
    """The status as a JSON-ready dict. CheckpointError if checkpoint.json is unusable."""
    state = config.state_dir
    store = CheckpointStore(state)
    checkpoint = store.load()
    acked = checkpoint.next_sequence - 1
    spool = inspect(state / SPOOL_DIR, acked)
    try:
        last_ack: float | None = store.path.stat().st_mtime if acked > 0 else None
    except OSError:
        last_ack = None
    keys = sorted(set(checkpoint.files) | set(spool.positions))
    files = []
    for key in keys:
        done = checkpoint.files.get(key)
        read = spool.positions.get(key, done)
        assert read is not None
        files.append(_file(key, read.path, read.offset, done.offset if done else None, config))
    files.sort(key=lambda f: (f["source"], f["path"]))
    try:
        stream_id = stream.read(state)
    except stream.StreamError:
        stream_id = None
    receipts = sum(1 for _ in ReceiptStore(state).lines())
    out: dict[str, Any] = {
        "agent_id": config.agent_id,
        "state_dir": str(state),
        "state_exists": state.is_dir(),
        "stream_id": stream_id,
        "next_sequence": spool.next_sequence,
        "acked_sequence": acked,
        "last_ack_time": _iso(last_ack) if last_ack is not None else None,
        "last_ack_age_s": round(now - last_ack, 3) if last_ack is not None else None,
        "spool": {
            "segments": spool.segments,
            "bytes": spool.bytes,
            "unacked_records": spool.unacked_records,
            "unacked_bytes": spool.unacked_bytes,
            "corrupt_bytes": spool.corrupt_bytes,
            "legacy_segments": spool.legacy_segments,
        },
        # The head is saved with the acked watermark only (the running agent recomputes
        # the heads past it from the spool).
        "acked_head": checkpoint.head.hex() if checkpoint.stream_id else None,
        "receipts": receipts,
        "state_disk_full": state.is_dir() and disk_full(state),
        "files": files,
        "live": None,
    }
    listen = config.metrics.listen
    if fetch is not None and listen is not None and not listen.endswith(":0"):
        out["live"] = _live(listen, fetch)
    return out


def _live(listen: str, fetch: Fetch) -> dict[str, Any] | None:
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{listen}/metrics"
    text = fetch(url)
    if text is None:
        return None
    live: dict[str, Any] = {"url": url, "connections": {}, "files_watched": {}}
    prefix = "crm_audit_agent_"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix(prefix)
            if name == "collector_connection_state" and sample.value == 1:
                live["connections"][sample.labels["endpoint"]] = sample.labels["state"]
            elif name == "files_watched":
                live["files_watched"][sample.labels["source"]] = int(sample.value)
            elif name in (
                "batches_in_flight",
                "last_ack_age_seconds",
                "spool_unacked_events",
                "events_acked_total",
                "events_sent_total",
            ):
                live[name] = sample.value
    return live


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render_text(status: dict[str, Any]) -> str:
    """A short summary and a table of files."""
    lines = [f"agent {status['agent_id']}, state {status['state_dir']}"]
    if not status["state_exists"]:
        lines.append("no state yet (the agent has not run with this state_dir)")
    lines.append(f"stream: {_cell(status['stream_id'])}")
    ack = "never"
    if status["last_ack_time"] is not None:
        ack = f"{status['last_ack_time']} ({status['last_ack_age_s']:.0f} s ago)"
    lines.append(
        f"sequence: next {status['next_sequence']}, last acked {status['acked_sequence']}, "
        f"last ack {ack}"
    )
    sp = status["spool"]
    corrupt = f", {sp['corrupt_bytes']} corrupt bytes" if sp["corrupt_bytes"] else ""
    lines.append(
        f"spool: {sp['unacked_records']} events unacked ({sp['unacked_bytes']} bytes); "
        f"{sp['segments']} segments, {sp['bytes']} bytes{corrupt}"
    )
    head = status["acked_head"]
    lines.append(
        f"acked head: {head[:16] + '...' if head else 'genesis'}; "
        f"{status['receipts']} collector receipts kept"
    )
    if sp["legacy_segments"]:
        lines.append(
            f"spool: {sp['legacy_segments']} segments of an older agent (format CRS1); "
            "this version refuses to start while they hold unacked events"
        )
    if status.get("state_disk_full"):
        lines.append("paused: state disk full (resumes by itself once space is freed)")
    live = status["live"]
    if live is not None:
        conns = ", ".join(f"{e} {s}" for e, s in live["connections"].items()) or "-"
        age = live.get("last_ack_age_seconds")
        lines.append(
            f"live: collectors {conns}; {int(live.get('batches_in_flight', 0))} batches in "
            f"flight; last ack {'-' if age is None else f'{age:.1f} s ago'}"
        )
    header = ("SOURCE", "PATH", "OFFSET", "ACKED", "SIZE", "LAG", "NOTE")
    rows = [header] + [
        (
            f["source"],
            f["path"],
            str(f["offset"]),
            _cell(f["acked_offset"]),
            _cell(f["size"]),
            _cell(f["lag_bytes"]),
            f["note"],
        )
        for f in status["files"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not status["files"]:
        lines.append("(no file positions recorded yet)")
    return "\n".join(lines) + "\n"
