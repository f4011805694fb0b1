"""Group commit of ``_bulk`` requests: the writes of concurrent callers (one per agent
stream batch, seal or dead-letter write) merged into one request up to an efficient size.

A caller that finds a free request slot (fewer than ``concurrency`` bulks in flight)
sends at once: a lone stream waits for nothing, and the stream batches in flight keep
OpenSearch's write threads busy side by side as before. Callers that arrive while every
slot is busy queue, and the next bulk takes everything queued, in arrival order, up to
``max_docs`` documents and ``max_bytes`` bytes (a caller's entries may be cut between
two bulks); it starts as soon as a slot is free. So requests are merged exactly when
OpenSearch is the bottleneck (many agents), and never at the cost of parallelism:
measured with one agent end to end (`make bench` e2e, two alternating pairs), holding
bulks back until one was full cost 10-15% of the events/s and ~10% more collector CPU
than starting them in a free slot.

Each caller gets back only its own entries' answers, in its own order, with the HTTP
status of the request that carried them: a request that failed as a whole (no answer,
429, 5xx, a malformed answer) fails every caller it carried, each deciding on its own
whether and when to retry, exactly as if it had sent its entries alone. An exception
raised while sending is raised in every caller the request carried.

Who sends (leader/follower): a caller that may start a bulk sends it on its own thread;
the bulks that become due when one is answered are sent by a thread pool
(``executor``), whose thread goes on with the next while the queue holds one, so a
caller never sends the bulks of callers after it and its wait ends when its last
entry is answered.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")  # what a caller writes (an index request)
A = TypeVar("A")  # one entry's answer


@dataclass(frozen=True, slots=True)
class Part(Generic[R, A]):
    """A caller's entries that travelled in one request, and what came back for them."""

    requests: Sequence[R]
    answers: list[A] | str  # per entry, or why the whole request failed
    status: int  # the request's HTTP status (0: no answer)


class _Ticket(Generic[R, A]):
    """One caller's entries, as they are taken into bulks and answered."""

    __slots__ = ("done", "entries", "error", "left", "parts", "requests", "taken")

    def __init__(self, requests: Sequence[R], entries: Sequence[bytes]) -> None:
        self.requests = requests
        self.entries = entries
        self.taken = 0  # entries handed to a bulk so far
        self.left = len(entries)  # entries not answered yet
        self.parts: list[tuple[int, Part[R, A]]] = []  # (first entry, part)
        self.error: BaseException | None = None
        self.done = threading.Event()


@dataclass(frozen=True, slots=True)
class _Bulk(Generic[R, A]):
    lines: list[bytes]  # the entries, joined into the body outside the lock
    pieces: list[tuple[_Ticket[R, A], int, int]]  # ticket, its entries [start, end)


class BulkGroup(Generic[R, A]):
    """Merges concurrent `send` calls into shared requests (see module doc)."""

    def __init__(
        self,
        # Sends one body of n entries; returns the HTTP status and one answer per entry
        # in body order, or the one-line reason the request failed as a whole.
        exchange: Callable[[bytes, int], tuple[int, list[A] | str]],
        executor: Callable[[], ThreadPoolExecutor],
        *,
        max_docs: int,
        max_bytes: int,
        concurrency: int,
    ) -> None:
        self.exchange = exchange
        self.executor = executor
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._queue: deque[_Ticket[R, A]] = deque()
        self._queued_docs = 0
        self._queued_bytes = 0
        self._in_flight = 0

    @property
    def waiting(self) -> int:
        """Callers whose entries are not all taken into a bulk yet."""
        with self._lock:
            return len(self._queue)

    def send(self, requests: Sequence[R], entries: Sequence[bytes]) -> list[Part[R, A]]:
        """Send `entries` (the encoded `requests`, one each); return their answers, in
        parts in request order, once every entry is answered."""
        if not entries:
            return []
        ticket: _Ticket[R, A] = _Ticket(requests, entries)
        with self._lock:
            self._queue.append(ticket)
            self._queued_docs += len(entries)
            self._queued_bytes += sum(len(entry) for entry in entries)
            ready = self._take()
        if ready:
            # The leader: this caller sends what it found queued itself; more bulks
            # (full ones, beside it) go to the pool.
            self._start(ready[1:])
            self._run(ready[0], follow=False)
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        ticket.parts.sort(key=lambda start_part: start_part[0])
        return [part for _start, part in ticket.parts]

    # -- internals (the queue and counters are guarded by _lock) ----------------------

    def _take(self) -> list[_Bulk[R, A]]:
        """The bulks to start now: whatever is queued, one bulk per free slot (up to
        `concurrency` in flight)."""
        bulks: list[_Bulk[R, A]] = []
        while self._queue and self._in_flight < self.concurrency:
            bulks.append(self._form())
            self._in_flight += 1
        return bulks

    def _form(self) -> _Bulk[R, A]:
        """Take entries from the head of the queue up to the size limits. A single entry
        larger than max_bytes still goes (alone: it cannot be split)."""
        lines: list[bytes] = []
        pieces: list[tuple[_Ticket[R, A], int, int]] = []
        size = 0
        while self._queue:
            ticket = self._queue[0]
            start = end = ticket.taken
            entries = ticket.entries
            while end < len(entries):
                entry = entries[end]
                if lines and (len(lines) >= self.max_docs or size + len(entry) > self.max_bytes):
                    break
                lines.append(entry)
                size += len(entry)
                end += 1
            if end > start:
                pieces.append((ticket, start, end))
                ticket.taken = end
            if end < len(entries):
                break  # the bulk is full
            self._queue.popleft()
        self._queued_docs -= len(lines)
        self._queued_bytes -= size
        return _Bulk(lines, pieces)

    def _start(self, bulks: Sequence[_Bulk[R, A]]) -> None:
        for bulk in bulks:
            try:
                self.executor().submit(self._run, bulk, follow=True)
            except RuntimeError:  # the pool shut down meanwhile (close): send it here
                self._run(bulk, follow=True)

    def _run(self, bulk: _Bulk[R, A], *, follow: bool) -> None:
        """Send `bulk` and answer its callers; then start what the queue holds now (with
        `follow`, a pool thread, the first of it on this thread)."""
        while True:
            try:
                status, answers = self.exchange(b"".join(bulk.lines), len(bulk.lines))
            except BaseException as exc:  # noqa: BLE001 - raised in every caller instead
                self._answer_error(bulk, exc)
            else:
                self._answer(bulk, status, answers)
            with self._lock:
                self._in_flight -= 1
                ready = self._take()
            if not ready:
                return
            if not follow:
                self._start(ready)
                return
            self._start(ready[1:])
            bulk = ready[0]

    def _answer(self, bulk: _Bulk[R, A], status: int, answers: list[A] | str) -> None:
        offset = 0
        with self._lock:
            for ticket, start, end in bulk.pieces:
                count = end - start
                mine = answers if isinstance(answers, str) else answers[offset : offset + count]
                offset += count
                ticket.parts.append((start, Part(ticket.requests[start:end], mine, status)))
                self._settle(ticket, count)

    def _answer_error(self, bulk: _Bulk[R, A], exc: BaseException) -> None:
        with self._lock:
            for ticket, start, end in bulk.pieces:
                ticket.error = exc
                self._settle(ticket, end - start)

    @staticmethod
    def _settle(ticket: _Ticket[R, A], answered: int) -> None:
        ticket.left -= answered
        if ticket.left == 0:
            ticket.done.set()
