"""The OpenSearch side of detection: queries for windowed rules, alert reads and writes.

Windowed rules run in two steps, so that the cluster does the heavy lifting:

1. a ``composite`` aggregation over the rule's events in the range, per key, with the
   sub-aggregation the rule's threshold is about (count, cardinality, sum, filters)
   — keys that cannot reach the threshold even over the whole range are dropped here;
2. the events of the remaining keys, sorted by time (only the fields rules read), for
   the exact sliding-window evaluation in `collector.detect.windowed`.

No scripts are used (the cluster may have no painless).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from collector.detect.alerts import Alert, Event, key_of, mapping_for_alerts
from collector.detect.conditions import matches, query_clauses
from collector.detect.errors import DetectionError
from collector.detect.fields import lookup, term
from collector.detect.rules import GENERIC_KINDS, Rule
from collector.detect.windowed import Prior, network_of
from collector.documents import iso_nanos, parse_iso_nanos
from collector.index import Requester, Response

log = logging.getLogger(__name__)

PAGE = 1000
MAX_EVENTS = 50_000
_SEARCH_PARAMS = {"ignore_unavailable": "true", "allow_no_indices": "true"}
# Big fields no rule reads.
_EXCLUDES = ["integrity.canonical", "event.original", "message"]


def events_pattern(prefix: str) -> str:
    return f"{prefix}-events-*"


def alerts_index(prefix: str) -> str:
    return f"{prefix}-alerts"


def _check(response: Response, what: str) -> Any:
    if response.status != 200:
        text = json.dumps(response.body)[:300] if response.body is not None else ""
        raise DetectionError(f"{what}: HTTP {response.status} {text}")
    return response.body


def _range(gte: int, lte: int) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": iso_nanos(gte), "lte": iso_nanos(lte)}}}


def _nested_fields(fields: Sequence[str]) -> dict[str, Any]:
    return {
        "nested": {"path": "crm.changes", "query": {"terms": {"crm.changes.field": list(fields)}}}
    }


def rule_filter(rule: Rule) -> list[dict[str, Any]]:
    """Query clauses selecting the events `rule` reads (no time range)."""
    actions = {"terms": {"event.action": rule.action_list}}
    kind = rule.kind
    clauses: list[dict[str, Any]]
    if kind in ("failed_login_burst", "failed_login_distinct_ips", "password_spray"):
        clauses = [actions, {"term": {"event.outcome": "failure"}}]
    elif kind == "success_after_failures":
        clauses = [actions, {"terms": {"event.outcome": ["failure", "success"]}}]
    elif kind == "export_volume":
        clauses = [actions, {"exists": {"field": "crm.record_count"}}]
    elif kind == "rapid_customer_changes":
        clauses = [actions, _nested_fields(rule.field_list)]
        if rule.object_types:
            clauses.append({"terms": {"crm.object.type": rule.object_types}})
    elif kind == "bank_change_then_export":
        change: dict[str, Any] = {"bool": {"filter": [_nested_fields(rule.field_list)]}}
        if rule.object_types:
            change["bool"]["filter"].append({"terms": {"crm.object.type": rule.object_types}})
        clauses = [{"bool": {"should": [actions, change], "minimum_should_match": 1}}]
    elif kind == "new_network":
        clauses = [
            actions,
            {"term": {"event.outcome": "success"}},
            {"exists": {"field": "source.ip"}},
        ]
    elif kind in GENERIC_KINDS:
        clauses = query_clauses(rule.conditions)[0]
    else:  # inline kinds, read through `fetch_range`
        clauses = [actions]
    for name in rule.key_fields:
        clauses.append({"exists": {"field": name}})
    return clauses


def _allow_clauses(rule: Rule) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if rule.allow.users:
        out.append({"terms": {"user.name": rule.allow.users}})
    for net in rule.allow.ips:
        out.append({"term": {"source.ip": net}})
    return out


def rule_exclusions(rule: Rule) -> list[dict[str, Any]]:
    """``must_not`` clauses of `rule`: its allow-list and negated conditions."""
    negated = query_clauses(rule.conditions)[1] if rule.kind in GENERIC_KINDS else []
    return [*_allow_clauses(rule), *negated]


def rule_query(rule: Rule, extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The events `rule` reads, with `extra` filter clauses (a time range, keys)."""
    return {"bool": {"filter": [*rule_filter(rule), *extra], "must_not": rule_exclusions(rule)}}


def _query(rule: Rule, gte: int, lte: int, extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return rule_query(rule, [_range(gte, lte), *extra])


def _ingested(gt: int, lte: int) -> dict[str, Any]:
    return {"range": {"event.ingested": {"gt": iso_nanos(gt), "lte": iso_nanos(lte)}}}


def _sum_prunes(rule: Rule) -> bool:
    # A sum over the whole range bounds every window's sum only for values >= 0.
    info = lookup(str(rule.field))
    return info is not None and info.type == "unsigned_long" and info.nested is None


def _sub_aggs(rule: Rule) -> dict[str, Any]:
    if rule.kind == "threshold":
        info = lookup(str(rule.field)) if rule.field else None
        if info is None or info.nested is not None:
            return {}
        if rule.aggregation == "sum" and _sum_prunes(rule):
            return {"m": {"sum": {"field": info.name}}}
        if rule.aggregation == "distinct_count":
            return {"m": {"cardinality": {"field": info.name, "precision_threshold": 40000}}}
        return {}
    if rule.kind == "failed_login_distinct_ips":
        return {"m": {"cardinality": {"field": "source.ip"}}}
    if rule.kind == "password_spray":
        return {"m": {"cardinality": {"field": "user.name"}}}
    if rule.kind == "export_volume":
        return {"m": {"sum": {"field": "crm.record_count"}}}
    if rule.kind == "success_after_failures":
        return {
            "f": {"filter": {"term": {"event.outcome": "failure"}}},
            "s": {"filter": {"term": {"event.outcome": "success"}}},
        }
    if rule.kind == "bank_change_then_export":
        return {
            "f": {"filter": _nested_fields(rule.field_list)},
            "s": {"filter": {"terms": {"event.action": rule.action_list}}},
        }
    return {}


def _promising(rule: Rule, bucket: Mapping[str, Any]) -> bool:
    count = float(bucket.get("doc_count", 0))
    if rule.kind == "threshold":
        if rule.aggregation == "count":
            return count >= rule.limit
        if "m" in bucket:
            return float(bucket["m"].get("value") or 0) >= rule.limit
        return count > 0
    if rule.kind in ("failed_login_burst", "rapid_customer_changes"):
        return count >= rule.limit
    if rule.kind in ("failed_login_distinct_ips", "password_spray", "export_volume"):
        return float(bucket.get("m", {}).get("value") or 0) >= rule.limit
    if rule.kind == "success_after_failures":
        return bool(bucket["f"]["doc_count"] >= rule.limit and bucket["s"]["doc_count"] > 0)
    if rule.kind == "bank_change_then_export":
        return bool(bucket["f"]["doc_count"] > 0 and bucket["s"]["doc_count"] > 0)
    return count > 0


class Searcher:
    """Reads events and alerts of one index prefix; writes alerts."""

    def __init__(self, request: Requester, prefix: str) -> None:
        self.request = request
        self.prefix = prefix

    # -- events ------------------------------------------------------------------

    def candidates(self, rule: Rule, gte: int, lte: int) -> list[str]:
        """Keys that may reach the rule's threshold in [gte, lte] (step 1)."""
        sources = [{name: {"terms": {"field": name}}} for name in rule.key_fields]
        keys: list[str] = []
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": PAGE, "sources": sources}
            if after:
                composite["after"] = after
            agg: dict[str, Any] = {"composite": composite}
            subs = _sub_aggs(rule)
            if subs:
                agg["aggs"] = subs
            body = {"size": 0, "query": _query(rule, gte, lte), "aggs": {"k": agg}}
            result = _check(
                self.request(
                    "POST",
                    f"/{events_pattern(self.prefix)}/_search",
                    body=body,
                    params=_SEARCH_PARAMS,
                ),
                f"rule {rule.id}: candidate aggregation",
            )
            agg_result = (result.get("aggregations") or {}).get("k") or {}
            buckets = agg_result.get("buckets", [])
            for bucket in buckets:
                if _promising(rule, bucket):
                    keys.append("|".join(str(bucket["key"][n]) for n in rule.key_fields))
            after = agg_result.get("after_key")
            if not buckets or not after or len(buckets) < PAGE:
                return keys

    def _fetch(self, index: str, query: dict[str, Any], limit: int = MAX_EVENTS) -> list[Event]:
        out: list[Event] = []
        search_after: list[Any] | None = None
        sort = [
            {"@timestamp": "asc"},
            {"agent.id": {"order": "asc", "unmapped_type": "keyword"}},
            {"event.sequence": {"order": "asc", "unmapped_type": "long"}},
        ]
        while len(out) < limit:
            body: dict[str, Any] = {
                "size": min(PAGE, limit - len(out)),
                "query": query,
                "sort": sort,
                "_source": {"excludes": _EXCLUDES},
            }
            if search_after is not None:
                body["search_after"] = search_after
            result = _check(
                self.request("POST", f"/{index}/_search", body=body, params=_SEARCH_PARAMS),
                f"search {index}",
            )
            hits = result.get("hits", {}).get("hits", [])
            for hit in hits:
                out.append(Event.from_source(hit["_id"], hit["_source"]))
            if len(hits) < body["size"]:
                break
            search_after = hits[-1]["sort"]
        if len(out) >= limit:
            log.warning("search %s: stopped at %d events", index, limit)
        return out

    def _key_clause(self, rule: Rule, keys: Sequence[str]) -> dict[str, Any]:
        # Keys of case-insensitive fields are lower case (`key_of`) while documents keep
        # the case they were written in: such fields are matched case-insensitively.
        if len(rule.key_fields) == 1 and not _any_case_insensitive(rule.key_fields):
            return {"terms": {rule.key_fields[0]: list(keys)}}
        return {
            "bool": {
                "should": [
                    {"bool": {"filter": [
                        term(f, v)
                        for f, v in zip(rule.key_fields, key.split("|"), strict=False)
                    ]}}
                    for key in keys
                ],
                "minimum_should_match": 1,
            }
        }  # fmt: skip

    def events_by_key(
        self, rule: Rule, keys: Sequence[str], gte: int, lte: int
    ) -> dict[str, list[Event]]:
        """The rule's events of `keys` in [gte, lte], per key, in time order (step 2)."""
        grouped: dict[str, list[Event]] = defaultdict(list)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = _query(rule, gte, lte, [self._key_clause(rule, chunk)])
            for event in self._fetch(events_pattern(self.prefix), query):
                key = key_of(event, rule.key_fields)
                if key is None or rule.allow.allows_event(event):
                    continue
                # What the query could not decide (not_equal_field, one change entry).
                if rule.kind in GENERIC_KINDS and not matches(rule.conditions, event.doc):
                    continue
                grouped[key].append(event)
        return dict(grouped)

    def ingested_spans(self, rule: Rule, gt: int, lte: int) -> dict[str, tuple[int, int]]:
        """Per key, the earliest and latest own time (ns) of the rule's events that
        reached the collector in (gt, lte] (``event.ingested``): what changed since the
        last evaluation, wherever in time it belongs."""
        sources = [{name: {"terms": {"field": name}}} for name in rule.key_fields]
        spans: dict[str, tuple[int, int]] = {}
        after: dict[str, Any] | None = None
        query = rule_query(rule, [_ingested(gt, lte)])
        while True:
            composite: dict[str, Any] = {"size": PAGE, "sources": sources}
            if after:
                composite["after"] = after
            agg = {
                "composite": composite,
                "aggs": {
                    "first": {"min": {"field": "@timestamp"}},
                    "last": {"max": {"field": "@timestamp"}},
                },
            }
            result = _check(
                self.request(
                    "POST",
                    f"/{events_pattern(self.prefix)}/_search",
                    body={"size": 0, "query": query, "aggs": {"k": agg}},
                    params=_SEARCH_PARAMS,
                ),
                f"rule {rule.id}: events received since the last evaluation",
            )
            agg_result = (result.get("aggregations") or {}).get("k") or {}
            buckets = agg_result.get("buckets", [])
            for bucket in buckets:
                key = "|".join(str(bucket["key"][n]) for n in rule.key_fields)
                # min/max of a date come back in milliseconds: widen to whole ms
                first = int(float(bucket["first"]["value"])) * 1_000_000
                last = (int(float(bucket["last"]["value"])) + 1) * 1_000_000 - 1
                spans[key] = (first, last)
            after = agg_result.get("after_key")
            if not buckets or not after or len(buckets) < PAGE:
                return spans

    def fetch_range(self, rules: Sequence[Rule], gte: int, lte: int) -> list[Event]:
        """Every event one of the (per-event) `rules` reads in [gte, lte]."""
        either = [rule_query(rule) for rule in rules]
        query = {
            "bool": {
                "filter": [_range(gte, lte)],
                "should": either,
                "minimum_should_match": 1,
            }
        }
        return self._fetch(events_pattern(self.prefix), query)

    def presence(self, fields: Sequence[str], actions: Sequence[str], gte: int) -> dict[str, int]:
        """How many events since `gte` have each field (``field:NAME``) and each
        ``event.action`` (``action:NAME``); for `crm-audit rules check --opensearch`."""
        filters: dict[str, Any] = {}
        for name in fields:
            info = lookup(name)
            clause: dict[str, Any] = {"exists": {"field": name}}
            if info is not None and info.nested is not None:
                clause = {"nested": {"path": info.nested, "query": clause}}
            filters[f"field:{name}"] = clause
        for action in actions:
            filters[f"action:{action}"] = {"term": {"event.action": action}}
        if not filters:
            return {}
        body = {
            "size": 0,
            "query": {"range": {"@timestamp": {"gte": iso_nanos(gte)}}},
            "aggs": {"p": {"filters": {"filters": filters}}},
        }
        result = _check(
            self.request(
                "POST", f"/{events_pattern(self.prefix)}/_search", body=body, params=_SEARCH_PARAMS
            ),
            "field and action presence",
        )
        buckets = ((result.get("aggregations") or {}).get("p") or {}).get("buckets", {})
        return {name: int(buckets.get(name, {}).get("doc_count", 0)) for name in filters}

    def login_history(
        self, rule: Rule, keys: Sequence[str], gte: int, lt: int
    ) -> dict[str, tuple[int, set[str]]]:
        """Per key: successful logins in [gte, lt) and their networks (new_network)."""
        history: dict[str, tuple[int, set[str]]] = {}
        if not keys or lt <= gte:
            return history
        field = rule.key_fields[0]
        sources = [{"k": {"terms": {"field": field}}}, {"ip": {"terms": {"field": "source.ip"}}}]
        query = _query(rule, gte, lt - 1, [{"terms": {field: list(keys)}}])
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": PAGE, "sources": sources}
            if after:
                composite["after"] = after
            body = {"size": 0, "query": query, "aggs": {"h": {"composite": composite}}}
            result = _check(
                self.request(
                    "POST",
                    f"/{events_pattern(self.prefix)}/_search",
                    body=body,
                    params=_SEARCH_PARAMS,
                ),
                f"rule {rule.id}: login history",
            )
            agg = (result.get("aggregations") or {}).get("h") or {}
            buckets = agg.get("buckets", [])
            for bucket in buckets:
                key = str(bucket["key"]["k"])
                count, nets = history.get(key, (0, set()))
                net = network_of(str(bucket["key"]["ip"]), rule)
                if net:
                    nets.add(net)
                history[key] = (count + int(bucket["doc_count"]), nets)
            after = agg.get("after_key")
            if not buckets or not after or len(buckets) < PAGE:
                return history

    # -- alerts ------------------------------------------------------------------

    def integrity_alerts(self, gte: int, lte: int) -> list[tuple[str, dict[str, Any]]]:
        """Alerts `collector.gate` wrote in [gte, lte] (no rule id), oldest first."""
        body = {
            "size": 10_000,
            "query": {
                "bool": {
                    "filter": [_range(gte, lte), {"exists": {"field": "alert.kind"}}],
                    "must_not": [
                        {"exists": {"field": "alert.rule.id"}},
                        {"terms": {"alert.kind": ["detection", "response"]}},
                    ],
                }
            },
            "sort": [{"@timestamp": "asc"}],
        }
        result = _check(
            self.request(
                "POST", f"/{alerts_index(self.prefix)}/_search", body=body, params=_SEARCH_PARAMS
            ),
            "integrity alerts",
        )
        return [(h["_id"], h["_source"]) for h in result.get("hits", {}).get("hits", [])]

    def alert_history(
        self, rule_id: str, keys: Sequence[str], gte: int, lte: int
    ) -> dict[str, list[Prior]]:
        """Per key, the rule's alerts triggered in [gte, lte] (first and trigger times)."""
        out: dict[str, list[Prior]] = defaultdict(list)
        for start in range(0, len(keys), 1000):
            chunk = list(keys[start : start + 1000])
            search_after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {
                    "size": PAGE,
                    "query": {
                        "bool": {
                            "filter": [
                                {"term": {"alert.rule.id": rule_id}},
                                {"term": {"alert.kind": "detection"}},
                                {"terms": {"alert.key": chunk}},
                                {
                                    "range": {
                                        "alert.window.end": {
                                            "gte": iso_nanos(max(gte, 0)),
                                            "lte": iso_nanos(max(lte, 0)),
                                        }
                                    }
                                },
                            ]
                        }
                    },
                    # equal (end, start) pairs are equal priors: ties lost at a page
                    # boundary change nothing
                    "sort": [
                        {"alert.window.end": {"order": "asc", "unmapped_type": "date_nanos"}},
                        {"alert.window.start": {"order": "asc", "unmapped_type": "date_nanos"}},
                    ],
                    "_source": ["alert.key", "alert.window"],
                }
                if search_after is not None:
                    body["search_after"] = search_after
                result = _check(
                    self.request(
                        "POST",
                        f"/{alerts_index(self.prefix)}/_search",
                        body=body,
                        params=_SEARCH_PARAMS,
                    ),
                    f"rule {rule_id}: earlier alerts",
                )
                hits = result.get("hits", {}).get("hits", [])
                for hit in hits:
                    alert = hit["_source"]["alert"]
                    window = alert.get("window", {})
                    trigger = parse_iso_nanos(str(window["end"]))
                    first = parse_iso_nanos(str(window.get("start", window["end"])))
                    out[str(alert["key"])].append(Prior(trigger, first))
                if len(hits) < PAGE:
                    break
                search_after = hits[-1]["sort"]
        return dict(out)

    def write_alerts(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> list[bool]:
        """Create alert documents; per document True when created, False when it existed."""
        if not docs:
            return []
        lines = []
        for doc_id, source in docs:
            lines.append(
                json.dumps({"create": {"_index": alerts_index(self.prefix), "_id": doc_id}})
            )
            lines.append(json.dumps(source, separators=(",", ":")))
        result = _check(
            self.request(
                "POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"}
            ),
            "write alerts",
        )
        created: list[bool] = []
        for item in result.get("items", []):
            status = next(iter(item.values())).get("status", 0)
            if status not in (201, 409):
                raise DetectionError(f"alert write refused: {json.dumps(item)[:300]}")
            created.append(status == 201)
        return created

    def ensure_mapping(self) -> None:
        """Add the detection fields to the alerts index (additive; the index exists)."""
        _check(
            self.request(
                "PUT", f"/{alerts_index(self.prefix)}/_mapping", body=mapping_for_alerts()
            ),
            "alerts mapping",
        )


def alert_docs(alerts: Sequence[Alert], now_unix_nano: int) -> list[tuple[str, dict[str, Any]]]:
    return [(a.alert_id, a.document(now_unix_nano)) for a in alerts]


def _any_case_insensitive(names: Sequence[str]) -> bool:
    return any((info := lookup(name)) is not None and info.case_insensitive for name in names)
