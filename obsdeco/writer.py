"""The background writer: a bounded in-memory queue drained into storage in batches.

Callers only append to the queue (never touching the database); one daemon thread takes
batches off it and commits each in one transaction. While the database is unreachable the
writer retries the same batch with exponential backoff and the queue keeps the records, up to
its bound; records beyond it are dropped, counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from obsdeco.models import (
    AgentSpan,
    LLMCall,
    PendingCall,
    Score,
    Session,
    Totals,
    materialized,
)
from obsdeco.storage import RecordWriter, SessionState, TransientStorageError, WriteBatch

logger = logging.getLogger("obsdeco.writer")


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """An ended session and its calls; the writer turns it into the row with its aggregates."""

    session: Session
    calls: list[LLMCall]


@dataclass(frozen=True, slots=True)
class Deferred:
    """Work to run on the writer thread (used where recording in place is unsafe)."""

    run: Callable[[], None]


class CommitListener(Protocol):
    """Told, on the writer thread, of each batch once it is committed (the OTLP export);
    it must return quickly."""

    def committed(self, batch: WriteBatch) -> None: ...

    def closed(self) -> None:
        """The writer has ended: nothing more will be committed."""


Summarize = Callable[[Session, list[LLMCall]], Totals]
Record = LLMCall | PendingCall | AgentSpan | Score | SessionState | SessionEnd | Deferred

_DROP_LOG_INTERVAL_S = 10.0

_TRANSIENT_ERRORS = (TransientStorageError, ConnectionError, TimeoutError, OSError)
"""What a backend raises when the database is briefly unavailable (the batch is retried)."""


@dataclass
class WriterCounters:
    """Process-wide counts shared by every writer (reported by `obsdeco.stats()`)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    written: int = 0
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    dropped_at_exit: int = 0
    write_retries: int = 0
    metadata_values_converted: int = 0
    metadata_values_dropped: int = 0
    last_error: str | None = None

    def add(self, name: str, amount: int) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Writer:
    """Owns one backend and the thread that writes to it."""

    def __init__(
        self,
        backend: RecordWriter,
        counters: WriterCounters,
        summarize: Summarize,
        *,
        max_queue_size: int,
        batch_size: int,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        linger_s: float = 0.05,
        listener: CommitListener | None = None,
    ) -> None:
        self.backend = backend
        self._listener = listener
        self._summarize = summarize
        self.max_queue_size = max_queue_size
        self._batch_size = batch_size
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._linger_s = linger_s
        self._counters = counters
        self._queue: deque[Record | _FlushMarker] = deque()
        self._in_flight = 0
        self._wakeup = threading.Event()
        self._urgent = threading.Event()
        self._stopping = False
        self._abandoned = False
        self._closing = threading.Lock()
        self._closed = False
        self._retry_now = threading.Event()
        self._drops_reported: int | None = None
        """Queue-full drops logged so far (None until the first one)."""
        self._last_drop_log = 0.0
        self._thread = threading.Thread(target=self._run, name="obsdeco-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records held and not yet committed: queued, or in the batch being written."""
        return len(self._queue) + self._in_flight

    @property
    def alive(self) -> bool:
        return not self._closed

    def submit(self, record: Record) -> bool:
        """Queue a record without blocking; False (and counted) if the queue is full."""
        if self._closed or len(self._queue) + self._in_flight >= self.max_queue_size:
            self._drop_queue_full()
            return False
        queue = self._queue
        queue.append(record)
        if not self._wakeup.is_set():
            self._wakeup.set()
        elif len(queue) >= self._batch_size and not self._urgent.is_set():
            self._urgent.set()
        return True

    def _drop_queue_full(self) -> None:
        counters = self._counters
        counters.add("dropped_queue_full", 1)
        if self._drops_reported is None:
            self._drops_reported = 0
            self._last_drop_log = time.monotonic()
            logger.warning(
                "obsdeco is dropping records: its queue is full (%d records held; %s); "
                "the number dropped is logged every %.0f s while it lasts, and at exit",
                self.max_queue_size,
                "the database is down: " + counters.last_error
                if counters.last_error
                else "records arrive faster than the database stores them",
                _DROP_LOG_INTERVAL_S,
            )

    def _report_drops(self, *, final: bool = False) -> None:
        """On the writer thread: log how many records were dropped since the last report."""
        if self._drops_reported is None:
            return
        now = time.monotonic()
        if not final and now - self._last_drop_log < _DROP_LOG_INTERVAL_S and self._queue:
            return
        dropped = self._counters.dropped_queue_full
        if dropped > self._drops_reported:
            logger.warning(
                "obsdeco dropped %d records (queue full) in the last %.1f s; %d in all",
                dropped - self._drops_reported,
                now - self._last_drop_log,
                dropped,
            )
            self._drops_reported = dropped
        self._last_drop_log = now

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is committed; False on timeout.

        While the database is down, a flush also cuts short the writer's retry backoff.
        """
        marker = _FlushMarker()
        with self._closing:
            if self._closed:
                return not self._queue
            self._queue.append(marker)
        self._urgent.set()
        self._wakeup.set()
        self._retry_now.set()
        return marker.done.wait(timeout)

    def stop(self) -> None:
        """Drain what is queued, then end the thread and release the backend."""
        self._stopping = True
        self._urgent.set()
        self._wakeup.set()

    def join(self, timeout: float) -> None:
        """Wait for the writer thread to end (after `stop()`)."""
        self._thread.join(timeout)

    def discard_pending(self) -> int:
        """Give up on what is held (at exit, after the flush timed out); returns the count.

        The batch being retried is abandoned too, so that the thread can end.
        """
        self._abandoned = True
        self._retry_now.set()
        lost = self._in_flight
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:  # the writer thread may take the last item meanwhile
                break
            if isinstance(item, _FlushMarker):
                item.done.set()
            else:
                lost += 1
        return lost

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wakeup.wait()
            # Linger briefly so that records arriving one by one are committed together,
            # unless a flush, a stop or a full batch makes it urgent.
            self._urgent.wait(self._linger_s)
            self._urgent.clear()
            self._wakeup.clear()
            while self._queue:
                batch, markers = self._take_batch()
                if batch:
                    self._commit(batch)
                self._in_flight = 0
                self._report_drops()
                for marker in markers:
                    marker.done.set()
            if self._stopping:
                with self._closing:
                    if self._queue:
                        continue
                    self._closed = True
                self._report_drops(final=True)
                self.backend.close()
                if self._listener is not None:
                    self._listener.closed()
                return

    def _take_batch(self) -> tuple[WriteBatch, list[_FlushMarker]]:
        batch = WriteBatch()
        markers: list[_FlushMarker] = []
        queue = self._queue
        taken = 0
        while queue and taken < self._batch_size:
            # Counted before it leaves the queue, so the bound is never exceeded.
            self._in_flight += 1
            item = queue.popleft()
            kind = type(item)
            if kind is LLMCall:
                batch.calls.append(item)  # type: ignore[arg-type]
            elif kind is SessionEnd:
                batch.sessions.append(self._ended(item))  # type: ignore[arg-type]
            elif kind is SessionState:
                batch.sessions.append(item)  # type: ignore[arg-type]
            elif kind is AgentSpan:
                batch.spans.append(item)  # type: ignore[arg-type]
            elif kind is Score:
                batch.scores.append(item)  # type: ignore[arg-type]
            elif isinstance(item, PendingCall):
                batch.calls.append(item.materialize())
            elif kind is Deferred:
                self._in_flight -= 1
                self._run_deferred(item)  # type: ignore[arg-type]
                continue
            else:
                self._in_flight -= 1
                markers.append(item)  # type: ignore[arg-type]
                break
            taken += 1
        return batch, markers

    def defer(self, work: Callable[[], None]) -> bool:
        """Queue `work` for the writer thread, without waking it (no lock is taken); False when
        the thread has ended."""
        if self._closed:
            return False
        self._queue.append(Deferred(work))
        return True

    @staticmethod
    def _run_deferred(deferred: Deferred) -> None:
        try:
            deferred.run()
        except Exception:
            logger.exception("obsdeco deferred work failed")

    def _ended(self, end: SessionEnd) -> SessionState:
        try:
            totals = self._summarize(end.session, materialized(end.calls))
        except Exception:
            logger.exception(
                "obsdeco could not compute the aggregates of session %s", end.session.id
            )
            totals = Totals(calls=len(end.calls), duration_ms=end.session.duration_ms)
        return SessionState(end.session, totals)

    def _commit(self, batch: WriteBatch) -> None:
        delay = self._retry_initial_s
        outage_logged = False
        while True:
            try:
                self.backend.write(batch)
            except _TRANSIENT_ERRORS as exc:
                if self._abandoned:
                    return
                self._counters.add("write_retries", 1)
                self._counters.last_error = f"{type(exc).__name__}: {exc}"
                if not outage_logged:
                    logger.warning(
                        "obsdeco cannot reach its database (%s); keeping %d records and retrying",
                        type(exc).__name__,
                        self.pending,
                    )
                    outage_logged = True
                self._retry_now.wait(delay)
                self._retry_now.clear()
                delay = min(delay * 2, self._retry_max_s)
            except Exception as exc:
                self._counters.last_error = f"{type(exc).__name__}: {exc}"
                self._commit_one_by_one(batch)
                return
            else:
                if outage_logged:
                    logger.warning("obsdeco database reachable again; writing resumed")
                    self._counters.last_error = None
                self._counters.add("written", len(batch))
                self._tell(batch)
                return

    def _commit_one_by_one(self, batch: WriteBatch) -> None:
        """Isolate the records a store rejects (bad data), so they cannot block the rest."""
        singles = [
            *(WriteBatch(sessions=[state]) for state in batch.sessions),
            *(WriteBatch(calls=[call]) for call in batch.calls),
            *(WriteBatch(spans=[span]) for span in batch.spans),
            *(WriteBatch(scores=[score]) for score in batch.scores),
        ]
        for single in singles:
            try:
                self.backend.write(single)
            except _TRANSIENT_ERRORS:
                self._commit(single)
            except Exception as exc:
                self._counters.add("dropped_rejected", 1)
                logger.error("obsdeco storage rejected a record and dropped it: %s", exc)
            else:
                self._counters.add("written", 1)
                self._tell(single)

    def _tell(self, batch: WriteBatch) -> None:
        if self._listener is None:
            return
        try:
            self._listener.committed(batch)
        except Exception:
            logger.exception("obsdeco could not hand committed records to its exporter")


def wait_all(writers: list[Writer], timeout: float | None) -> bool:
    """Flush several writers within one overall timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for writer in writers:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not writer.flush(remaining):
            return False
    return True
