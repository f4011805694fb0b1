"""Response: webhook notifications and per-rule action hooks, each recorded as a document.

A new alert (only the collector whose ``create`` made it, so one notification per alert
however many collectors evaluate) is queued here; a worker thread

- POSTs its JSON to every notifier whose ``min_severity`` it reaches (unless the rule
  says ``notify: false``), with ``X-CRM-Audit-Signature: sha256=<hex HMAC-SHA256 of the
  body>`` keyed with the notifier's secret file, retrying connection errors, 429 and 5xx
  with exponential backoff;
- runs the rule's ``response`` hook: a webhook (same signing) or a command that gets
  the alert JSON on stdin and must finish within its timeout;
- records every action taken (outcome, attempts, HTTP status / exit code) as a
  ``kind: response`` document in the alerts index, next to the alert it answers.

The queue keeps the batch path fast: a slow webhook never delays an agent's ack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.detect.alerts import response_document
from collector.detect.rules import SEVERITY_RANK, Rule
from collector.detect.settings import NotifierConfig

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CRM-Audit-Signature"

Write = Callable[[Sequence[tuple[str, dict[str, Any]]]], object]


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _secret(path: Path | None) -> bytes | None:
    return path.read_bytes().strip() if path is not None else None


@dataclass(frozen=True)
class Outcome:
    """What one action achieved."""

    ok: bool
    attempts: int
    status_code: int | None
    detail: str


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    secret: bytes | None,
    timeout_s: float,
    max_attempts: int,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """POST `payload`; retry connection errors, 429 and 5xx with exponential backoff."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "crm-audit-collector"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    detail = ""
    status: int | None = None
    for attempt in range(1, max_attempts + 1):
        # The scheme is checked to be http(s) when the config is loaded.
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
                return Outcome(True, attempt, int(answer.status), "delivered")
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                return Outcome(False, attempt, status, detail)
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < max_attempts:
            sleep(min(30.0, backoff_s * 2 ** (attempt - 1)))
    return Outcome(False, max_attempts, status, f"gave up: {detail}")


def run_command(argv: Sequence[str], payload: dict[str, Any], timeout_s: float) -> Outcome:
    """Run `argv` with the alert JSON on stdin; success = exit 0 within the timeout."""
    data = json.dumps(payload, sort_keys=True)
    try:
        done = subprocess.run(
            list(argv), input=data, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome(False, 1, None, f"timed out after {timeout_s:g}s (killed)")
    except OSError as exc:
        return Outcome(False, 1, None, f"cannot run {argv[0]}: {exc.strerror or exc}")
    tail = " ".join((done.stdout + done.stderr).split())[-500:]
    return Outcome(
        done.returncode == 0, 1, done.returncode, f"exit {done.returncode} {tail}".strip()
    )


class Responder:
    """The worker thread that notifies and runs hooks for new alerts (module docstring)."""

    def __init__(
        self,
        notifiers: Sequence[NotifierConfig],
        write: Write,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.notifiers = list(notifiers)
        self.write = write
        self.clock_ns = clock_ns
        self._queue: queue.Queue[tuple[Rule, dict[str, Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="detect-respond", daemon=True)
        self._thread.start()

    def submit(self, rule: Rule, alert_json: dict[str, Any]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((rule, alert_json))

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every submitted alert has been handled (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        self.wait_idle(timeout_s)
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rule, alert = item
            try:
                self.handle(rule, alert)
            except Exception as exc:  # noqa: BLE001 - one bad alert must not stop the worker
                log.error(
                    "response for alert %s failed: %s: %s", alert.get("id"), type(exc).__name__, exc
                )
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def handle(self, rule: Rule, alert: dict[str, Any]) -> None:
        """Notify and run the hook for one alert; record each action."""
        severity = SEVERITY_RANK[str(alert["alert"]["severity"])]
        records: list[tuple[str, dict[str, Any]]] = []
        if rule.notify:
            for notifier in self.notifiers:
                if severity < SEVERITY_RANK[notifier.min_severity]:
                    continue
                outcome = post_json(
                    notifier.url,
                    alert,
                    secret=_secret(notifier.secret_file),
                    timeout_s=notifier.timeout_s,
                    max_attempts=notifier.max_attempts,
                    backoff_s=notifier.backoff_s,
                )
                records.append(self._record(alert, rule, "notify.webhook", notifier.name, outcome))
        hook = rule.response
        if hook is not None and hook.webhook is not None:
            outcome = post_json(
                hook.webhook.url,
                alert,
                secret=_secret(hook.webhook.secret_file),
                timeout_s=hook.webhook.timeout_s,
                max_attempts=hook.webhook.max_attempts,
            )
            records.append(self._record(alert, rule, "response.webhook", hook.webhook.url, outcome))
        elif hook is not None and hook.command is not None:
            outcome = run_command(hook.command.command, alert, hook.command.timeout_s)
            records.append(
                self._record(alert, rule, "response.command", hook.command.command[0], outcome)
            )
        if records:
            self.write(records)

    def _record(
        self, alert: dict[str, Any], rule: Rule, action: str, target: str, outcome: Outcome
    ) -> tuple[str, dict[str, Any]]:
        level = logging.INFO if outcome.ok else logging.WARNING
        log.log(level, "alert %s: %s %s: %s", alert["id"], action, target, outcome.detail)
        return response_document(
            str(alert["id"]),
            rule.id,
            action=action,
            target=target,
            outcome="success" if outcome.ok else "failure",
            attempts=outcome.attempts,
            detail=outcome.detail,
            status_code=outcome.status_code,
            now_unix_nano=self.clock_ns(),
        )
