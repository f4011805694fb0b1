"""Index templates and ISM retention policies, installed idempotently.

`LifecycleInstaller.install()` runs when the collector starts (and again before the
first batch if OpenSearch was not reachable then). It

1. puts the composable index templates ``{prefix}-events`` (pattern
   ``{prefix}-events-*``, strict mapping from `collector.documents`), ``{prefix}-batches``
   (``{prefix}-batches-*``, the per-batch event bytes of `collector.batchbytes`) and
   ``{prefix}-deadletter`` unless an identical one (same content hash in ``_meta``) is
   already there;
2. when the ISM plugin is installed, creates or updates (``if_seq_no`` /
   ``if_primary_term``) the policy ``{prefix}-{class}`` of every retention class, with an
   ``ism_template`` for ``{prefix}-events-{class}-*`` and ``{prefix}-batches-{class}-*``
   (a batches index holds its events index's raw lines: it goes when they go), and
   attaches it to that class's existing indices of both kinds (``ism_template`` only
   covers indices created after the policy);
   without ISM it logs one warning and goes on: the collector's retention job
   (`collector.retention_job`) then applies the same policy files by event time;
3. creates the single integrity indices (``{prefix}-seals``, ``-alerts``,
   ``-chainheads``, mappings in `collector.gate`) or adds new fields to them.
   They get no ISM policy: seals must outlive the longest event retention.

Replicas (``opensearch.replicas``): every index the collector creates gets the same
replica setting, by default ``auto_expand_replicas: 0-1`` (`replica_settings`), so a
cluster that loses a data node keeps every index, the chain heads included, available:
without a replica, the shards on a stopped node would stop every batch. A changed
template also brings the indices it already covers to its replica setting, and the
single indices are brought to it on every install.

With ``dry_run=True`` nothing is written: the report says what would be created or
updated (``crm-audit-collector setup --dry-run``).

Legal holds (`collector.hold`) put held indices on the policy ``{prefix}-legal-hold``
(one state, no actions); an updated class policy is moved onto the class's indices only
in the class policy's own states, so a held index stays on hold.

Everything goes through a `Requester`, so unit tests can check the request sequence.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.batchbytes import BATCHES_MAPPING, batches_index_pattern
from collector.config import DEFAULT_REPLICAS
from collector.documents import DEADLETTER_MAPPING, EVENTS_MAPPING
from collector.errors import LifecycleError
from collector.index import Requester, Response

log = logging.getLogger(__name__)

ISM_COMPONENT = "opensearch-index-management"
TEMPLATE_PRIORITY = 200
ISM_TEMPLATE_PRIORITY = 100
MANAGED_BY = "crm-audit-collector"

NO_ISM_WARNING = (
    "ISM plugin not installed on the cluster: ISM policies not installed; the collector's "
    "retention job applies them by event time (retention.enforcer auto or collector)"
)


def events_index_pattern(prefix: str, retention_class: str | None = None) -> str:
    """``{prefix}-events-*``, or one class's ``{prefix}-events-{class}-*``."""
    if retention_class is None:
        return f"{prefix}-events-*"
    return f"{prefix}-events-{retention_class}-*"


def deadletter_index(prefix: str) -> str:
    """The single dead-letter index for documents the events mapping refused."""
    return f"{prefix}-deadletter"


def policy_id(prefix: str, retention_class: str) -> str:
    """ISM policy id of a retention class."""
    return f"{prefix}-{retention_class}"


HOLD_STATE = "crm_audit_legal_hold"


def hold_policy_id(prefix: str) -> str:
    """ISM policy id of the legal-hold policy (no transitions, no delete)."""
    return f"{prefix}-legal-hold"


def hold_policy() -> dict[str, Any]:
    """The legal-hold ISM policy: one state, no actions, no transitions, no ism_template."""
    return {
        "policy": {
            "description": (
                "crm-audit legal hold: the index stays as it is (no rollover, no delete) "
                "until the hold is released (crm-audit-collector hold release)"
            ),
            "default_state": HOLD_STATE,
            "states": [{"name": HOLD_STATE, "actions": [], "transitions": []}],
        }
    }


def replica_settings(replicas: int | str) -> dict[str, Any]:
    """Index settings for `replicas`: a fixed number (auto-expansion off, so it also
    replaces a range set before) or a range "MIN-MAX" / "MIN-all" OpenSearch fits to
    the number of data nodes."""
    if isinstance(replicas, int):
        return {"number_of_replicas": replicas, "auto_expand_replicas": "false"}
    return {"auto_expand_replicas": replicas}


def _settings(shards: int, replicas: int | str) -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": shards,
            **replica_settings(replicas),
            "codec": "best_compression",
        }
    }


def _with_hash(template: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    template["_meta"] = {"managed_by": MANAGED_BY, "content_sha256": digest}
    return template


def _template(
    pattern: str, mapping: Mapping[str, Any], shards: int, replicas: int | str
) -> dict[str, Any]:
    """A composable template body of ours: `pattern`, the shared settings, `mapping`."""
    return _with_hash(
        {
            "index_patterns": [pattern],
            "priority": TEMPLATE_PRIORITY,
            "template": {
                "settings": _settings(shards, replicas),
                "mappings": copy.deepcopy(dict(mapping)),
            },
        }
    )


def events_template(
    prefix: str, *, shards: int = 1, replicas: int | str = DEFAULT_REPLICAS
) -> dict[str, Any]:
    """Composable template body for ``{prefix}-events-*``."""
    return _template(events_index_pattern(prefix), EVENTS_MAPPING, shards, replicas)


def batches_template(
    prefix: str, *, shards: int = 1, replicas: int | str = DEFAULT_REPLICAS
) -> dict[str, Any]:
    """Composable template body for ``{prefix}-batches-*`` (`collector.batchbytes`).

    The same settings as the events template: a batches index lives exactly as long as
    its events index, on the same nodes' disks, so it is cut, replicated and compressed
    the same way.
    """
    return _template(batches_index_pattern(prefix), BATCHES_MAPPING, shards, replicas)


def deadletter_template(
    prefix: str, *, shards: int = 1, replicas: int | str = DEFAULT_REPLICAS
) -> dict[str, Any]:
    """Composable template body for the dead-letter index."""
    return _template(f"{deadletter_index(prefix)}*", DEADLETTER_MAPPING, shards, replicas)


def render_policy(
    policy_file: Mapping[str, Any], prefix: str, retention_class: str
) -> dict[str, Any]:
    """The policy file's body with the ``ism_template`` of its class put in: the class's
    events indices and their batches indices, so a batch's bytes go when its events go."""
    body = copy.deepcopy(dict(policy_file))
    policy = body["policy"]
    policy["ism_template"] = [
        {
            "index_patterns": class_index_patterns(prefix, retention_class),
            "priority": ISM_TEMPLATE_PRIORITY,
        }
    ]
    return body


def class_index_patterns(prefix: str, retention_class: str) -> list[str]:
    """The index patterns a class's retention policy governs: its events indices and the
    batches indices holding their events' bytes (personal data: deleted with them)."""
    return [
        events_index_pattern(prefix, retention_class),
        batches_index_pattern(prefix, retention_class),
    ]


def is_subset(wanted: Any, present: Any) -> bool:
    """True when `present` holds everything of `wanted` (ISM adds defaults of its own)."""
    if isinstance(wanted, Mapping):
        return isinstance(present, Mapping) and all(
            key in present and is_subset(value, present[key]) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(present, list)
            and len(wanted) == len(present)
            and all(is_subset(w, p) for w, p in zip(wanted, present, strict=True))
        )
    return bool(wanted == present)


@dataclass
class LifecycleReport:
    """What `install` did: per template / policy one of created|updated|unchanged."""

    templates: dict[str, str] = field(default_factory=dict)
    indices: dict[str, str] = field(default_factory=dict)
    ism_available: bool = False
    policies: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """Human-readable, one line per item: ``template crm-audit-events: unchanged``."""
        verb = {"created": "would be created", "updated": "would be updated"}
        out: list[str] = []
        for kind, items in (
            ("template", self.templates),
            ("index", self.indices),
            ("policy", self.policies),
        ):
            for name, state in sorted(items.items()):
                out.append(f"{kind} {name}: {verb.get(state, state) if self.dry_run else state}")
        if not self.ism_available:
            out.append(f"ISM: not installed on the cluster ({NO_ISM_WARNING})")
        return out

    @property
    def changed(self) -> bool:
        states = [*self.templates.values(), *self.indices.values(), *self.policies.values()]
        return any(state != "unchanged" for state in states)


def _fail(what: str, response: Response) -> LifecycleError:
    detail = " ".join(json.dumps(response.body).split())[:500]
    return LifecycleError(f"{what}: HTTP {response.status}: {detail}")


# Node ids and plugin names only. Unlike _cat/plugins this needs no right to read the
# cluster state (cluster:monitor/state), which the writer role would otherwise hold.
NODES_PLUGINS_PATH = "/_nodes/plugins"
_NODES_PLUGINS_FILTER = "nodes.*.name,nodes.*.plugins.name"


def ism_on_every_node(request: Requester) -> bool:
    """Whether every node of the cluster runs the index-management (ISM) plugin."""
    response = request("GET", NODES_PLUGINS_PATH, params={"filter_path": _NODES_PLUGINS_FILTER})
    nodes = response.body.get("nodes") if isinstance(response.body, Mapping) else None
    if response.status != 200 or not isinstance(nodes, Mapping):
        raise _fail("cannot list the nodes' plugins", response)
    installed = [
        {str(p.get("name")) for p in node.get("plugins", []) if isinstance(p, Mapping)}
        for node in nodes.values()
        if isinstance(node, Mapping)
    ]
    return bool(installed) and all(ISM_COMPONENT in names for names in installed)


class LifecycleInstaller:
    """Installs templates and retention policies for one index prefix."""

    def __init__(
        self,
        request: Requester,
        *,
        prefix: str,
        policies: Mapping[str, Mapping[str, Any]],
        shards: int = 1,
        replicas: int | str = DEFAULT_REPLICAS,
        indices: Mapping[str, Mapping[str, Any]] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.request = request
        self.dry_run = dry_run
        self.prefix = prefix
        self.policies = dict(policies)
        # Single indices (not time-cut) created with their mapping: seals, alerts, heads.
        self.indices = dict(indices or {})
        self.shards = shards
        self.replicas = replicas
        self._warned_no_ism = False

    def install(self) -> LifecycleReport:
        """Install everything; raise `LifecycleError` if OpenSearch refuses or is away."""
        report = LifecycleReport(dry_run=self.dry_run)
        for name, body in (
            (
                f"{self.prefix}-events",
                events_template(self.prefix, shards=self.shards, replicas=self.replicas),
            ),
            (
                f"{self.prefix}-batches",
                batches_template(self.prefix, shards=self.shards, replicas=self.replicas),
            ),
            (
                f"{self.prefix}-deadletter",
                deadletter_template(self.prefix, shards=self.shards, replicas=self.replicas),
            ),
        ):
            report.templates[name] = self._put_template(name, body)
        for index, mapping in sorted(self.indices.items()):
            report.indices[index] = self._put_index(index, mapping)
        report.ism_available = self.ism_available()
        if not report.ism_available:
            if not self._warned_no_ism:
                log.warning(NO_ISM_WARNING)
                self._warned_no_ism = True
            return report
        for retention_class, policy_file in sorted(self.policies.items()):
            pid = policy_id(self.prefix, retention_class)
            wanted = render_policy(policy_file, self.prefix, retention_class)
            report.policies[pid] = self._put_policy(pid, wanted)
            if not self.dry_run:
                states = [str(s.get("name")) for s in wanted["policy"].get("states", [])]
                self._attach(
                    pid, retention_class, changed=report.policies[pid] == "updated", states=states
                )
        hold_id = hold_policy_id(self.prefix)
        report.policies[hold_id] = self._put_policy(hold_id, hold_policy())
        return report

    def ism_available(self) -> bool:
        """Whether every node runs the index-management (ISM) plugin."""
        return ism_on_every_node(self.request)

    # -- templates -------------------------------------------------------------------

    def _put_template(self, name: str, body: dict[str, Any]) -> str:
        path = f"/_index_template/{name}"
        current = self.request("GET", path)
        state = "created"
        if current.status == 200:
            found = (
                current.body.get("index_templates", []) if isinstance(current.body, Mapping) else []
            )
            meta = found[0].get("index_template", {}).get("_meta", {}) if found else {}
            if meta.get("content_sha256") == body["_meta"]["content_sha256"]:
                return "unchanged"
            state = "updated"
        elif current.status != 404:
            raise _fail(f"cannot read index template {name}", current)
        if self.dry_run:
            return state
        response = self.request("PUT", path, body=body)
        if response.status != 200:
            raise _fail(f"cannot install index template {name}", response)
        log.info("index template %s %s (pattern %s)", name, state, body["index_patterns"][0])
        pattern = body["index_patterns"][0]
        self._update_existing_indices(pattern, "_mapping", body["template"]["mappings"])
        self._update_existing_indices(pattern, "_settings", self._replica_update())
        return state

    def _replica_update(self) -> dict[str, Any]:
        return {"index": replica_settings(self.replicas)}

    def _update_existing_indices(self, pattern: str, what: str, body: Mapping[str, Any]) -> None:
        """Give indices created under an older template what the new one sets: the
        fields it adds (`what` ``_mapping``) and its replica setting (``_settings``).

        A template only applies to indices created after it; without this, documents with
        a new field would be refused by the strict mapping of the current month's index
        (and dead-lettered) until the next index is created, and the indices of a cluster
        that grew to two data nodes would stay without a replica.
        """
        response = self.request(
            "PUT",
            f"/{pattern}/{what}",
            body=copy.deepcopy(dict(body)),
            # a closed index takes new fields, but not every settings change
            params={"expand_wildcards": "open,closed" if what == "_mapping" else "open"},
        )
        if response.status == 404:  # no index of that pattern yet
            return
        if response.status == 403 and "cluster_block_exception" in json.dumps(response.body):
            self._update_unblocked(pattern, what, body)
            return
        if response.status != 200:
            raise _fail(f"cannot bring existing indices {pattern} to the new {what}", response)
        log.info("existing indices %s updated to the template's %s", pattern, what.lstrip("_"))

    def _update_unblocked(self, pattern: str, what: str, body: Mapping[str, Any]) -> None:
        """Index by index: a read-only (legal hold) index keeps its mapping and settings.

        A held index is read-only (collector.hold), so it takes no new fields, and no new
        documents either: a late event for it is dead-lettered, with its original.
        """
        listed = self.request("GET", f"/_cat/indices/{pattern}", params={"format": "json"})
        if listed.status != 200 or not isinstance(listed.body, list):
            raise _fail(f"cannot list indices {pattern}", listed)
        for row in listed.body:
            index = str(row.get("index")) if isinstance(row, Mapping) else ""
            if not index:
                continue
            response = self.request("PUT", f"/{index}/{what}", body=copy.deepcopy(dict(body)))
            if response.status == 403 and "cluster_block_exception" in json.dumps(response.body):
                log.info("index %s is read-only (legal hold?): keeps its %s", index, what)
            elif response.status != 200:
                raise _fail(f"cannot bring {index} to the new {what}", response)

    def _put_index(self, index: str, mapping: Mapping[str, Any]) -> str:
        """Create `index` with `mapping`, or add new fields to an existing one."""
        if self.dry_run:
            exists = self.request("HEAD", f"/{index}")
            if exists.status == 200:
                return "updated" if self._replicas_differ(index) else "unchanged"
            if exists.status == 404:
                return "created"
            # e.g. 403: saying "would be created" would hide that this user cannot look
            raise _fail(f"cannot check index {index}", exists)
        body = {
            "settings": _settings(self.shards, self.replicas),
            "mappings": copy.deepcopy(dict(mapping)),
        }
        created = self.request("PUT", f"/{index}", body=body)
        if created.status == 200:
            log.info("index %s created", index)
            return "created"
        error = created.body.get("error", {}) if isinstance(created.body, Mapping) else {}
        if (
            created.status != 400
            or not isinstance(error, Mapping)
            or (error.get("type") != "resource_already_exists_exception")
        ):
            raise _fail(f"cannot create index {index}", created)
        updated = self.request("PUT", f"/{index}/_mapping", body=copy.deepcopy(dict(mapping)))
        if updated.status != 200:
            raise _fail(f"cannot update the mapping of {index}", updated)
        # an index created before the replica setting (or before it changed) gets it now
        if not self._replicas_differ(index):
            return "unchanged"
        settings = self.request("PUT", f"/{index}/_settings", body=self._replica_update())
        if settings.status != 200:
            raise _fail(f"cannot update the replica setting of {index}", settings)
        log.info("index %s: replicas set to %s", index, self.replicas)
        return "updated"

    def _replicas_differ(self, index: str) -> bool:
        """Whether `index`'s replica settings are not (yet) what `replicas` asks for."""
        response = self.request(
            "GET",
            f"/{index}/_settings",
            params={
                "include_defaults": "true",
                "filter_path": "*.settings.index.number_of_replicas,"
                "*.settings.index.auto_expand_replicas,*.defaults.index.auto_expand_replicas",
            },
        )
        if response.status != 200 or not isinstance(response.body, Mapping):
            raise _fail(f"cannot read the settings of {index}", response)
        found: Any = next(iter(response.body.values()), {})
        if not isinstance(found, Mapping):
            found = {}
        current = found.get("settings", {}).get("index", {})
        default = found.get("defaults", {}).get("index", {}).get("auto_expand_replicas", "false")
        auto = str(current.get("auto_expand_replicas", default))
        wanted = replica_settings(self.replicas)
        if auto != str(wanted["auto_expand_replicas"]):
            return True
        return "number_of_replicas" in wanted and str(current.get("number_of_replicas")) != str(
            wanted["number_of_replicas"]
        )

    # -- ISM -------------------------------------------------------------------------

    def _put_policy(self, pid: str, wanted: dict[str, Any]) -> str:
        path = f"/_plugins/_ism/policies/{pid}"
        for _ in range(3):  # another collector may be writing the same policy
            current = self.request("GET", path)
            if current.status == 404:
                if self.dry_run:
                    return "created"
                response = self.request("PUT", path, body=wanted)
                if response.status == 409:
                    continue
                if response.status not in (200, 201):
                    raise _fail(f"cannot create ISM policy {pid}", response)
                log.info("ISM policy %s created", pid)
                return "created"
            if current.status != 200 or not isinstance(current.body, Mapping):
                raise _fail(f"cannot read ISM policy {pid}", current)
            if is_subset(wanted["policy"], current.body.get("policy")):
                return "unchanged"
            if self.dry_run:
                return "updated"
            response = self.request(
                "PUT",
                path,
                body=wanted,
                params={
                    "if_seq_no": str(current.body.get("_seq_no")),
                    "if_primary_term": str(current.body.get("_primary_term")),
                },
            )
            if response.status == 409:
                continue
            if response.status not in (200, 201):
                raise _fail(f"cannot update ISM policy {pid}", response)
            log.info("ISM policy %s updated", pid)
            return "updated"
        raise LifecycleError(f"ISM policy {pid}: concurrent updates, gave up after 3 tries")

    def _attach(self, pid: str, retention_class: str, *, changed: bool, states: list[str]) -> None:
        """Put the class's existing events and batches indices on its policy."""
        for pattern in class_index_patterns(self.prefix, retention_class):
            self._attach_pattern(pid, pattern, changed=changed, states=states)

    def _attach_pattern(self, pid: str, pattern: str, *, changed: bool, states: list[str]) -> None:
        body = {"policy_id": pid}
        added = self.request("POST", f"/_plugins/_ism/add/{pattern}", body=body)
        if added.status == 404:
            return  # no index of this class yet: ism_template covers future ones
        if added.status != 200:
            raise _fail(f"cannot attach ISM policy {pid} to {pattern}", added)
        count = added.body.get("updated_indices", 0) if isinstance(added.body, Mapping) else 0
        if count:
            log.info("ISM policy %s attached to %d existing indices of %s", pid, count, pattern)
        if changed:
            # Managed indices keep the policy version they started with until told. Only
            # those in the class policy's own states: held indices stay on the hold policy.
            moved = self.request(
                "POST",
                f"/_plugins/_ism/change_policy/{pattern}",
                body={**body, "include": [{"state": state} for state in states]},
            )
            if moved.status not in (200, 404):
                raise _fail(f"cannot move {pattern} to the updated policy {pid}", moved)
