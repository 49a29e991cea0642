"""The process-wide pipeline: the settings in force, their storage backend and writer.

Built lazily on first use and rebuilt when `configure()` replaces the settings; a replaced
writer drains what it already holds into its own database before it stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial

from pydantic import BaseModel

from obsdeco.alerts.counters import alert_counters
from obsdeco.analyzers import PriceTable, session_totals
from obsdeco.config import Settings, get_settings, settings_holder
from obsdeco.engine.cache_store import cache_counters, cache_pending, close_caches, flush_caches
from obsdeco.engine.counters import engine_counters
from obsdeco.guard import internal_faults
from obsdeco.maintenance import RetentionRunner, start_retention
from obsdeco.models import Session
from obsdeco.otlp import registry as exports
from obsdeco.privacy.store import open_store
from obsdeco.shutdown import ExitHooks
from obsdeco.storage import StorageBackend
from obsdeco.writer import Record, Writer, WriterCounters, wait_all

logger = logging.getLogger("obsdeco")

_EXIT_JOIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    backend: StorageBackend
    writer: Writer
    prices: PriceTable
    """The price table of these settings (their pricing overrides over genai-prices)."""
    implicit_sessions: dict[tuple[str, date], Session] = field(default_factory=dict)
    """The implicit sessions whose rows this runtime's database has been sent."""
    retention: RetentionRunner | None = None
    """The thread applying `retention_days` to this database (None: everything is kept)."""


class Stats(BaseModel):
    """What happened to the records of this process (see `obsdeco.stats()`)."""

    written: int
    pending: int
    dropped: int
    dropped_queue_full: int
    dropped_rejected: int
    dropped_at_exit: int
    write_retries: int
    metadata_values_converted: int
    """Metadata values JSON cannot hold, stored as text."""
    metadata_values_dropped: int
    """Metadata values that could not be stored at all (NaN, infinity, unserialisable)."""
    unsampled_sessions: int
    unsampled_records: int
    queue_bound: int
    last_error: str | None
    internal_faults: int
    """obsdeco faults swallowed so that your code was unaffected (each place logged once)."""
    cache_pending: int
    """Responses `obsdeco.cache()` stored and not yet written to its backend."""
    cache_errors: int
    """Response-cache backend operations that failed, and cached values that could not be read
    (another key, damaged); each a miss or a dropped write, never an error of yours."""
    cache_writes_dropped: int
    """Responses that were to be cached but were not written (backend fault, too many pending)."""
    routes_stopped: int
    """Route rules stopped by their quality guard (their routed calls' quality fell too low)."""
    alerts_fired: int = 0
    alerts_resolved: int = 0
    alert_notifications_sent: int = 0
    alert_notifications_failed: int = 0
    """Not delivered: a webhook that failed every attempt, a callable notifier that raised."""
    alert_notification_retries: int = 0
    alert_evaluation_errors: int = 0
    """Alert evaluations, or stores of their events, that failed (e.g. the database down)."""
    exported_spans: int = 0
    """Spans the OTLP endpoint accepted (`otlp_endpoint`)."""
    export_failed: int = 0
    """Spans the OTLP endpoint did not accept: unreachable, refused, too slow (the records are
    stored all the same)."""
    export_metrics_failed: int = 0
    """Metric exports the OTLP endpoint did not accept."""
    export_dropped: int = 0
    """Stored calls and agent spans never exported: more were waiting than the exporter holds
    (`max_queue_size`)."""
    budget_refusals: int
    """LLM calls refused by a budget (`BudgetExceeded`), never sent."""
    budget_unestimated: int
    """LLM calls let through outside every budget: their worst case could not be known."""
    budget_unreachable: int
    """Reservations let through because a project budget's accounts could not be reached."""


class _Pipeline:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Runtime | None = None
        self._retired: list[Writer] = []
        self.counters = WriterCounters()
        self.unsampled_sessions = 0
        self.unsampled_records = 0

    def get(self) -> Runtime:
        settings = get_settings()
        current = self._current
        if current is not None and current.settings is settings:
            return current
        with self._lock:
            current = self._current
            if current is None or current.settings is not settings:
                if current is not None:
                    current.writer.stop()
                    if current.retention is not None:
                        current.retention.stop()
                    self._retired.append(current.writer)
                backend = open_store(settings, self.counters.add)
                prices = PriceTable(settings.pricing_overrides)
                export = exports.open_export(settings, prices)
                writer = Writer(
                    backend,
                    self.counters,
                    partial(session_totals, prices=prices),
                    max_queue_size=settings.max_queue_size,
                    batch_size=settings.batch_size,
                    listener=export,
                )
                current = self._current = Runtime(
                    settings, backend, writer, prices, retention=start_retention(backend, settings)
                )
                exit_hooks.install()
            return current

    def submit(self, record: Record) -> None:
        """Queue a record for the writer of the settings in force (the hot path)."""
        current = self._current
        if current is None or current.settings is not settings_holder.current:
            current = self.get()
        current.writer.submit(record)

    def defer(self, work: Callable[[], None]) -> bool:
        """Run `work` on the writer thread soon; safe to call from a finaliser. False when no
        writer runs to do it."""
        current = self._current
        return current is not None and current.writer.defer(work)

    def writers(self) -> list[Writer]:
        with self._lock:
            self._retired = [writer for writer in self._retired if writer.alive]
            live = [*self._retired]
            if self._current is not None:
                live.append(self._current.writer)
            return live

    def count_unsampled(self, sessions: int = 0, records: int = 0) -> None:
        with self._lock:
            self.unsampled_sessions += sessions
            self.unsampled_records += records

    def stats(self) -> Stats:
        writers = self.writers()
        counters = self.counters
        cache = cache_counters()
        with cache.lock:
            cache_errors, cache_writes_dropped = cache.errors, cache.writes_dropped
        export = exports.counters
        with export.lock:
            exported_spans, export_failed = export.exported_spans, export.export_failed
            export_dropped, export_metrics_failed = (
                export.export_dropped,
                export.export_metrics_failed,
            )
        engine = engine_counters.snapshot()
        with counters.lock:
            dropped = (
                counters.dropped_queue_full + counters.dropped_rejected + counters.dropped_at_exit
            )
            return Stats(
                written=counters.written,
                pending=sum(writer.pending for writer in writers),
                dropped=dropped,
                dropped_queue_full=counters.dropped_queue_full,
                dropped_rejected=counters.dropped_rejected,
                dropped_at_exit=counters.dropped_at_exit,
                write_retries=counters.write_retries,
                metadata_values_converted=counters.metadata_values_converted,
                metadata_values_dropped=counters.metadata_values_dropped,
                unsampled_sessions=self.unsampled_sessions,
                unsampled_records=self.unsampled_records,
                queue_bound=get_settings().max_queue_size,
                last_error=counters.last_error,
                internal_faults=internal_faults(),
                cache_pending=cache_pending(),
                cache_errors=cache_errors,
                cache_writes_dropped=cache_writes_dropped,
                routes_stopped=engine.routes_stopped,
                alerts_fired=alert_counters.fired,
                alerts_resolved=alert_counters.resolved,
                alert_notifications_sent=alert_counters.notifications_sent,
                alert_notifications_failed=alert_counters.notifications_failed,
                alert_notification_retries=alert_counters.notification_retries,
                alert_evaluation_errors=alert_counters.evaluation_errors,
                exported_spans=exported_spans,
                export_failed=export_failed,
                export_dropped=export_dropped,
                export_metrics_failed=export_metrics_failed,
                budget_refusals=engine.budget_refusals,
                budget_unestimated=engine.budget_unestimated,
                budget_unreachable=engine.budget_unreachable,
            )

    def flush_at_exit(self) -> None:
        timeout = get_settings().flush_at_exit_timeout_s
        deadline = time.monotonic() + timeout
        self._flush_records_at_exit(timeout)
        exports.wait_exports_closed(max(0.0, deadline - time.monotonic()))
        # The cache's writer threads are daemons too: what they hold is written now or never.
        close_caches(max(0.0, deadline - time.monotonic()))

    def _flush_records_at_exit(self, timeout: float) -> None:
        writers = self.writers()
        if not writers:
            return
        lost = 0 if wait_all(writers, timeout) else sum(w.discard_pending() for w in writers)
        if lost:
            self.counters.add("dropped_at_exit", lost)
            logger.error(
                "obsdeco could not store %d records within %.1f s at exit (%s); they are lost",
                lost,
                timeout,
                self.counters.last_error or "database too slow",
            )
        # Let the writer threads finish before the interpreter tears down: a daemon thread
        # caught inside a database driver during finalisation can abort the process.
        for writer in writers:
            writer.stop()
        for writer in writers:
            writer.join(_EXIT_JOIN_TIMEOUT_S)
        self._log_drops_at_exit()

    def _log_drops_at_exit(self) -> None:
        counters = self.counters
        with counters.lock:
            queue_full, rejected = counters.dropped_queue_full, counters.dropped_rejected
            at_exit = counters.dropped_at_exit
        if queue_full or rejected or at_exit:
            logger.error(
                "obsdeco at exit: %d records of this process were dropped (%d: queue full, "
                "%d: rejected by the database, %d: not stored in time at exit); written: %d",
                queue_full + rejected + at_exit,
                queue_full,
                rejected,
                at_exit,
                counters.written,
            )

    def reset_after_fork(self) -> None:
        """A forked child inherits the parent's queue but not its thread: start clean."""
        self._lock = threading.Lock()
        self._current = None
        self._retired = []
        self.counters = WriterCounters()
        self.unsampled_sessions = 0
        self.unsampled_records = 0


pipeline = _Pipeline()
exit_hooks = ExitHooks(
    pipeline.flush_at_exit,
    lambda timeout: flush(timeout),
    lambda: get_settings().flush_at_exit_timeout_s,
)


def _after_fork_in_child() -> None:
    pipeline.reset_after_fork()
    exports.reset_after_fork()
    exit_hooks.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_runtime() -> Runtime:
    """The pipeline for the settings in force."""
    return pipeline.get()


def flush(timeout: float | None = None) -> bool:
    """Block until every record made so far is stored, and every response cached so far is
    written to the cache's backend; False if `timeout` (s) ran out first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if not wait_all(pipeline.writers(), timeout):
        return False
    return flush_caches(None if deadline is None else max(0.0, deadline - time.monotonic()))


def stats() -> Stats:
    """Counts of records written, pending, dropped (by reason) and left out by sampling."""
    return pipeline.stats()
