"""The detection engine: evaluation (shared by the live service, the dry run and the
backfill) and the live service the collector runs.

`Engine` evaluates rules and returns alerts without writing anything:

- `Engine.inline(events, history)`: the per-event rules over a batch;
- `Engine.windowed(rule, range_from, range_to, history)`: one windowed rule over
  triggers whose own time is in ``[range_from, range_to]`` (events from
  ``range_from - window``): a past range, by event time;
- `Engine.windowed_received(rule, after, upto, history)`: one windowed rule over every
  event the collectors received in ``(after, upto]`` (``event.ingested``), each key
  evaluated around the received events' own times — the live path, which sees a late
  backlog like fresh traffic;
- `Engine.dry_run(range_from, range_to)`: every enabled rule over a past range, with
  suppression kept in memory (`crm-audit rules test`);
- `Engine.backfill(range_from, range_to, write)`: the same against the alerts already
  stored, writing what is new (`crm-audit rules backfill`).

`history` gives the alerts already raised per rule and key near the evaluated times
(`Searcher.alert_history`); with the deterministic alert ``_id`` and ``op_type=create``
it makes every evaluation idempotent: the same incident is one alert whichever
collector, restart, re-read or backfill finds it (see `collector.detect.windowed`).

`Detection` is what `collector.server` runs: `on_indexed` after each batch is indexed
(inline rules), and a thread that every ``interval_s`` takes each windowed rule's lease
in ``{prefix}-leases`` and evaluates the events received since the rule's cursor
(the lease's ``evaluated_to``, minus ``reread_s`` for batches whose indexing was retried, up to
``now - settle_s`` so that the refresh has made them searchable), writes the alerts and
hands those it created to the `Responder`, then advances the cursor under the lease.
"""

from __future__ import annotations

import dataclasses
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
from collector.detect.windowed import Prior, Scope, Suppressor
from collector.documents import parse_iso_nanos
from collector.errors import CollectorError
from collector.index import Requester

log = logging.getLogger(__name__)

History = inline.History
NS = 1_000_000_000
DAY_NS = 86400 * NS
CHUNK = 500  # keys per events query


class MemoryHistory:
    """Alerts raised by this run (dry runs), on top of an optional stored history."""

    def __init__(self, stored: History | None = None) -> None:
        self.stored = stored
        self.raised: dict[tuple[str, str], list[Prior]] = {}

    def __call__(
        self, rule_id: str, keys: Sequence[str], gte: int, lte: int
    ) -> Mapping[str, Sequence[Prior]]:
        out: dict[str, list[Prior]] = {}
        base = self.stored(rule_id, keys, gte, lte) if self.stored else {}
        for key in keys:
            found = [*base.get(key, ()), *self.raised.get((rule_id, key), ())]
            found = [p for p in found if gte <= p.trigger <= lte]
            if found:
                out[key] = sorted(found)
        return out

    def record(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self.raised.setdefault((alert.rule_id, alert.key), []).append(
                Prior(alert.trigger, alert.start)
            )


class Engine:
    """Evaluates rules against the events of one index prefix (module docstring)."""

    def __init__(
        self,
        rules: RuleSet,
        searcher: Searcher,
        *,
        late_after_s: float = 600,
        origin: str = "live",
    ) -> None:
        self.rules = rules
        self.searcher = searcher
        self.late_after_ns = int(late_after_s * NS)
        self.origin = origin

    def _mark(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Say where each alert comes from and whether its data arrived late."""
        return [
            dataclasses.replace(a, late=a.lag > self.late_after_ns, origin=self.origin)
            for a in alerts
        ]

    def inline(self, events: Iterable[Event], history: History) -> list[Alert]:
        return self._mark(inline.evaluate(self.rules, events, history))

    def windowed(self, rule: Rule, range_from: int, range_to: int, history: History) -> list[Alert]:
        """Triggers whose own time is in [range_from, range_to] (a past range)."""
        scope = Scope(range_from, range_to)
        if rule.kind == "integrity":
            return self._mark(self._integrity(rule, scope, history))
        if rule.kind == "new_network":
            keys = self.searcher.candidates(rule, scope.range_from, scope.range_to)
            return self._mark(self._new_network(rule, keys, scope, history))
        keys = self.searcher.candidates(rule, range_from - rule.window_ns, range_to)
        return self._mark(self._by_scope(rule, dict.fromkeys(keys, scope), history))

    def windowed_received(self, rule: Rule, after: int, upto: int, history: History) -> list[Alert]:
        """Every event of `rule` received in (after, upto], evaluated on its own time.

        A received event at time ``t`` can complete a window ending anywhere in
        ``[t, t + window]``: those triggers are evaluated for its key (with the events
        from ``t - window``), whatever ``t`` is — an hour ago or three days ago.
        """
        if rule.kind == "integrity":
            return self._mark(self._integrity(rule, Scope(after, upto), history))
        spans = self.searcher.ingested_spans(rule, after, upto)
        if not spans:
            return []
        if rule.kind == "new_network":
            scope = Scope(min(f for f, _ in spans.values()), max(t for _, t in spans.values()))
            return self._mark(self._new_network(rule, sorted(spans), scope, history))
        scopes = {k: Scope(first, last + rule.window_ns) for k, (first, last) in spans.items()}
        return self._mark(self._by_scope(rule, scopes, history))

    def _by_scope(self, rule: Rule, scopes: Mapping[str, Scope], history: History) -> list[Alert]:
        alerts: list[Alert] = []
        keys = sorted(scopes)
        reach = max(rule.suppression_ns, rule.window_ns)
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            gte = min(scopes[k].range_from for k in chunk) - rule.window_ns
            lte = max(scopes[k].range_to for k in chunk)
            by_key = self.searcher.events_by_key(rule, chunk, gte, lte)
            if not by_key:
                continue
            prior = history(rule.id, sorted(by_key), gte - reach, lte + reach)
            for key in sorted(by_key):
                alerts.extend(
                    windowed.evaluate_key(
                        rule, key, by_key[key], prior.get(key, ()), scopes.get(key, Scope(0, -1))
                    )
                )
        return alerts

    def _new_network(
        self, rule: Rule, keys: Sequence[str], scope: Scope, history: History
    ) -> list[Alert]:
        if not keys:
            return []
        logins = self.searcher.events_by_key(rule, keys, scope.range_from, scope.range_to)
        found = self.searcher.login_history(
            rule, sorted(logins), scope.range_from - rule.window_ns, scope.range_from
        )
        reach = rule.suppression_ns
        prior = history(rule.id, sorted(logins), scope.range_from - reach, scope.range_to + reach)
        alerts: list[Alert] = []
        for key in sorted(logins):
            alerts.extend(
                windowed.new_networks(
                    rule, key, logins[key], found.get(key, (0, set())), prior.get(key, ()), scope
                )
            )
        return alerts

    def _integrity(self, rule: Rule, scope: Scope, history: History) -> list[Alert]:
        found = self.searcher.integrity_alerts(scope.range_from, scope.range_to)
        agents = sorted({str(src.get("agent", {}).get("id", "")) for _, src in found})
        reach = rule.suppression_ns
        prior = (
            history(rule.id, agents, scope.range_from - reach, scope.range_to + reach)
            if reach
            else {}
        )
        seen = {a: Suppressor(rule, prior.get(a, ()), spans=False) for a in agents}
        alerts: list[Alert] = []
        for source_id, source in found:
            agent = str(source.get("agent", {}).get("id", ""))
            detail: Mapping[str, Any] = source.get("alert", {})
            when = parse_iso_nanos(str(source["@timestamp"]))
            if reach and seen[agent].blocks(when):
                continue
            seen[agent].add(when, when)
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

    def _selected(self, rule_ids: Sequence[str]) -> list[Rule]:
        return [r for r in self.rules.enabled() if not rule_ids or r.id in rule_ids]

    def dry_run(
        self, range_from: int, range_to: int, rule_ids: Sequence[str] = ()
    ) -> dict[str, list[Alert]]:
        """What each enabled rule (or those named) would raise over a past range."""
        memory = MemoryHistory()
        selected = self._selected(rule_ids)
        results: dict[str, list[Alert]] = {r.id: [] for r in selected}
        inline_rules = [r for r in selected if r.inline]
        if inline_rules:
            events = self.searcher.fetch_range(inline_rules, range_from, range_to)
            subset = RuleSet(calendars=self.rules.calendars, rules=inline_rules)
            for alert in self._mark(inline.evaluate(subset, events, memory)):
                results[alert.rule_id].append(alert)
        for rule in selected:
            if not rule.inline:
                found = self.windowed(rule, range_from, range_to, memory)
                memory.record(found)
                results[rule.id].extend(found)
        return results

    def backfill(
        self,
        range_from: int,
        range_to: int,
        write: Callable[[Sequence[Alert]], Sequence[bool]],
        rule_ids: Sequence[str] = (),
    ) -> dict[str, tuple[int, int]]:
        """Evaluate a past range against the stored alerts and `write` what it finds;
        per rule (alerts created, alerts that already existed). Idempotent: the stored
        alerts suppress repeats and the ids of the same triggers are the same."""
        history = self.searcher.alert_history
        selected = self._selected(rule_ids)
        counts = {r.id: [0, 0] for r in selected}

        def store(alerts: Sequence[Alert]) -> None:
            for alert, created in zip(alerts, write(alerts), strict=True):
                counts[alert.rule_id][0 if created else 1] += 1

        inline_rules = [r for r in selected if r.inline]
        if inline_rules:
            subset = RuleSet(calendars=self.rules.calendars, rules=inline_rules)
            # a day at a time, written before the next: suppression sees what came before
            for day in range(range_from, range_to + 1, DAY_NS):
                events = self.searcher.fetch_range(
                    inline_rules, day, min(day + DAY_NS - 1, range_to)
                )
                found = self._mark(inline.evaluate(subset, events, history))
                if found:
                    store(found)
        for rule in selected:
            if not rule.inline:
                found = self.windowed(rule, range_from, range_to, history)
                if found:
                    store(found)
        return {rule_id: (c[0], c[1]) for rule_id, c in counts.items()}


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
        self.engine = Engine(rules, self.searcher, late_after_s=settings.max_delay_s)
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
            alerts = self.engine.inline(events, self.searcher.alert_history)
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
                "ALERT %s [%s] key=%s: %s (%d events%s)",
                alert.rule_id,
                alert.severity,
                alert.key,
                alert.reason,
                len(alert.event_ids),
                f"; late data, received up to {alert.lag / NS:.0f}s after" if alert.late else "",
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
        cursor = lease.evaluated_to
        if rule.kind == "integrity":
            # integrity alerts are written as they happen: their own time is receipt
            delay = int(self.settings.max_delay_s * NS)
            floor = now - int(self.settings.max_catchup_s * NS)
            start = (cursor if cursor is not None else now) - delay
            after, upto = max(start, floor), now
            cursor = now
        else:
            if cursor is None:  # first evaluation of this rule: recent receipts only
                cursor = now - int(self.settings.max_catchup_s * NS)
            upto = now - int(self.settings.settle_s * NS)
            after = cursor - int(self.settings.reread_s * NS)
        try:
            if upto <= after:
                alerts: list[Alert] = []
            elif rule.kind == "integrity":
                alerts = self.engine.windowed(rule, after, upto, self.searcher.alert_history)
            else:
                alerts = self.engine.windowed_received(
                    rule, after, upto, self.searcher.alert_history
                )
            raised = len(self._raise(alerts)) if alerts else 0
        except DetectionError as exc:
            log.warning("detection: rule %s: %s", rule.id, exc)
            return 0
        renewed = self.leases.complete(lease, self.clock_ns(), max(cursor, upto))
        if renewed is None:
            self._held.pop(name, None)
        else:
            self._held[name] = renewed
        return raised
