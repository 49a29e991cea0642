"""Counts of what alerts did in this process (reported by `obsdeco.stats()`)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, fields


@dataclass
class AlertCounters:
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    fired: int = 0
    resolved: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    """Notifications not delivered: a webhook that failed every attempt, a callable that
    raised."""
    notification_retries: int = 0
    evaluation_errors: int = 0
    """Evaluations (or stores of their events) that failed, e.g. with the database down."""

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def reset(self) -> None:
        self.lock = threading.Lock()
        for counter in fields(self):
            if counter.name != "lock":
                setattr(self, counter.name, 0)


alert_counters = AlertCounters()
os.register_at_fork(after_in_child=alert_counters.reset)
