"""Leases in ``{prefix}-leases``: one collector evaluates a windowed rule at a time.

One document per rule (``_id`` = ``rule:<id>``) names its holder, when the lease
expires and how far the rule has been evaluated (``evaluated_to``: the state that
survives restarts and hand-overs). That is a point on the *receipt* timeline: windowed
rules have evaluated every event the collectors received (``event.ingested``) up to it,
whatever the event's own time; the integrity rule every integrity alert written up to
it. Taking a free or expired lease and renewing one's own are conditional writes
(``op_type=create`` for a new document, ``if_seq_no`` / ``if_primary_term`` otherwise):
of two collectors racing for it, one gets a 409 and skips the rule this round. A
collector that dies simply stops renewing; another takes over once the lease expired
and continues from ``evaluated_to``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collector.config import DEFAULT_REPLICAS
from collector.detect.alerts import LEASES_MAPPING, leases_index
from collector.detect.errors import DetectionError
from collector.documents import iso_nanos, parse_iso_nanos
from collector.index import Requester
from collector.lifecycle import replica_settings


@dataclass(frozen=True)
class Lease:
    """A lease this collector holds, with the version needed to renew it."""

    name: str
    evaluated_to: int | None
    seq_no: int
    primary_term: int


class Leases:
    """Acquire, renew and release leases (and the evaluation state they carry)."""

    def __init__(
        self,
        request: Requester,
        prefix: str,
        holder: str,
        ttl_s: float,
        *,
        replicas: int | str = DEFAULT_REPLICAS,
    ) -> None:
        self.request = request
        self.index = leases_index(prefix)
        self.holder = holder
        self.ttl_ns = int(ttl_s * 1e9)
        # like every index the collector makes: a lease must survive losing a data node
        self.replicas = replicas

    def ensure_index(self) -> None:
        response = self.request(
            "PUT",
            f"/{self.index}",
            body={
                "settings": {"index": {"number_of_shards": 1, **replica_settings(self.replicas)}},
                "mappings": LEASES_MAPPING,
            },
        )
        if response.status == 200:
            return
        error = response.body.get("error", {}) if isinstance(response.body, Mapping) else {}
        if (
            response.status == 400
            and isinstance(error, Mapping)
            and error.get("type") == "resource_already_exists_exception"
        ):
            return
        raise DetectionError(f"cannot create {self.index}: HTTP {response.status}")

    def _body(self, name: str, now: int, evaluated_to: int | None) -> dict[str, Any]:
        lease: dict[str, Any] = {
            "name": name,
            "holder": self.holder,
            "expires": iso_nanos(now + self.ttl_ns),
        }
        if evaluated_to is not None:
            lease["evaluated_to"] = iso_nanos(evaluated_to)
        return {"@timestamp": iso_nanos(now), "lease": lease}

    def acquire(self, name: str, now: int) -> Lease | None:
        """The lease when this collector holds it now (taken or renewed), else None."""
        path = f"/{self.index}/_doc/{name}"
        current = self.request("GET", path)
        if current.status == 404:
            created = self.request(
                "PUT",
                path,
                body=self._body(name, now, None),
                params={"op_type": "create", "refresh": "false"},
            )
            if created.status == 409:
                return None
            if created.status not in (200, 201):
                raise DetectionError(f"lease {name}: HTTP {created.status}")
            return Lease(
                name, None, int(created.body["_seq_no"]), int(created.body["_primary_term"])
            )
        if current.status != 200:
            raise DetectionError(f"lease {name}: HTTP {current.status}")
        source = current.body.get("_source", {}).get("lease", {})
        evaluated = source.get("evaluated_to")
        evaluated_to = parse_iso_nanos(evaluated) if evaluated else None
        mine = source.get("holder") == self.holder
        expired = parse_iso_nanos(source.get("expires", iso_nanos(0))) <= now
        if not (mine or expired):
            return None
        return self._write(
            name,
            now,
            evaluated_to,
            int(current.body["_seq_no"]),
            int(current.body["_primary_term"]),
        )

    def _write(
        self, name: str, now: int, evaluated_to: int | None, seq_no: int, primary_term: int
    ) -> Lease | None:
        response = self.request(
            "PUT",
            f"/{self.index}/_doc/{name}",
            body=self._body(name, now, evaluated_to),
            params={"if_seq_no": str(seq_no), "if_primary_term": str(primary_term)},
        )
        if response.status == 409:
            return None
        if response.status not in (200, 201):
            raise DetectionError(
                f"lease {name}: HTTP {response.status} {json.dumps(response.body)[:200]}"
            )
        return Lease(
            name, evaluated_to, int(response.body["_seq_no"]), int(response.body["_primary_term"])
        )

    def complete(self, lease: Lease, now: int, evaluated_to: int) -> Lease | None:
        """Record progress and renew; None when another collector took the lease."""
        return self._write(lease.name, now, evaluated_to, lease.seq_no, lease.primary_term)

    def release(self, lease: Lease, now: int) -> None:
        """Let another collector take over at once (on shutdown)."""
        response = self.request(
            "PUT",
            f"/{self.index}/_doc/{lease.name}",
            body={
                "@timestamp": iso_nanos(now),
                "lease": {
                    "name": lease.name,
                    "holder": "",
                    "expires": iso_nanos(now),
                    **(
                        {"evaluated_to": iso_nanos(lease.evaluated_to)}
                        if lease.evaluated_to is not None
                        else {}
                    ),
                },
            },
            params={"if_seq_no": str(lease.seq_no), "if_primary_term": str(lease.primary_term)},
        )
        if response.status not in (200, 201, 409):
            raise DetectionError(f"lease {lease.name}: release failed: HTTP {response.status}")
