"""Pure parts of detection (windowed logic, inline rules) and the response side against
real local endpoints (HTTP server, processes) and leases against the real OpenSearch."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.detect import inline
from collector.detect.alerts import Event
from collector.detect.lease import Leases
from collector.detect.respond import SIGNATURE_HEADER, post_json, run_command, sign
from collector.detect.rules import Rule, RuleSet
from collector.detect.windowed import Prior, Scope, evaluate_key, new_networks
from collector.documents import iso_nanos
from collector.index import Requester
from tests.helpers import nest

NS = 1_000_000_000
T0 = 1_793_601_000 * NS
ALL = Scope(0, 2**62)


def ev(n: int, seconds: float, **fields: Any) -> Event:
    doc = {"@timestamp": iso_nanos(T0 + int(seconds * NS))}
    return Event.from_source(f"a:{n}", nest(doc, fields))


def rule(**data: Any) -> Rule:
    return Rule.model_validate({"id": "r", **data})


def fails(count: int, every_s: float, start: float = 0, ip: str = "10.0.0.1") -> list[Event]:
    return [
        ev(i, start + i * every_s, event__outcome="failure", source__ip=ip, user__name="u")
        for i in range(count)
    ]


def test_burst_fires_once_at_the_threshold_and_honours_suppression() -> None:
    burst = rule(kind="failed_login_burst", window="10m", threshold=10, suppression="1h")
    events = fails(25, 20)  # 25 failures in 8 minutes
    alerts = evaluate_key(burst, "u", events, (), ALL)
    assert len(alerts) == 1
    assert alerts[0].event_ids == tuple(f"a:{i}" for i in range(10))
    # Re-evaluated with the stored alert: nothing new.
    assert evaluate_key(burst, "u", events, [Prior(alerts[0].trigger, alerts[0].start)], ALL) == []
    # Slower than the window: never 10 within 10 minutes.
    assert evaluate_key(burst, "u", fails(30, 70), (), ALL) == []


def test_distinct_and_success_after_failures() -> None:
    many = rule(kind="failed_login_distinct_ips", threshold=3)
    events = [*fails(2, 10), *fails(2, 10, 30, "10.0.0.2"), *fails(1, 10, 60, "10.0.0.3")]
    events = [Event(f"a:{i}", e.ts, e.doc) for i, e in enumerate(events)]
    (alert,) = evaluate_key(many, "u", events, (), ALL)
    assert alert.evidence["distinct_source.ip"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    saf = rule(kind="success_after_failures", threshold=5)
    ok = ev(99, 200, event__outcome="success", user__name="u")
    (alert,) = evaluate_key(saf, "u", [*fails(5, 10), ok], (), ALL)
    assert alert.trigger_id == "a:99" and len(alert.event_ids) == 6
    assert evaluate_key(saf, "u", [*fails(4, 10), ok], (), ALL) == []


def test_bank_change_then_export_needs_the_order_and_the_window() -> None:
    r = rule(kind="bank_change_then_export", window="15m")
    change = ev(1, 0, event__action="record.update", crm__object__type="customer",
                crm__changes=[{"field": "iban", "old": "A", "new": "B"}])  # fmt: skip
    export = ev(2, 600, event__action="record.export", crm__record_count=10)
    late = ev(3, 1200, event__action="record.export")
    assert len(evaluate_key(r, "u", [change, export], (), ALL)) == 1
    assert evaluate_key(r, "u", [change, late], (), ALL) == []
    assert evaluate_key(r, "u", [export, change], (), ALL) == []


def test_new_network_learns_first() -> None:
    r = rule(kind="new_network", window="30d", min_history=2)
    logins = [ev(1, 0, source__ip="192.0.2.7"), ev(2, 10, source__ip="192.0.2.8")]
    known = (5, {"10.1.2.0/24"})
    (alert,) = new_networks(r, "u", logins, known, (), ALL)
    assert alert.trigger_id == "a:1" and alert.evidence["network"] == "192.0.2.0/24"
    assert new_networks(r, "u", logins, (1, set()), (), ALL) == []  # still learning


def test_inline_rules_and_allow_list() -> None:
    rules = RuleSet.model_validate(
        {
            "calendars": {"c": {"timezone": "Europe/Berlin"}},
            "rules": [
                {"id": "x", "kind": "bulk_export", "allow": {"ips": ["10.9.0.0/16"]}},
                {"id": "n", "kind": "off_hours_login", "calendar": "c"},
                {"id": "a", "kind": "audit_tampering"},
            ],
        }
    )
    big = dict(event__action="record.export", crm__record_count=5000, user__name="u")
    events = [
        ev(1, 0, source__ip="10.1.0.1", **big),
        ev(2, 1, source__ip="10.9.3.3", **big),  # allow-listed network
        ev(3, -3 * 3600, event__action="login", event__outcome="success", user__name="n"),
        ev(4, 2, event__action="settings.update", user__name="adm",
           crm__changes=[{"field": "audit.level", "old": "basic", "new": "detailed"}]),
        ev(5, 3, event__action="settings.update", user__name="adm",
           crm__changes=[{"field": "audit.enabled", "old": "true", "new": "false"}]),
    ]  # fmt: skip
    alerts = inline.evaluate(rules, events, lambda *_: {})
    assert sorted((a.rule_id, a.trigger_id) for a in alerts) == [
        ("a", "a:5"), ("n", "a:3"), ("x", "a:1"),
    ]  # fmt: skip


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(503 if len(posts) < 3 else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", posts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_webhook_retries_with_backoff_and_signs(
    flaky_server: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, posts = flaky_server
    delays: list[float] = []
    outcome = post_json(
        url, {"id": "x"}, secret=b"k", timeout_s=10, max_attempts=5, backoff_s=0.5,
        sleep=delays.append,
    )  # fmt: skip
    assert outcome.ok and outcome.attempts == 3 and delays == [0.5, 1.0]
    for headers, body in posts:
        expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER.lower()] == expected == sign(b"k", body)
    assert json.loads(posts[0][1]) == {"id": "x"}


def test_command_hook_gets_stdin_and_is_killed_after_its_timeout(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    code = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    assert run_command([sys.executable, "-c", code], {"id": "a"}, 30).ok
    assert json.loads(out.read_text()) == {"id": "a"}
    slow = run_command([sys.executable, "-c", "import time; time.sleep(30)"], {}, 0.5)
    assert not slow.ok and "timed out" in slow.detail
    assert not run_command([str(tmp_path / "missing")], {}, 5).ok


@pytest.mark.integration
def test_one_lease_holder_at_a_time(os_http: Requester, prefix: str) -> None:
    a = Leases(os_http, prefix, "collector-a", ttl_s=30)
    b = Leases(os_http, prefix, "collector-b", ttl_s=30)
    a.ensure_index()
    b.ensure_index()
    held = a.acquire("rule:x", T0)
    assert held is not None
    assert b.acquire("rule:x", T0 + NS) is None  # held and not expired
    held = a.complete(held, T0 + 2 * NS, evaluated_to=T0 + 2 * NS)
    assert held is not None
    # a stops renewing: once expired, b takes over and continues from a's progress.
    taken = b.acquire("rule:x", T0 + 40 * NS)
    assert taken is not None and taken.evaluated_to == T0 + 2 * NS
    assert a.complete(held, T0 + 41 * NS, evaluated_to=T0 + 41 * NS) is None  # stale version
