"""What `crm-audit verify` trusts and expects before it reads OpenSearch.

Trust roots come from the keys directory the investigator passes (``--keys``), never
from a directory the collector writes to:

- agents: every ``<agent_id>.pub`` of it (a file may hold several keys: rotation), and
  every agent with a file there is *expected* — a registered agent without events and
  seals is a finding (MISSING_STREAM), not silence;
- the collector's checkpoint key (it signs checkpoints and retention records):
  ``--checkpoint-key PUB``, else ``<keys>/collector.pub`` (so ``collector`` is not an
  agent name there). A ``*.pub`` lying in the checkpoint directory is never trusted:
  whoever can write that directory could sign their own checkpoints.

Checkpoints configured (``--checkpoints DIR``) but the directory missing, without a
checkpoint file, with an empty file, or without a checkpoint of an agent verified are
findings. ``--state FILE`` remembers, per agent, the highest sequence a signed
checkpoint attested and, per checkpoint file, its line count; a later run that sees
less (lines dropped from the end, a file deleted) reports it. The state only ever
grows: one run that sees less does not lower what the next run compares against.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.checkpoints import CheckpointView, read_checkpoints
from collector.keys import AGENT_ID_RE
from proto import integrity

COLLECTOR_KEY_FILE = "collector.pub"
CHECKPOINT_FILES = "checkpoints-*.jsonl"

# Stream-level findings (no sequence range to name).
MISSING_STREAM = "MISSING_STREAM"
CHECKPOINT_MISSING = "CHECKPOINT_MISSING"
CHECKPOINT_TRUNCATED = "CHECKPOINT_TRUNCATED"
AGENT_RESTARTED = "AGENT_RESTARTED"
RECEIPT_AHEAD = "RECEIPT_AHEAD"
CHAIN_HEAD_ALTERED = "CHAIN_HEAD_ALTERED"

# What the chain head document in OpenSearch is called as an anchor: unsigned, so a
# disagreement with the signed heads blames the document, never the event it names.
CHAIN_HEAD_RECORD = "chain head record"


@dataclass
class Attested:
    """What the anchors say about how far one stream reached: (sequence, head hex,
    what attests it, index of the attesting document or "") each."""

    items: list[tuple[int, str, str, str]] = field(default_factory=list)
    checkpointed: int | None = None  # highest sequence a signed checkpoint attests
    receipted: int | None = None  # highest sequence a signed receipt attests

    def add(self, sequence: int, head: str, what: str, index: str) -> None:
        self.items.append((sequence, head, what, index))

    def points(self) -> dict[int, list[tuple[bytes, str, str]]]:
        """sequence -> [(head, what, index)] for the walk to compare with signed heads."""
        out: dict[int, list[tuple[bytes, str, str]]] = {}
        for sequence, head, what, index in self.items:
            try:
                value = bytes.fromhex(head)
            except ValueError:
                value = b""
            out.setdefault(sequence, []).append((value, what, index))
        return out


class AnchorError(ValueError):
    """A trust root or the state file cannot be used (the investigator's mistake)."""


def registered_agents(keys_dir: Path) -> list[str]:
    """Agents with a key file in `keys_dir`: the agents verify expects."""
    names = []
    for path in sorted(keys_dir.glob("*.pub")):
        if path.name != COLLECTOR_KEY_FILE and AGENT_ID_RE.fullmatch(path.stem):
            names.append(path.stem)
    return names


def collector_keys(keys_dir: Path, checkpoint_key: Path | None) -> dict[str, Ed25519PublicKey]:
    """Key id -> collector key, from `checkpoint_key` or ``keys_dir/collector.pub``;
    {} when neither is there."""
    source = checkpoint_key if checkpoint_key is not None else keys_dir / COLLECTOR_KEY_FILE
    if checkpoint_key is None and not source.exists():
        return {}
    try:
        loaded = integrity.load_public_keys(source.read_bytes())
    except OSError as exc:
        raise AnchorError(f"{source}: {exc.strerror}") from None
    except ValueError as exc:
        raise AnchorError(f"{source}: {exc}") from None
    return {integrity.key_id(k): k for k in loaded}


def checkpoint_view(directory: Path, trusted: Mapping[str, Ed25519PublicKey]) -> CheckpointView:
    """The checkpoints of `directory`, checked with `trusted` only; a directory that is
    missing, holds no checkpoint file or an empty one is a problem of the view."""
    if not trusted:
        raise AnchorError("checkpoints need a trusted collector key")
    if not directory.is_dir():
        return CheckpointView(problems=[f"checkpoint directory {directory} does not exist"])
    files = sorted(directory.glob(CHECKPOINT_FILES))
    view = read_checkpoints(directory, trusted)
    if not files:
        view.problems.append(f"no checkpoint file ({CHECKPOINT_FILES}) in {directory}")
    for path in files:
        if not path.read_bytes().strip():
            view.problems.append(f"checkpoint file {path} is empty")
    return view


def line_counts(directory: Path) -> dict[str, int]:
    if not directory.is_dir():
        return {}
    return {
        path.name: len(path.read_bytes().splitlines())
        for path in sorted(directory.glob(CHECKPOINT_FILES))
    }


@dataclass
class SeenState:
    """What earlier runs saw: per agent the highest checkpointed sequence, per checkpoint
    file its line count."""

    agents: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "agents": dict(sorted(self.agents.items())), "files": self.files}


def load_state(path: Path) -> SeenState:
    """The state of earlier runs; empty when `path` does not exist yet (first run)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SeenState()
    except OSError as exc:
        raise AnchorError(f"{path}: {exc.strerror}") from None
    try:
        body = json.loads(raw)
        agents = {str(k): int(v) for k, v in body["agents"].items()}
        files = {str(k): int(v) for k, v in body["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AnchorError(f"{path}: not a verify state file") from None
    return SeenState(agents, files)


@dataclass
class Comparison:
    """Where this run sees less than an earlier one."""

    problems: list[str] = field(default_factory=list)
    agents: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def attested_sequences(view: CheckpointView) -> dict[str, int | None]:
    """Highest checkpointed sequence per report label: ``agent`` for a format 1 chain,
    ``agent:stream`` for a format 2 stream (the names the report uses)."""
    out: dict[str, int | None] = {agent: head[0] for agent, head in view.heads.items()}
    for (agent, stream), head in view.streams.items():
        out[f"{agent}:{stream}"] = head[0]
    return out


def compare(previous: SeenState, view: CheckpointView, counts: Mapping[str, int]) -> Comparison:
    out = Comparison()
    for name, seen in sorted(previous.files.items()):
        now = counts.get(name)
        if now is None:
            out.problems.append(
                f"checkpoint file {name} is gone; a previous run saw {seen} lines (--state)"
            )
        elif now < seen:
            out.problems.append(
                f"checkpoint file {name} has {now} lines; a previous run saw {seen} "
                "(lines removed, --state)"
            )
    now_attested = attested_sequences(view)
    for agent, seen in sorted(previous.agents.items()):
        now = now_attested.get(agent)
        if now is None or now < seen:
            attested = "no sequence" if now is None else f"sequence {now}"
            out.agents.setdefault(agent, []).append(
                (
                    CHECKPOINT_TRUNCATED,
                    f"checkpoints attest {attested}; a previous run saw {seen} (--state)",
                )
            )
    return out


def updated(previous: SeenState, view: CheckpointView, counts: Mapping[str, int]) -> SeenState:
    """`previous` raised to what this run saw (never lowered)."""
    agents = dict(previous.agents)
    for agent, sequence in attested_sequences(view).items():
        if sequence is not None:
            agents[agent] = max(agents.get(agent, 0), sequence)
    files = dict(previous.files)
    for name, count in counts.items():
        files[name] = max(files.get(name, 0), count)
    return SeenState(agents, files)


def save_state(path: Path, state: SeenState) -> None:
    """Write `state` atomically (a crash leaves the old file or the new one)."""
    temporary = path.with_name(f".{path.name}.tmp")
    data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fsync(handle.fileno())
        temporary.replace(path)
    except OSError as exc:
        raise AnchorError(f"cannot write {path}: {exc.strerror}") from None
