"""What hard budgets did in this process, for `obsdeco.stats()`.

A module of its own so that the runtime can report the counts without importing the budgets
(which use the runtime).
"""

from __future__ import annotations

import threading
from typing import Literal

BudgetEvent = Literal["refused", "unestimated", "unreachable"]


class BudgetCounts:
    """Calls refused by a budget, let through unestimated, or let through because their
    project budget's accounts could not be reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refused = 0
        self.unestimated = 0
        self.unreachable = 0

    def add(self, event: BudgetEvent) -> None:
        with self._lock:
            setattr(self, event, getattr(self, event) + 1)

    def snapshot(self) -> tuple[int, int, int]:
        """(refused, unestimated, unreachable), read together."""
        with self._lock:
            return self.refused, self.unestimated, self.unreachable


budget_counts = BudgetCounts()
