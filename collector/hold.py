"""Legal hold: keep a retention class's indices of a time range from being deleted.

``crm-audit-collector hold place --class C --from YYYY.MM --to YYYY.MM --reason TEXT``
resolves the class's existing event indices whose period lies in the range, and the
batches indices of the same class and periods (``{prefix}-batches-*``, the events' raw
lines: `collector.batchbytes`; kept exactly as long as their events), and

1. with the ISM plugin: moves each onto the hold policy ``{prefix}-legal-hold`` (one
   state, no actions, no transitions: ISM never deletes it) — done first, because
   ISM's remove/add update index settings, which step 2 then forbids;
2. always: sets ``index.blocks.read_only: true``. OpenSearch has no
   ``index.blocks.delete``; ``read_only`` (unlike ``read_only_allow_delete``) makes the
   delete-index API fail with ``cluster_block_exception`` for everyone, including ISM's
   ``delete`` action, until the block is lifted. Held indices take no new documents: a
   late event for a held month is dead-lettered with its original, not lost.
3. records the hold in ``{prefix}-holds`` (the current state, ``hold:<id>``, plus an
   append-only action document per place/release with who, when and why) and writes an
   alert of kind ``legal_hold`` to ``{prefix}-alerts``.

``hold release --id ID --reason TEXT`` lifts the block and puts the class policy back
(ISM restarts it from its first state; ``min_index_age`` counts from index creation, so
an index past its retention is then deleted by policy) — except on indices another
active hold still covers. Anyone allowed to change index settings can lift a block:
protection from people is the security plugin's roles (config/opensearch/security: only
the admin role may change settings or delete indices). A hold covers the indices that
exist when it is placed; place it again after a new index of the range appears.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.config import DEFAULT_REPLICAS
from collector.documents import iso_nanos
from collector.errors import HoldError, LifecycleError
from collector.gate import alerts_index
from collector.index import Requester, Response
from collector.lifecycle import (
    hold_policy,
    hold_policy_id,
    ism_on_every_node,
    policy_id,
    replica_settings,
)

_KW: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE: dict[str, Any] = {"type": "date_nanos"}
_MONTH_RE = re.compile(r"^\d{4}\.(0[1-9]|1[0-2])$")

HOLDS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "record": _KW,  # "hold" (current state) or "action" (append-only audit trail)
        "hold": {
            "properties": {
                "id": _KW,
                "class": _KW,
                "from": _KW,
                "to": _KW,
                "status": _KW,
                "reason": {"type": "text"},
                "placed_by": _KW,
                "placed_at": _DATE,
                "released_by": _KW,
                "released_at": _DATE,
                "release_reason": {"type": "text"},
                "indices": _KW,
            }
        },
        "action": {
            "properties": {
                "type": _KW,
                "actor": _KW,
                "opensearch_user": _KW,
                "reason": {"type": "text"},
                "indices": _KW,
                "ism": {"type": "boolean"},
            }
        },
    },
}


def holds_index(prefix: str) -> str:
    """Where holds and their audit trail are kept (no ISM policy: kept forever)."""
    return f"{prefix}-holds"


def check_month(value: str) -> str:
    """``YYYY.MM`` or a `ValueError` naming the expected form."""
    if not _MONTH_RE.match(value):
        raise ValueError(f"expected YYYY.MM, got {value!r}")
    return value


@dataclass
class Hold:
    """One legal hold as recorded in ``{prefix}-holds``."""

    id: str
    retention_class: str
    first: str
    last: str
    status: str
    reason: str
    placed_by: str
    placed_at: str
    indices: list[str] = field(default_factory=list)
    released_by: str = ""
    released_at: str = ""
    release_reason: str = ""

    def source(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "class": self.retention_class,
            "from": self.first,
            "to": self.last,
            "status": self.status,
            "reason": self.reason,
            "placed_by": self.placed_by,
            "placed_at": self.placed_at,
            "indices": self.indices,
        }
        if self.released_at:
            body.update(
                released_by=self.released_by,
                released_at=self.released_at,
                release_reason=self.release_reason,
            )
        return body

    @classmethod
    def from_source(cls, hold: Mapping[str, Any]) -> Hold:
        return cls(
            id=str(hold["id"]),
            retention_class=str(hold["class"]),
            first=str(hold["from"]),
            last=str(hold["to"]),
            status=str(hold["status"]),
            reason=str(hold.get("reason", "")),
            placed_by=str(hold.get("placed_by", "")),
            placed_at=str(hold.get("placed_at", "")),
            indices=list(hold.get("indices") or []),
            released_by=str(hold.get("released_by", "")),
            released_at=str(hold.get("released_at", "")),
            release_reason=str(hold.get("release_reason", "")),
        )


def _fail(what: str, response: Response) -> HoldError:
    detail = " ".join(json.dumps(response.body).split())[:500]
    return HoldError(f"{what}: HTTP {response.status}: {detail}")


class HoldManager:
    """Places, releases and lists legal holds (see the module doc)."""

    def __init__(
        self,
        request: Requester,
        *,
        prefix: str,
        classes: Sequence[str],
        clock_ns: Callable[[], int],
        replicas: int | str = DEFAULT_REPLICAS,
    ) -> None:
        self.request = request
        self.prefix = prefix
        self.classes = list(classes)
        self.clock_ns = clock_ns
        self.replicas = replicas  # of the holds index, should this create it

    # -- public ----------------------------------------------------------------------

    def place(self, retention_class: str, first: str, last: str, reason: str, actor: str) -> Hold:
        if retention_class not in self.classes:
            raise HoldError(
                f"unknown retention class {retention_class!r} (one of {', '.join(self.classes)})",
                usage=True,
            )
        try:
            check_month(first)
            check_month(last)
        except ValueError as exc:
            raise HoldError(str(exc), usage=True) from None
        if first > last:
            raise HoldError(f"--from {first} is after --to {last}", usage=True)
        if not reason.strip():
            raise HoldError("a hold needs a --reason", usage=True)
        self._ensure_index()
        now = self.clock_ns()
        indices = self.indices_in_range(retention_class, first, last)
        # what other active holds protect stays protected if this one must be undone
        already_held = {
            index for other in self.holds() if other.status == "active" for index in other.indices
        }
        ism = self.ism_available()
        if ism and indices:
            self._ensure_hold_policy()
            self._switch_policy(indices, hold_policy_id(self.prefix))
        if indices:
            self._set_read_only(indices, True)
        digest = hashlib.sha256(f"{retention_class}\0{first}\0{last}\0{now}".encode()).hexdigest()
        hold = Hold(
            id=f"{retention_class}-{first}-{last}-{digest[:8]}",
            retention_class=retention_class,
            first=first,
            last=last,
            status="active",
            reason=reason,
            placed_by=actor,
            placed_at=iso_nanos(now),
            indices=indices,
        )
        try:
            self._record(hold, "place", actor, reason, indices, ism, now)
        except HoldError as exc:
            # A hold that is not on record has no id to release it by: undo it.
            undo = [i for i in indices if i not in already_held]
            try:
                if undo:
                    self._set_read_only(undo, False)
                    if ism:
                        self._switch_policy(undo, policy_id(self.prefix, retention_class))
            except HoldError as undo_exc:
                raise HoldError(
                    f"{exc}; undoing it failed too ({undo_exc}): {', '.join(undo)} are still "
                    "read-only without a hold on record"
                ) from None
            raise HoldError(f"{exc}; the hold was undone, nothing is held") from None
        return hold

    def release(self, hold_id: str, reason: str, actor: str) -> tuple[Hold, list[str]]:
        """Release `hold_id`; return it and the indices actually freed."""
        if not reason.strip():
            raise HoldError("a release needs a --reason", usage=True)
        holds = {h.id: h for h in self.holds()}
        hold = holds.get(hold_id)
        if hold is None:
            raise HoldError(
                f"no hold {hold_id!r} (crm-audit-collector hold list shows them)", usage=True
            )
        if hold.status != "active":
            raise HoldError(f"hold {hold_id} is already {hold.status}", usage=True)
        still_held = {
            index
            for other in holds.values()
            if other.status == "active" and other.id != hold_id
            for index in other.indices
        }
        freed = [i for i in hold.indices if i not in still_held and self._exists(i)]
        ism = self.ism_available()
        if freed:
            self._set_read_only(freed, False)
            if ism:
                self._switch_policy(freed, policy_id(self.prefix, hold.retention_class))
        now = self.clock_ns()
        hold.status = "released"
        hold.released_by = actor
        hold.released_at = iso_nanos(now)
        hold.release_reason = reason
        self._record(hold, "release", actor, reason, freed, ism, now)
        return hold, freed

    def holds(self) -> list[Hold]:
        response = self.request(
            "POST",
            f"/{holds_index(self.prefix)}/_search",
            body={
                "size": 1000,
                "query": {"term": {"record": "hold"}},
                "sort": [{"hold.placed_at": "asc"}],
            },
            params={"ignore_unavailable": "true"},
        )
        if response.status != 200:
            raise _fail("cannot read holds", response)
        hits = response.body.get("hits", {}).get("hits", [])
        return [Hold.from_source(h["_source"]["hold"]) for h in hits]

    def indices_in_range(self, retention_class: str, first: str, last: str) -> list[str]:
        """The class's events indices whose period lies in the range, then their batches
        indices (`collector.batchbytes`): those hold the events' raw lines and must
        stay exactly as long as the events do."""
        return [
            *self._kind_in_range("events", retention_class, first, last),
            *self._kind_in_range("batches", retention_class, first, last),
        ]

    def _kind_in_range(self, kind: str, retention_class: str, first: str, last: str) -> list[str]:
        base = f"{self.prefix}-{kind}-{retention_class}-"
        response = self.request(
            "GET",
            f"/_cat/indices/{base}*",
            params={"format": "json", "h": "index", "expand_wildcards": "all"},
        )
        if response.status == 404:
            return []
        if response.status != 200 or not isinstance(response.body, list):
            raise _fail(f"cannot list indices {base}*", response)
        names = sorted(str(row.get("index")) for row in response.body if isinstance(row, Mapping))
        return [
            n for n in names if n.startswith(base) and first <= n[len(base) : len(base) + 7] <= last
        ]

    def ism_available(self) -> bool:
        try:
            return ism_on_every_node(self.request)
        except LifecycleError as exc:
            raise HoldError(str(exc)) from None

    def opensearch_user(self) -> str:
        """The authenticated OpenSearch user (security plugin), or ""."""
        response = self.request("GET", "/_plugins/_security/authinfo")
        if response.status == 200 and isinstance(response.body, Mapping):
            return str(response.body.get("user_name", ""))
        return ""

    # -- internals -------------------------------------------------------------------

    def _exists(self, index: str) -> bool:
        return self.request("HEAD", f"/{index}").status == 200

    def _ensure_index(self) -> None:
        index = holds_index(self.prefix)
        body = {
            "settings": {"index": {"number_of_shards": 1, **replica_settings(self.replicas)}},
            "mappings": HOLDS_MAPPING,
        }
        response = self.request("PUT", f"/{index}", body=body)
        if response.status == 200:
            return
        error = response.body.get("error", {}) if isinstance(response.body, Mapping) else {}
        if not (
            isinstance(error, Mapping) and error.get("type") == "resource_already_exists_exception"
        ):
            raise _fail(f"cannot create {index}", response)

    def _ensure_hold_policy(self) -> None:
        pid = hold_policy_id(self.prefix)
        if self.request("GET", f"/_plugins/_ism/policies/{pid}").status == 200:
            return
        response = self.request("PUT", f"/_plugins/_ism/policies/{pid}", body=hold_policy())
        if response.status not in (200, 201, 409):
            raise _fail(f"cannot create ISM policy {pid}", response)

    def _switch_policy(self, indices: Sequence[str], pid: str) -> None:
        target = ",".join(indices)
        removed = self.request("POST", f"/_plugins/_ism/remove/{target}")
        if removed.status not in (200, 404):
            raise _fail(f"cannot remove the ISM policy of {target}", removed)
        added = self.request("POST", f"/_plugins/_ism/add/{target}", body={"policy_id": pid})
        if added.status != 200:
            raise _fail(f"cannot put {target} on ISM policy {pid}", added)

    def _set_read_only(self, indices: Sequence[str], on: bool) -> None:
        target = ",".join(indices)
        response = self.request(
            "PUT",
            f"/{target}/_settings",
            body={"index.blocks.read_only": True if on else None},
        )
        if response.status != 200:
            raise _fail(
                f"cannot {'set' if on else 'lift'} the read-only block of {target}", response
            )

    def _record(
        self,
        hold: Hold,
        action: str,
        actor: str,
        reason: str,
        indices: Sequence[str],
        ism: bool,
        now: int,
    ) -> None:
        index = holds_index(self.prefix)
        who = self.opensearch_user()
        stamp = iso_nanos(now)
        audit = {
            "@timestamp": stamp,
            "record": "action",
            "hold": {
                "id": hold.id,
                "class": hold.retention_class,
                "from": hold.first,
                "to": hold.last,
            },
            "action": {
                "type": action,
                "actor": actor,
                "opensearch_user": who,
                "reason": reason,
                "indices": list(indices),
                "ism": ism,
            },
        }
        # The audit trail first, append-only (create): a failed state update leaves it.
        # 409: this very record is there already (the id is this hold's and action's):
        # a request that reached a node that then went away was resent to another.
        created = self.request(
            "PUT",
            f"/{index}/_create/action:{hold.id}:{action}",
            body=audit,
            params={"refresh": "true"},
        )
        if created.status not in (200, 201, 409):
            raise _fail(f"cannot record the {action} of hold {hold.id}", created)
        state = {"@timestamp": stamp, "record": "hold", "hold": hold.source()}
        saved = self.request(
            "PUT", f"/{index}/_doc/hold:{hold.id}", body=state, params={"refresh": "true"}
        )
        if saved.status not in (200, 201):
            raise _fail(f"cannot save hold {hold.id}", saved)
        alert = {
            "@timestamp": stamp,
            "alert": {
                "kind": "legal_hold",
                "reason": (
                    f"legal hold {hold.id} {action}d by {actor}"
                    f"{f' (OpenSearch user {who})' if who else ''}: class {hold.retention_class} "
                    f"{hold.first}..{hold.last}, {len(indices)} indices"
                    f"{' (ISM policy switched)' if ism else ''}; reason: {reason}"
                ),
            },
        }
        written = self.request(
            "PUT",
            f"/{alerts_index(self.prefix)}/_create/legal_hold:{hold.id}:{action}",
            body=alert,
            params={"refresh": "true"},
        )
        if written.status not in (200, 201, 409):
            raise _fail(f"cannot write the legal_hold alert of {hold.id}", written)
