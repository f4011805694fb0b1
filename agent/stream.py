"""The agent's stream: one incarnation of its state (stream format 2).

``state_dir/stream.json`` holds the stream id (proto.integrity.new_stream_id), created
once with the state directory and never rewritten: written to a temporary file,
fsynced, renamed into place, the directory fsynced, mode 0600.

    {"version": 1, "stream_id": "9f2c0a1b3d4e5f60", "created_unix_nano": 1772...}

Sequences, heads, seals and document ids are per (agent, stream). An agent that starts
without its state (host reinstalled, state_dir deleted) creates a new stream and starts
at sequence 1, so it can never collide with the ids of an earlier incarnation; the
collector sees a new stream of a known agent and raises one alert.

A state directory whose checkpoint names a stream but whose stream.json is gone is
refused at start (one line saying what to do): making a new stream there would leave
the old stream's unacked records without a stream to ship them under.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from agent.durable import fsync_dir, write_synced
from agent.errors import AgentError
from proto import integrity

FILE_NAME = "stream.json"
_VERSION = 1


class StreamError(AgentError):
    """stream.json is unreadable, malformed, or cannot be created."""


@dataclass(frozen=True, slots=True)
class Stream:
    stream_id: str
    created: bool  # made by this start (a new incarnation)


def read(state_dir: Path) -> str | None:
    """The stream id in ``state_dir/stream.json``; None when there is none."""
    path = state_dir / FILE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StreamError(f"{path}: cannot read the stream id: {exc}") from None
    stream_id = data.get("stream_id") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != _VERSION
        or not isinstance(stream_id, str)
        or not integrity.valid_stream_id(stream_id)
    ):
        raise StreamError(f"{path}: not a version {_VERSION} stream file with a valid stream_id")
    return stream_id


def load_or_create(state_dir: Path, *, now_unix_nano: int) -> Stream:
    """The stream of this state directory; a new one (written durably) if it has none."""
    existing = read(state_dir)
    if existing is not None:
        return Stream(existing, created=False)
    stream_id = integrity.new_stream_id()
    body = json.dumps(
        {"version": _VERSION, "stream_id": stream_id, "created_unix_nano": now_unix_nano}
    ).encode()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / FILE_NAME
    tmp = state_dir / (FILE_NAME + ".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a crash while creating it: that stream was never used
        write_synced(tmp, body, exclusive=True)
        # link, not rename: never replaces a stream.json made meanwhile by another start
        os.link(tmp, path)
        tmp.unlink()
        fsync_dir(state_dir)
    except FileExistsError:
        raise StreamError(f"{path} appeared while creating it; is another agent running?") from None
    except OSError as exc:
        raise StreamError(f"cannot create {path}: {exc.strerror or exc}") from None
    return Stream(stream_id, created=True)


__all__ = ["FILE_NAME", "Stream", "StreamError", "load_or_create", "read"]
