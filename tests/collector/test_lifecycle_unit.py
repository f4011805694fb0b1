"""collector.lifecycle request sequences against a fake cluster (ISM present and absent)."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from collector.errors import LifecycleError
from collector.index import Response
from collector.lifecycle import (
    NO_ISM_WARNING,
    LifecycleInstaller,
    batches_template,
    deadletter_template,
    events_template,
    is_subset,
    render_policy,
    replica_settings,
)
from tests.collector.conftest import REPO, STANDARD_POLICY, FakeHttp

POLICY = json.loads(STANDARD_POLICY.read_text())
ISM_PLUGINS = [
    {"name": "n1", "component": "opensearch-job-scheduler"},
    {"name": "n1", "component": "opensearch-index-management"},
]


def stored_policy(wanted: dict[str, Any], seq_no: int = 7, term: int = 2) -> dict[str, Any]:
    """What GET _plugins/_ism/policies/<id> returns: our policy plus ISM's defaults."""
    policy = copy.deepcopy(wanted["policy"])
    policy.update(
        policy_id="p-standard", schema_version=21, last_updated_time=1, error_notification=None
    )
    for state in policy["states"]:
        for action in state["actions"]:
            action["retry"] = {"count": 3, "backoff": "exponential", "delay": "1m"}
    policy["ism_template"][0]["last_updated_time"] = 1
    return {"_id": "p-standard", "_seq_no": seq_no, "_primary_term": term, "policy": policy}


class Cluster:
    """A tiny fake cluster answering the lifecycle's requests."""

    def __init__(self, *, plugins: list[dict[str, str]], policy: dict[str, Any] | None = None):
        self.plugins = plugins
        self.templates: dict[str, dict[str, Any]] = {}
        self.policy = policy
        self.put_conflicts = 0
        self.mapping_updates: list[str] = []
        self.hold: dict[str, Any] | None = None
        self.http = FakeHttp(self.answer)

    def answer(self, method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/_nodes/plugins":  # as filtered to node names and plugin names
            nodes: dict[str, dict[str, Any]] = {}
            for row in self.plugins:
                node = nodes.setdefault(row["name"], {"name": row["name"]})
                if row.get("component"):
                    node.setdefault("plugins", []).append({"name": row["component"]})
            return Response(200, {"nodes": nodes})
        if path.startswith("/_index_template/"):
            name = path.rsplit("/", 1)[1]
            if method == "GET":
                if name not in self.templates:
                    return Response(404, {})
                return Response(
                    200,
                    {"index_templates": [{"name": name, "index_template": self.templates[name]}]},
                )
            self.templates[name] = body
            return Response(200, {"acknowledged": True})
        if method == "PUT" and (path.endswith("*/_mapping") or path.endswith("*/_settings")):
            self.mapping_updates.append(path)
            return Response(404, {})  # no index of the pattern yet
        if path == "/_plugins/_ism/policies/p-standard":
            if method == "GET":
                return Response(200, self.policy) if self.policy else Response(404, {})
            if self.put_conflicts:
                self.put_conflicts -= 1
                return Response(409, {"error": "version conflict"})
            self.policy = stored_policy(body)
            return Response(201 if not params else 200, {"_id": "p-standard"})
        if path == "/_plugins/_ism/policies/p-legal-hold":
            if method == "GET":
                return Response(200, self.hold) if self.hold else Response(404, {})
            self.hold = {"_id": "p-legal-hold", "_seq_no": 1, "_primary_term": 1, **body}
            return Response(201, {"_id": "p-legal-hold"})
        if path.startswith("/_plugins/_ism/add/") or path.startswith(
            "/_plugins/_ism/change_policy/"
        ):
            return Response(200, {"updated_indices": 2, "failures": False, "failed_indices": []})
        raise AssertionError(f"unexpected request {method} {path}")


def installer(cluster: Cluster) -> LifecycleInstaller:
    return LifecycleInstaller(cluster.http, prefix="p", policies={"standard": POLICY})


def calls(cluster: Cluster) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _, _ in cluster.http.calls]


def test_fresh_cluster_with_ism_installs_everything() -> None:
    cluster = Cluster(plugins=ISM_PLUGINS)
    report = installer(cluster).install()
    assert report.templates == {
        "p-events": "created",
        "p-batches": "created",
        "p-deadletter": "created",
    }
    assert report.ism_available
    assert report.policies == {"p-standard": "created", "p-legal-hold": "created"}
    assert calls(cluster) == [
        ("GET", "/_index_template/p-events"),
        ("PUT", "/_index_template/p-events"),
        ("PUT", "/p-events-*/_mapping"),  # indices from an older template get new fields
        ("PUT", "/p-events-*/_settings"),  # ... and its replica setting
        ("GET", "/_index_template/p-batches"),
        ("PUT", "/_index_template/p-batches"),
        ("PUT", "/p-batches-*/_mapping"),
        ("PUT", "/p-batches-*/_settings"),
        ("GET", "/_index_template/p-deadletter"),
        ("PUT", "/_index_template/p-deadletter"),
        ("PUT", "/p-deadletter*/_mapping"),
        ("PUT", "/p-deadletter*/_settings"),
        ("GET", "/_nodes/plugins"),
        ("GET", "/_plugins/_ism/policies/p-standard"),
        ("PUT", "/_plugins/_ism/policies/p-standard"),
        ("POST", "/_plugins/_ism/add/p-events-standard-*"),
        ("POST", "/_plugins/_ism/add/p-batches-standard-*"),
        ("GET", "/_plugins/_ism/policies/p-legal-hold"),
        ("PUT", "/_plugins/_ism/policies/p-legal-hold"),
    ]
    put_policy = cluster.http.calls[14][2]
    assert put_policy["policy"]["ism_template"] == [
        {"index_patterns": ["p-events-standard-*", "p-batches-standard-*"], "priority": 100}
    ]
    assert put_policy["policy"]["states"] == POLICY["policy"]["states"]
    assert cluster.http.calls[15][2] == {"policy_id": "p-standard"}
    assert cluster.http.calls[16][2] == {"policy_id": "p-standard"}


def test_second_install_changes_nothing() -> None:
    cluster = Cluster(plugins=ISM_PLUGINS)
    installer(cluster).install()
    cluster.http.calls.clear()
    report = installer(cluster).install()
    assert report.templates == {
        "p-events": "unchanged",
        "p-batches": "unchanged",
        "p-deadletter": "unchanged",
    }
    assert report.policies == {"p-standard": "unchanged", "p-legal-hold": "unchanged"}
    assert [c for c in calls(cluster) if c[0] == "PUT"] == []
    # still attaches the policy to indices that may have appeared without it
    assert ("POST", "/_plugins/_ism/add/p-events-standard-*") in calls(cluster)
    assert ("POST", "/_plugins/_ism/add/p-batches-standard-*") in calls(cluster)


def test_changed_policy_is_updated_with_seq_no_and_moved() -> None:
    old = render_policy(POLICY, "p", "standard")
    old["policy"]["states"][1]["transitions"][0]["conditions"]["min_index_age"] = "7d"
    cluster = Cluster(plugins=ISM_PLUGINS, policy=stored_policy(old, seq_no=11, term=3))
    report = installer(cluster).install()
    assert report.policies == {"p-standard": "updated", "p-legal-hold": "created"}
    method, path, body, params = cluster.http.calls[-7]
    assert (method, path, params) == (
        "PUT",
        "/_plugins/_ism/policies/p-standard",
        {"if_seq_no": "11", "if_primary_term": "3"},
    )
    assert body == render_policy(POLICY, "p", "standard")
    assert calls(cluster)[-6:-2] == [
        ("POST", "/_plugins/_ism/add/p-events-standard-*"),
        ("POST", "/_plugins/_ism/change_policy/p-events-standard-*"),
        ("POST", "/_plugins/_ism/add/p-batches-standard-*"),
        ("POST", "/_plugins/_ism/change_policy/p-batches-standard-*"),
    ]
    # only indices in the class policy's own states move: held ones stay on hold
    for moved in (cluster.http.calls[-5], cluster.http.calls[-3]):
        assert moved[2] == {
            "policy_id": "p-standard",
            "include": [{"state": "hot"}, {"state": "warm"}, {"state": "delete"}],
        }


def test_concurrent_policy_creation_is_retried() -> None:
    cluster = Cluster(plugins=ISM_PLUGINS)
    cluster.put_conflicts = 1
    assert installer(cluster).install().policies["p-standard"] == "created"


def test_without_ism_warns_once_and_touches_no_ism_api(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(plugins=[{"name": "n1", "component": "opensearch-job-scheduler"}])
    inst = installer(cluster)
    with caplog.at_level(logging.WARNING, logger="collector.lifecycle"):
        assert not inst.install().ism_available
        inst.install()
    assert [r.getMessage() for r in caplog.records] == [NO_ISM_WARNING]
    assert not [p for _, p in calls(cluster) if "_ism" in p]


def test_ism_on_only_some_nodes_counts_as_absent() -> None:
    plugins = [*ISM_PLUGINS, {"name": "n2", "component": "opensearch-job-scheduler"}]
    assert not installer(Cluster(plugins=plugins)).ism_available()
    # a node without any plugin is listed by name only
    assert not installer(Cluster(plugins=[*ISM_PLUGINS, {"name": "n2"}])).ism_available()
    assert installer(Cluster(plugins=ISM_PLUGINS)).ism_available()


def test_a_refused_plugin_listing_is_an_error_not_a_missing_plugin() -> None:
    http = FakeHttp(lambda m, p, b, q: Response(403, {"error": "no permissions"}))
    inst = LifecycleInstaller(http, prefix="p", policies={"standard": POLICY})
    with pytest.raises(LifecycleError, match="cannot list the nodes' plugins"):
        inst.ism_available()


def test_template_error_raises_lifecycle_error() -> None:
    http = FakeHttp(lambda m, p, b, q: Response(0, {"error": "connection refused"}))
    with pytest.raises(LifecycleError, match="cannot read index template p-events: HTTP 0"):
        LifecycleInstaller(http, prefix="p", policies={}).install()


def test_is_subset() -> None:
    assert is_subset({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3})
    assert not is_subset({"a": [{"b": 1}]}, {"a": [{"b": 1}, {"b": 2}]})
    assert not is_subset({"a": 1}, {"a": "1"})


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("index-template-events.json", events_template("crm-audit")),
        ("index-template-batches.json", batches_template("crm-audit")),
        ("index-template-deadletter.json", deadletter_template("crm-audit")),
    ],
)
def test_reference_templates_in_config_match_code(name: str, template: dict[str, Any]) -> None:
    # config/opensearch/*.json are the rendered templates for operators to review;
    # regenerate them from collector.lifecycle when the mapping changes.
    assert json.loads((REPO / "config" / "opensearch" / name).read_text()) == template


def test_dry_run_reports_without_writing() -> None:
    cluster = Cluster(plugins=ISM_PLUGINS)
    inst = LifecycleInstaller(
        cluster.http,
        prefix="p",
        policies={"standard": POLICY},
        indices={"p-seals": {"properties": {}}},
        dry_run=True,
    )

    def absent(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if method == "HEAD":
            return Response(404, {})
        return cluster.answer(method, path, body, params)

    cluster.http.responder = absent
    report = inst.install()
    assert {m for m, _ in calls(cluster)} <= {"GET", "HEAD"}
    assert report.changed
    assert report.lines() == [
        "template p-batches: would be created",
        "template p-deadletter: would be created",
        "template p-events: would be created",
        "index p-seals: would be created",
        "policy p-legal-hold: would be created",
        "policy p-standard: would be created",
    ]


def test_dry_run_that_may_not_look_at_an_index_says_so() -> None:
    # A user without indices:admin/get gets 403 on HEAD; "would be created" would hide it.
    cluster = Cluster(plugins=ISM_PLUGINS)
    inst = LifecycleInstaller(
        cluster.http,
        prefix="p",
        policies={"standard": POLICY},
        indices={"p-seals": {"properties": {}}},
        dry_run=True,
    )

    def refused(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if method == "HEAD":
            return Response(403, {})
        return cluster.answer(method, path, body, params)

    cluster.http.responder = refused
    with pytest.raises(LifecycleError, match=r"cannot check index p-seals.*403"):
        inst.install()


def test_read_only_held_index_keeps_its_mapping_and_install_goes_on() -> None:
    cluster = Cluster(plugins=[])
    blocked = {"error": {"type": "cluster_block_exception", "reason": "index read-only (api)"}}

    def answer(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path in ("/p-events-*/_mapping", "/p-events-*/_settings"):
            return Response(403, blocked)
        if path == "/_cat/indices/p-events-*":
            return Response(200, [{"index": "p-events-standard-2026.10"}, {"index": "p-events-x"}])
        if path.startswith("/p-events-standard-2026.10/"):
            return Response(403, blocked)
        if path in ("/p-events-x/_mapping", "/p-events-x/_settings"):
            return Response(200, {"acknowledged": True})
        return cluster.answer(method, path, body, params)

    cluster.http.responder = answer
    report = installer(cluster).install()
    assert report.templates["p-events"] == "created"
    assert ("PUT", "/p-events-x/_mapping") in calls(cluster)
    assert ("PUT", "/p-events-x/_settings") in calls(cluster)


def test_replica_settings_fixed_or_auto_expanded() -> None:
    # a fixed number turns auto-expansion off, so it also replaces a range set before
    assert replica_settings(1) == {"number_of_replicas": 1, "auto_expand_replicas": "false"}
    assert replica_settings("0-1") == {"auto_expand_replicas": "0-1"}
    assert replica_settings("1-all") == {"auto_expand_replicas": "1-all"}


def test_templates_default_to_auto_expanded_replicas() -> None:
    for template in (events_template("p"), batches_template("p"), deadletter_template("p")):
        assert template["template"]["settings"]["index"] == {
            "number_of_shards": 1,
            "auto_expand_replicas": "0-1",
            "codec": "best_compression",
        }
    fixed = events_template("p", replicas=2)["template"]["settings"]["index"]
    assert (fixed["number_of_replicas"], fixed["auto_expand_replicas"]) == (2, "false")


def test_changed_replica_setting_updates_templates_and_existing_indices() -> None:
    cluster = Cluster(plugins=[])
    installer(cluster).install()
    cluster.http.calls.clear()
    report = LifecycleInstaller(cluster.http, prefix="p", policies={}, replicas=1).install()
    assert report.templates == {
        "p-events": "updated",
        "p-batches": "updated",
        "p-deadletter": "updated",
    }
    settings = [(p, b) for m, p, b, _ in cluster.http.calls if p.endswith("/_settings")]
    wanted = {"index": {"number_of_replicas": 1, "auto_expand_replicas": "false"}}
    assert settings == [
        ("/p-events-*/_settings", wanted),
        ("/p-batches-*/_settings", wanted),
        ("/p-deadletter*/_settings", wanted),
    ]
    put = cluster.templates["p-events"]["template"]["settings"]["index"]
    assert put["number_of_replicas"] == 1


def test_single_indices_created_with_and_brought_to_the_replica_setting() -> None:
    exists = {"error": {"type": "resource_already_exists_exception", "reason": "exists"}}
    cluster = Cluster(plugins=[])

    def answer(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
        if path == "/p-seals":
            return Response(200, {"acknowledged": True})
        if path == "/p-heads":
            return Response(400, exists)
        if path in ("/p-heads/_mapping", "/p-heads/_settings"):
            return Response(200, {"acknowledged": True})
        return cluster.answer(method, path, body, params)

    cluster.http.responder = answer
    LifecycleInstaller(
        cluster.http,
        prefix="p",
        policies={},
        indices={"p-seals": {"properties": {}}, "p-heads": {"properties": {}}},
        replicas="1-2",
    ).install()
    bodies = {p: b for m, p, b, _ in cluster.http.calls if m == "PUT"}
    assert bodies["/p-seals"]["settings"]["index"]["auto_expand_replicas"] == "1-2"
    # an index made before (e.g. with 0 replicas) gets the setting now
    assert bodies["/p-heads/_settings"] == {"index": {"auto_expand_replicas": "1-2"}}


@pytest.mark.parametrize(
    ("stored", "replicas", "state"),
    [
        ({"settings": {"index": {"number_of_replicas": "0"}}}, "0-1", "updated"),
        (
            {"settings": {"index": {"number_of_replicas": "0", "auto_expand_replicas": "0-1"}}},
            "0-1",
            "unchanged",
        ),
        (
            {
                "settings": {"index": {"number_of_replicas": "1"}},
                "defaults": {"index": {"auto_expand_replicas": "false"}},
            },
            1,
            "unchanged",
        ),
        ({"settings": {"index": {"number_of_replicas": "1"}}}, 2, "updated"),
    ],
)
def test_an_existing_index_reports_a_replica_change(
    stored: dict[str, Any], replicas: int | str, state: str
) -> None:
    exists = {"error": {"type": "resource_already_exists_exception", "reason": "exists"}}
    for dry_run in (True, False):
        cluster = Cluster(plugins=[])
        fallback = cluster.answer

        def answer(method: str, path: str, body: Any, params: dict[str, str]) -> Response:
            if path == "/p-heads":
                return Response(200 if method == "HEAD" else 400, exists)
            if path == "/p-heads/_settings" and method == "GET":
                return Response(200, {"p-heads": stored})
            if path in ("/p-heads/_mapping", "/p-heads/_settings"):
                return Response(200, {"acknowledged": True})
            return fallback(method, path, body, params)  # noqa: B023 - used in this iteration

        cluster.http.responder = answer
        report = LifecycleInstaller(
            cluster.http,
            prefix="p",
            policies={},
            indices={"p-heads": {"properties": {}}},
            replicas=replicas,
            dry_run=dry_run,
        ).install()
        assert report.indices["p-heads"] == state
        puts = [p for m, p, _, _ in cluster.http.calls if m == "PUT" and p.endswith("_settings")]
        changed = not dry_run and state == "updated"
        assert ("/p-heads/_settings" in puts) == changed


def test_batches_template_has_the_events_settings_and_the_batches_mapping() -> None:
    from collector.batchbytes import BATCHES_MAPPING

    for replicas in ("0-1", 2):
        events = events_template("p", shards=3, replicas=replicas)
        batches = batches_template("p", shards=3, replicas=replicas)
        assert batches["index_patterns"] == ["p-batches-*"]
        assert batches["priority"] == events["priority"]
        assert batches["template"]["settings"] == events["template"]["settings"]
        assert batches["template"]["mappings"] == BATCHES_MAPPING
    # its own content hash: a changed batches mapping updates that template only
    assert batches["_meta"]["content_sha256"] != events["_meta"]["content_sha256"]


def test_a_policy_from_before_batches_is_updated_once_for_both_kinds() -> None:
    """A class policy stored when its ism_template named the events indices only is not
    a subset of the wanted one (two patterns): it is updated and both kinds of existing
    indices are moved; the next install finds it unchanged (ISM's own additions, such as
    last_updated_time, do not count)."""
    old = render_policy(POLICY, "p", "standard")
    old["policy"]["ism_template"][0]["index_patterns"] = ["p-events-standard-*"]
    cluster = Cluster(plugins=ISM_PLUGINS, policy=stored_policy(old))
    assert cluster.policy is not None
    assert not is_subset(render_policy(POLICY, "p", "standard")["policy"], cluster.policy["policy"])
    report = installer(cluster).install()
    assert report.policies["p-standard"] == "updated"
    moved = [p for m, p in calls(cluster) if "change_policy" in p]
    assert moved == [
        "/_plugins/_ism/change_policy/p-events-standard-*",
        "/_plugins/_ism/change_policy/p-batches-standard-*",
    ]
    cluster.http.calls.clear()
    again = installer(cluster).install()
    assert again.policies["p-standard"] == "unchanged"
    assert not [p for m, p in calls(cluster) if "change_policy" in p or m == "PUT"]
