"""Alerts at work: the background evaluator thread, and the public functions `check_alerts` and
`get_alerts`.

The thread starts when `configure(alerts=[...])` is called and evaluates every rule each
`alert_interval_s` seconds (0: only when `check_alerts()` is called), reading what is stored;
the caller's threads never wait for it. A forked child does not start one (its parent
evaluates the same store).
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import UTC, datetime

from obsdeco.alerts import budget_usage
from obsdeco.alerts.evaluator import Evaluator
from obsdeco.alerts.events import AlertEvent
from obsdeco.collector import checked_range
from obsdeco.config import Settings, get_settings, settings_holder
from obsdeco.guard import fault
from obsdeco.models import checked_name
from obsdeco.runtime import flush, get_runtime

MAX_LISTED = 10_000


class AlertService:
    """Owns the evaluator and the thread that runs it."""

    def __init__(self) -> None:
        self.evaluator = Evaluator()
        self._wake = threading.Event()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._may_start = True

    def settings_replaced(self, settings: Settings) -> None:
        """Start the thread when alerts are first configured; wake it to read new settings."""
        if settings.alerts and self._may_start:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="obsdeco-alerts", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        """Have the thread look at the budget warnings queued."""
        self._wake.set()

    def run_once(self, now: datetime, *, measured: bool = True) -> list[AlertEvent]:
        """One evaluation (or, not `measured`, only the waiting budget warnings)."""
        with self.evaluator.lock:
            warnings = budget_usage.take_warnings()
            settings = get_settings()
            if not settings.alerts or not (measured or warnings):
                return []
            return self.evaluator.evaluate(
                settings, get_runtime().backend, now, warnings, measured=measured
            )

    def _run(self) -> None:
        seen: Settings | None = None
        due = math.inf
        while True:
            settings = get_settings()
            if settings is not seen:
                seen = settings
                interval = settings.alert_interval_s if settings.alerts else 0.0
                due = time.monotonic() + interval if interval else math.inf
            timeout = None if due == math.inf else max(0.0, due - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            measured = time.monotonic() >= due
            if measured:
                due = time.monotonic() + seen.alert_interval_s
            try:
                self.run_once(datetime.now(UTC), measured=measured)
            except Exception:
                fault("alert evaluator")

    def after_fork_in_child(self) -> None:
        self.evaluator = Evaluator()
        self._wake = threading.Event()
        self._start = threading.Lock()
        self._thread = None
        self._may_start = False


service = AlertService()
settings_holder.add_listener(service.settings_replaced)
budget_usage.on_warning(service.wake)
os.register_at_fork(after_in_child=service.after_fork_in_child)


def check_alerts(now: datetime | None = None) -> list[AlertEvent]:
    """Evaluate every configured alert once, on this thread, and return what fired or resolved.

    Records still queued are stored first. `now` (timezone-aware; default: the current time)
    is the end of every rule's window, so tests and backfills can move time. The background
    evaluator does the same every `alert_interval_s` seconds.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (e.g. datetime.now(UTC)), got {now!r}")
    flush()
    return service.run_once(now if now is not None else datetime.now(UTC))


def get_alerts(
    since: datetime | None = None,
    name: str | None = None,
    project: str | None = None,
    limit: int = 100,
) -> list[AlertEvent]:
    """The stored alert events, newest first: fired at or after `since`, of the alert `name`,
    for `project` (each when given), at most `limit`."""
    checked_range(since, None)
    if name is not None:
        name = checked_name(name, "name")
    if project is not None:
        project = checked_name(project, "project")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTED:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LISTED:,}, got {limit!r}")
    return get_runtime().backend.query_alert_events(
        since=since, name=name, project=project, limit=limit
    )
