"""Signed retention records: the evidence written before an events index is deleted.

Before the collector's retention job deletes an index (and when the collector finds an
index ISM deleted), it appends one line to
``<checkpoint_dir>/retention-<key id[:16]>.jsonl``, signed with the collector's
checkpoint key and hash-linked like the checkpoints (`collector.checkpoints`)::

    {"v": 1, "time": "...Z", "key_id": "<hex>", "prev": "<hex SHA-256 of the previous
     line, '' for the first>", "record": {...}, "sig": "<base64 Ed25519>"}

and indexes the same line (``raw``, plus searchable fields) in ``{prefix}-retention``
under ``_id`` ``<index>:<index uuid>``, so a second run (or a second collector) finds it
and writes no second record. ``record`` holds the class, the index and its uuid, the
event-time range and document count, per chain the sequence runs actually stored in
the index and the seal ranges that name it (``agents``: an agent's stream format 1
history, by agent id; ``streams``: each format 2 stream, by ``agent:stream`` with its
``agent`` and ``stream`` named, since every stream's sequences start at 1), the
policy in force (file, SHA-256, phases, the rule that fired) and who deleted it
(enforcer ``collector`` or ``ism``, collector id).

The signature covers ``"crm-audit/retention/v1\\0" || JSON of the line without "sig"``
(sorted keys, no spaces): another domain than checkpoints, so neither can pass for the
other. `crm-audit verify` trusts a record only when its signature verifies with a
collector key the investigator passes; only then is an absent event in its runs
EXPIRED instead of MISSING.
"""

from __future__ import annotations

import base64
import bisect
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.documents import iso_nanos
from collector.errors import RetentionError
from collector.index import Requester
from proto import integrity

DOMAIN_RETENTION = b"crm-audit/retention/v1\0"
FILE_GLOB = "retention-*.jsonl"

_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE: dict[str, Any] = {"type": "date_nanos"}

RETENTION_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "retention": {
            "properties": {
                "class": _KW,
                "index": _KW,
                "index_uuid": _KW,
                "action": _KW,
                "enforcer": _KW,
                "collector": _KW,
                "key_id": _KW,
                "agents": _KW,
                "oldest_event": _DATE,
                "newest_event": _DATE,
                "documents": {"type": "long"},
                "policy": _KW,
                "rule": {"type": "text"},
                # the signed line exactly as appended to the file (what verify checks)
                "raw": {"type": "keyword", "index": False, "doc_values": False},
            }
        },
    },
}


def retention_index(prefix: str) -> str:
    """Where retention records are indexed (no ISM policy: kept like the seals)."""
    return f"{prefix}-retention"


def record_id(index: str, index_uuid: str) -> str:
    """The ``_id`` of the record of one index (a recreated index has another uuid)."""
    return f"{index}:{index_uuid}"


def _signing_bytes(body: Mapping[str, Any]) -> bytes:
    return DOMAIN_RETENTION + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


Runs = list[tuple[int, int]]


def runs_of(sequences: Iterable[int]) -> Runs:
    """Sorted sequences -> contiguous [first, last] runs."""
    out: Runs = []
    for seq in sequences:
        if out and seq <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], seq))
        else:
            out.append((seq, seq))
    return out


class RecordFile:
    """Appends signed, hash-linked retention records to one file (one per key).

    Unlike a checkpoint file, two collectors on one host may share a key and this file
    (the same collector.yaml twice): each append takes an exclusive lock and links to
    the line that is last in the file then, not to the last one this process wrote.
    """

    def __init__(self, directory: Path, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.key_id = integrity.key_id(key.public_key())
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"retention-{self.key_id[:16]}.jsonl"

    @staticmethod
    def _last_line(fd: int) -> bytes:
        size = os.fstat(fd).st_size
        chunk = b""
        step = 65_536
        while size > 0:
            start = max(0, size - step)
            chunk = os.pread(fd, size - start, start) + chunk
            size = start
            lines = chunk.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or size == 0:
                return lines[-1]
        return b""

    def append(self, record: Mapping[str, Any], *, now_unix_nano: int) -> str:
        """Sign `record`, append it (fsync'd) and return the line as written."""
        # Append-only, like the checkpoints: the directory belongs on WORM storage.
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = self._last_line(fd)
            body: dict[str, Any] = {
                "v": 1,
                "time": iso_nanos(now_unix_nano),
                "key_id": self.key_id,
                "prev": hashlib.sha256(last).hexdigest() if last else "",
                "record": dict(record),
            }
            body["sig"] = base64.b64encode(self.key.sign(_signing_bytes(body))).decode("ascii")
            line = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        return line.decode("ascii")


def index_document(line: str) -> dict[str, Any]:
    """The ``{prefix}-retention`` document of a signed record line."""
    body = json.loads(line)
    record = body["record"]
    events = record.get("events", {})
    document: dict[str, Any] = {
        "class": record.get("class"),
        "index": record.get("index"),
        "index_uuid": record.get("index_uuid"),
        "action": record.get("action"),
        "enforcer": record.get("deleted_by", {}).get("enforcer"),
        "collector": record.get("deleted_by", {}).get("collector"),
        "key_id": body.get("key_id"),
        "agents": sorted(_agent_ids(record)),
        "documents": events.get("count"),
        "policy": record.get("policy", {}).get("source"),
        "rule": record.get("policy", {}).get("rule"),
        "raw": line,
    }
    for name, key in (("oldest_event", "oldest"), ("newest_event", "newest")):
        if events.get(key):
            document[name] = events[key]
    return {"@timestamp": body["time"], "retention": document}


Chain = tuple[str, str]  # (agent id, stream id; "" for an agent's format 1 history)


def _chain_entries(record: Mapping[str, Any]) -> Iterator[tuple[Chain, Mapping[str, Any]]]:
    """Every chain a record body has evidence for, with its entry; entries that do not
    name their agent and stream (a record is signed, but may come from a buggy writer)
    are skipped rather than guessed."""
    agents = record.get("agents", {})
    if isinstance(agents, Mapping):
        for agent, entry in agents.items():
            if isinstance(entry, Mapping):
                yield (str(agent), ""), entry
    streams = record.get("streams", {})
    if isinstance(streams, Mapping):
        for entry in streams.values():
            if not isinstance(entry, Mapping):
                continue
            agent, stream = entry.get("agent"), entry.get("stream")
            if isinstance(agent, str) and isinstance(stream, str) and agent and stream:
                yield (agent, stream), entry


def _agent_ids(record: Mapping[str, Any]) -> set[str]:
    return {agent for (agent, _stream), _entry in _chain_entries(record)}


@dataclass(frozen=True)
class Record:
    """One signed retention record whose signature verified."""

    where: str
    time: str
    key_id: str
    body: dict[str, Any]

    @property
    def index(self) -> str:
        return str(self.body.get("index", ""))

    @property
    def enforcer(self) -> str:
        return str(self.body.get("deleted_by", {}).get("enforcer", ""))

    @property
    def newest_event(self) -> str:
        return str(self.body.get("events", {}).get("newest") or "")

    @property
    def agents(self) -> set[str]:
        """The agents whose events (of any chain) the deleted index held."""
        return _agent_ids(self.body)

    def runs(self, agent: str, stream: str = "") -> Runs:
        """The deleted sequence runs of `agent`'s format 1 history (`stream` "") or of
        its format 2 stream `stream`."""
        for chain, entry in _chain_entries(self.body):
            if chain == (agent, stream):
                return [(int(a), int(b)) for a, b in entry.get("sequences", [])]
        return []


@dataclass
class RetentionRecords:
    """Every verified record, and a lookup: which record covers a chain's sequence."""

    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _by_chain: dict[Chain, list[tuple[int, int, Record]]] = field(default_factory=dict)

    def add(self, record: Record, digest: str) -> None:
        if digest in self._seen:  # the same line from the file and from the index
            return
        self._seen.add(digest)
        self.records.append(record)
        for chain, _entry in _chain_entries(record.body):
            runs = self._by_chain.setdefault(chain, [])
            for first, last in record.runs(*chain):
                bisect.insort(runs, (first, last, record), key=lambda r: (r[0], r[1]))

    def covering(self, agent: str, sequence: int, stream: str = "") -> Record | None:
        """The record whose runs for `agent`'s format 1 history (`stream` "") or for its
        format 2 stream `stream` hold `sequence` (None: no evidence). A stream is
        covered only by a record naming that stream: a format 1 entry of the same agent
        (or a record from before streams were recorded) says nothing about it."""
        runs = self._by_chain.get((agent, stream), [])
        at = bisect.bisect_right(runs, sequence, key=lambda r: r[0])
        for first, last, record in reversed(runs[:at]):
            if first <= sequence <= last:
                return record
        return None


def _check_line(
    raw: bytes, where: str, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[Record | None, dict[str, Any] | None, str]:
    """(record, body, problem) of one line."""
    try:
        body = json.loads(raw)
        sig = base64.b64decode(body.pop("sig"))
        signer = keys.get(body.get("key_id", ""))
        if signer is None:
            return None, body, f"{where}: retention record signed by an unknown collector key"
        signer.verify(sig, _signing_bytes(body))
        record = body["record"]
        if not isinstance(record, dict):
            raise TypeError("record")
    except InvalidSignature:
        return None, None, f"{where}: retention record signature does not verify"
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, f"{where}: malformed retention record"
    return Record(where, str(body.get("time", "")), str(body["key_id"]), record), body, ""


def read_record_files(
    directory: Path, keys: Mapping[str, Ed25519PublicKey], into: RetentionRecords
) -> None:
    """Check every ``retention-*.jsonl`` of `directory` (signatures and links)."""
    for path in sorted(directory.glob(FILE_GLOB)):
        prev = ""
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            where = f"{path.name}:{number}"
            record, body, problem = _check_line(raw, where, keys)
            if problem:
                into.problems.append(problem)
            if body is not None and body.get("prev", "") != prev:
                into.problems.append(
                    f"{where}: does not follow the previous line (lines removed or edited)"
                )
            prev = hashlib.sha256(raw).hexdigest()
            if record is not None:
                into.add(record, hashlib.sha256(raw).hexdigest())


def add_indexed_records(
    lines: Iterable[tuple[str, str]], keys: Mapping[str, Ed25519PublicKey], into: RetentionRecords
) -> None:
    """Check records read from ``{prefix}-retention`` (`lines`: (doc id, raw line))."""
    for doc_id, line in lines:
        raw = line.encode("ascii", errors="replace")
        record, _body, problem = _check_line(raw, f"retention record {doc_id}", keys)
        if problem:
            into.problems.append(problem)
        elif record is not None:
            into.add(record, hashlib.sha256(raw).hexdigest())


def load_records(
    request: Requester,
    prefix: str,
    keys: Mapping[str, Ed25519PublicKey],
    directory: Path | None = None,
) -> RetentionRecords:
    """Every record of ``{prefix}-retention`` and of `directory`'s record files whose
    signature verifies with one of `keys`; the others are listed in ``problems``.

    Raises `RetentionError` when OpenSearch cannot be read.
    """
    out = RetentionRecords()
    if directory is not None:
        read_record_files(directory, keys, out)
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": 1000,
            "query": {"match_all": {}},
            "sort": [{"@timestamp": "asc"}, {"retention.index": "asc"}],
            "_source": ["retention.raw"],
        }
        if after is not None:
            body["search_after"] = after
        response = request(
            "POST",
            f"/{retention_index(prefix)}/_search",
            body=body,
            params={"ignore_unavailable": "true"},
        )
        if response.status != 200:
            detail = " ".join(json.dumps(response.body).split())[:300]
            raise RetentionError(
                f"cannot read {retention_index(prefix)}: HTTP {response.status}: {detail}"
            )
        hits = response.body.get("hits", {}).get("hits", [])
        add_indexed_records(
            ((str(h["_id"]), str(h["_source"].get("retention", {}).get("raw", ""))) for h in hits),
            keys,
            out,
        )
        if len(hits) < 1000:
            return out
        after = hits[-1]["sort"]
