"""Delivery of alert notifications: a JSON POST to a webhook (retried with exponential
backoff), a Python callable, or a WARNING in the log. Runs on the alert evaluator's thread (or
in `check_alerts()`); a failure is counted and logged at the start and the end of a streak,
never raised."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from obsdeco._version import __version__
from obsdeco.alerts.counters import alert_counters
from obsdeco.alerts.events import AlertEvent
from obsdeco.alerts.rules import LOG, Alert

logger = logging.getLogger("obsdeco.alerts")

WEBHOOK_ATTEMPTS = 4
WEBHOOK_BACKOFF_S = 0.25
"""The wait before the first retry, doubled before each next one."""
WEBHOOK_TIMEOUT_S = 5.0
_RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Streaks:
    """Destinations whose last delivery failed, so a failure is logged once per streak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def failed(self, destination: str) -> bool:
        """Note a failure; True if it starts a streak."""
        with self._lock:
            first = destination not in self._failing
            self._failing.add(destination)
            return first

    def succeeded(self, destination: str) -> bool:
        """Note a success; True if it ends a streak."""
        with self._lock:
            if destination in self._failing:
                self._failing.discard(destination)
                return True
            return False


streaks = _Streaks()


def deliver(alert: Alert, event: AlertEvent, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Send `event` where `alert` says; True when delivered."""
    payload = event.payload()
    if alert.notify == LOG:
        logger.warning("%s", event.text)
        delivered = True
    elif isinstance(alert.notify, str):
        delivered = _post(alert, payload, sleep)
    else:
        delivered = _call(alert, payload)
    alert_counters.add("notifications_sent" if delivered else "notifications_failed")
    return delivered


def _call(alert: Alert, payload: dict[str, object]) -> bool:
    destination = alert.destination
    try:
        alert.notify(payload)  # type: ignore[operator]
    except Exception:
        if streaks.failed(destination):
            logger.exception(
                "obsdeco alert %r: its notifier %s raised (ignored; later failures are counted "
                "in obsdeco.stats().alert_notifications_failed, logged again once it succeeds)",
                alert.name,
                destination,
            )
        return False
    if streaks.succeeded(destination):
        logger.warning("obsdeco alert notifier %s succeeds again", destination)
    return True


def _post(alert: Alert, payload: dict[str, object], sleep: Callable[[float], None]) -> bool:
    url = alert.notify
    assert isinstance(url, str)
    destination = alert.destination
    body = json.dumps(payload).encode()
    delay = WEBHOOK_BACKOFF_S
    problem = ""
    for attempt in range(WEBHOOK_ATTEMPTS):
        if attempt:
            alert_counters.add("notification_retries")
            sleep(delay)
            delay *= 2
        retry, problem = _attempt(url, body)
        if not problem:
            if streaks.succeeded(destination):
                logger.warning("obsdeco alert notifications to %s delivered again", destination)
            return True
        if not retry:
            break
    if streaks.failed(destination):
        logger.warning(
            "obsdeco cannot deliver alert notifications to %s (%s; %d attempts); they are "
            "counted in obsdeco.stats().alert_notifications_failed and logged again once "
            "delivery resumes",
            destination,
            problem,
            attempt + 1,
        )
    return False


def _attempt(url: str, body: bytes) -> tuple[bool, str]:
    """One POST: (worth retrying, what went wrong or "" when delivered)."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"obsdeco/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as error:
        error.close()
        return error.code in _RETRIED_STATUSES, f"HTTP {error.code}"
    except (OSError, ValueError, http.client.HTTPException) as error:
        return True, type(error).__name__
    return False, ""
