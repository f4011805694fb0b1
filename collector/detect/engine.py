"""The detection engine: evaluation (shared by the live service and the dry run) and the
live service the collector runs.

`Engine` evaluates rules and returns alerts without writing anything:

- `Engine.inline(events, last_alerts)`: the per-event rules over a batch;
- `Engine.windowed(rule, range_from, range_to, last_alerts)`: one windowed rule over
  triggers in ``[range_from, range_to]`` (events from ``range_from - window``);
- `Engine.dry_run(range_from, range_to)`: every enabled rule over a past range, with
  suppression kept in memory (`crm-audit rules test`).

`Detection` is what `collector.server` runs: `on_indexed` after each batch is indexed
(inline rules), and a thread that every ``interval_s`` takes each windowed rule's lease
in ``{prefix}-leases``, evaluates it from where the lease's ``evaluated_to`` says the
last evaluation (by any collector) ended (minus ``max_delay_s`` for late events),
writes the alerts (deterministic ``_id``, ``op_type=create``) and hands those it created
to the `Responder`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from collector.config import DEFAULT_REPLICAS
from collector.detect import inline, windowed
from collector.detect.alerts import Alert, Event
from collector.detect.errors import DetectionError
from collector.detect.lease import Leases
from collector.detect.respond import Responder
from collector.detect.rules import Rule, RuleSet
from collector.detect.search import Searcher, alert_docs
from collector.detect.settings import DetectionConfig
from collector.detect.windowed import Scope
from collector.documents import parse_iso_nanos
from collector.errors import CollectorError
from collector.index import Requester

log = logging.getLogger(__name__)

LastAlerts = inline.LastAlerts


class MemoryLastAlerts:
    """Suppression state kept in memory (dry runs): what this run has raised so far."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], int] = {}

    def __call__(self, rule_id: str, keys: Sequence[str]) -> Mapping[str, int]:
        return {k: self.last[(rule_id, k)] for k in keys if (rule_id, k) in self.last}

    def record(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            slot = (alert.rule_id, alert.key)
            self.last[slot] = max(self.last.get(slot, alert.trigger), alert.trigger)


class Engine:
    """Evaluates rules against the events of one index prefix (module docstring)."""

    def __init__(self, rules: RuleSet, searcher: Searcher) -> None:
        self.rules = rules
        self.searcher = searcher

    def inline(self, events: Iterable[Event], last_alerts: LastAlerts) -> list[Alert]:
        return inline.evaluate(self.rules, events, last_alerts)

    def windowed(
        self, rule: Rule, range_from: int, range_to: int, last_alerts: LastAlerts
    ) -> list[Alert]:
        scope = Scope(range_from, range_to)
        if rule.kind == "integrity":
            return self._integrity(rule, scope, last_alerts)
        if rule.kind == "new_network":
            return self._new_network(rule, scope, last_alerts)
        gte = range_from - rule.window_ns
        keys = self.searcher.candidates(rule, gte, range_to)
        if not keys:
            return []
        by_key = self.searcher.events_by_key(rule, keys, gte, range_to)
        last = last_alerts(rule.id, sorted(by_key))
        alerts: list[Alert] = []
        for key in sorted(by_key):
            alerts.extend(windowed.evaluate_key(rule, key, by_key[key], last.get(key), scope))
        return alerts

    def _new_network(self, rule: Rule, scope: Scope, last_alerts: LastAlerts) -> list[Alert]:
        keys = self.searcher.candidates(rule, scope.range_from, scope.range_to)
        if not keys:
            return []
        logins = self.searcher.events_by_key(rule, keys, scope.range_from, scope.range_to)
        history = self.searcher.login_history(
            rule, sorted(logins), scope.range_from - rule.window_ns, scope.range_from
        )
        last = last_alerts(rule.id, sorted(logins))
        alerts: list[Alert] = []
        for key in sorted(logins):
            alerts.extend(
                windowed.new_networks(
                    rule, key, logins[key], history.get(key, (0, set())), last.get(key), scope
                )
            )
        return alerts

    def _integrity(self, rule: Rule, scope: Scope, last_alerts: LastAlerts) -> list[Alert]:
        found = self.searcher.integrity_alerts(scope.range_from, scope.range_to)
        agents = sorted({str(src.get("agent", {}).get("id", "")) for _, src in found})
        last = dict(last_alerts(rule.id, agents)) if rule.suppression_ns else {}
        alerts: list[Alert] = []
        for source_id, source in found:
            agent = str(source.get("agent", {}).get("id", ""))
            detail: Mapping[str, Any] = source.get("alert", {})
            when = parse_iso_nanos(str(source["@timestamp"]))
            previous = last.get(agent)
            if previous is not None and when < previous + rule.suppression_ns:
                continue
            last[agent] = when
            first, final = detail.get("first_sequence"), detail.get("last_sequence")
            ids = tuple(f"{agent}:{s}" for s in dict.fromkeys((first, final)) if s is not None)
            alerts.append(
                Alert(
                    rule_id=rule.id,
                    rule_kind=rule.kind,
                    description=rule.description,
                    severity=rule.severity,
                    key=agent,
                    key_fields=("agent.id",),
                    start=when,
                    trigger=when,
                    trigger_id=source_id,
                    event_ids=ids,
                    reason=f"integrity {detail.get('kind')}: {detail.get('reason', '')}",
                    evidence={
                        "integrity_kind": detail.get("kind"),
                        "first_sequence": first,
                        "last_sequence": final,
                        "batch_id": detail.get("batch_id"),
                        "peer": detail.get("peer"),
                        "source_alert": source_id,
                    },
                    agent_id=agent,
                )
            )
        return alerts

    def dry_run(
        self, range_from: int, range_to: int, rule_ids: Sequence[str] = ()
    ) -> dict[str, list[Alert]]:
        """What each enabled rule (or those named) would raise over a past range."""
        memory = MemoryLastAlerts()
        selected = [r for r in self.rules.enabled() if not rule_ids or r.id in rule_ids]
        results: dict[str, list[Alert]] = {r.id: [] for r in selected}
        inline_rules = [r for r in selected if r.inline]
        if inline_rules:
            actions = sorted({a for r in inline_rules for a in r.action_list})
            events = self.searcher.fetch_range(actions, range_from, range_to)
            subset = RuleSet(calendars=self.rules.calendars, rules=inline_rules)
            for alert in inline.evaluate(subset, events, memory):
                results[alert.rule_id].append(alert)
        for rule in selected:
            if not rule.inline:
                found = self.windowed(rule, range_from, range_to, memory)
                memory.record(found)
                results[rule.id].extend(found)
        return results


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Detection:
    """Live detection inside the collector (module docstring)."""

    def __init__(
        self,
        rules: RuleSet,
        settings: DetectionConfig,
        request: Requester,
        prefix: str,
        *,
        prepare: Callable[[], None] = lambda: None,
        holder: str | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        replicas: int | str = DEFAULT_REPLICAS,
    ) -> None:
        self.rules = rules
        self.settings = settings
        self.searcher = Searcher(request, prefix)
        self.engine = Engine(rules, self.searcher)
        self.leases = Leases(
            request, prefix, holder or default_holder(), settings.lease_ttl_s, replicas=replicas
        )
        self.responder = Responder(
            settings.notifiers, self.searcher.write_alerts, clock_ns=clock_ns
        )
        self.prepare = prepare
        self.clock_ns = clock_ns
        self._ready = False
        self._ready_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: dict[str, Any] = {}
        self._by_id = {rule.id: rule for rule in rules.rules}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.responder.start()
        self._thread = threading.Thread(target=self._loop, name="detect-windowed", daemon=True)
        self._thread.start()
        inline_count = sum(1 for r in self.rules.enabled() if r.inline)
        log.info(
            "detection: %d inline and %d windowed rules, evaluated every %gs",
            inline_count,
            len(self.rules.enabled()) - inline_count,
            self.settings.interval_s,
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self.responder.stop()
        now = self.clock_ns()
        for lease in self._held.values():
            try:
                self.leases.release(lease, now)
            except CollectorError as exc:
                log.warning("detection: %s", exc)
        self._held.clear()

    def ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self.prepare()
                self.searcher.ensure_mapping()
                self.leases.ensure_index()
                self._ready = True

    # -- inline ----------------------------------------------------------------------

    def on_indexed(self, docs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Alert]:
        """Run the inline rules over a batch just indexed; the alerts it created. Never raises."""
        try:
            events = [Event.from_source(doc_id, source) for doc_id, source in docs]
            alerts = self.engine.inline(events, self.searcher.last_alerts)
            if alerts:
                self.ensure_ready()
                return self._raise(alerts)
            return []
        except CollectorError as exc:
            log.error("detection: inline rules not evaluated for this batch: %s", exc)
        except Exception as exc:  # noqa: BLE001 - detection must never cost the batch
            log.error("detection: inline rules failed: %s: %s", type(exc).__name__, exc)
        return []

    def _raise(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Write `alerts`; notify for those this call created (not the 409 repeats)."""
        now = self.clock_ns()
        docs = alert_docs(alerts, now)
        created = self.searcher.write_alerts(docs)
        new: list[Alert] = []
        for alert, is_new, (_, body) in zip(alerts, created, docs, strict=True):
            if not is_new:
                continue
            new.append(alert)
            log.warning(
                "ALERT %s [%s] key=%s: %s (%d events)",
                alert.rule_id,
                alert.severity,
                alert.key,
                alert.reason,
                len(alert.event_ids),
            )
            self.responder.submit(self._by_id[alert.rule_id], {"id": alert.alert_id, **body})
        return new

    # -- windowed --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except CollectorError as exc:
                log.warning("detection: windowed rules not evaluated: %s", exc)
            except Exception as exc:  # noqa: BLE001 - keep evaluating after a bug
                log.error("detection: windowed evaluation failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.settings.interval_s)

    def run_once(self) -> int:
        """Evaluate every windowed rule whose lease this collector gets; new alerts."""
        self.ensure_ready()
        raised = 0
        for rule in self.rules.enabled():
            if rule.inline or self._stop.is_set():
                continue
            raised += self._evaluate(rule)
        return raised

    def _evaluate(self, rule: Rule) -> int:
        now = self.clock_ns()
        name = f"rule:{rule.id}"
        lease = self.leases.acquire(name, now)
        if lease is None:
            self._held.pop(name, None)
            return 0
        self._held[name] = lease
        delay = int(self.settings.max_delay_s * 1e9)
        floor = now - int(self.settings.max_catchup_s * 1e9)
        start = (lease.evaluated_to if lease.evaluated_to is not None else now) - delay
        range_from = max(start, floor)
        try:
            alerts = self.engine.windowed(rule, range_from, now, self.searcher.last_alerts)
            raised = len(self._raise(alerts)) if alerts else 0
        except DetectionError as exc:
            log.warning("detection: rule %s: %s", rule.id, exc)
            return 0
        renewed = self.leases.complete(lease, self.clock_ns(), now)
        if renewed is None:
            self._held.pop(name, None)
        else:
            self._held[name] = renewed
        return raised
