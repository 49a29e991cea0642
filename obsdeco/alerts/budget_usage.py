"""How budgets tell alerts what they use, for the budgets code (a module of few imports):

- `register_budget_metric(source)`: `source()` returns the current use of each budget by name,
  read at each evaluation by alerts on metric "budget" (the fraction spent / limit);
- `fire_budget_warning(...)`: a budget has just passed its soft limit; budget alerts in breach
  fire on the evaluator's thread. It never blocks and never raises.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from obsdeco.config import get_settings
from obsdeco.guard import fault, guarded


class BudgetUsage(NamedTuple):
    """What a budget has used of its limit (in its current window)."""

    spent_usd: float
    limit_usd: float
    soft_usd: float | None = None

    @property
    def fraction(self) -> float:
        """spent / limit (0 for a zero limit with nothing spent)."""
        if self.limit_usd <= 0:
            return 0.0 if self.spent_usd <= 0 else float("inf")
        return self.spent_usd / self.limit_usd

    @property
    def soft_fraction(self) -> float | None:
        """soft_usd / limit: the threshold of budget alerts that give no `above`."""
        if self.soft_usd is None or self.limit_usd <= 0:
            return None
        return self.soft_usd / self.limit_usd


BudgetSource = Callable[[], Mapping[str, BudgetUsage]]
"""Returns budget name -> its use now; called on the alert evaluator's thread."""

_sources: list[BudgetSource] = []
_lock = threading.Lock()


def register_budget_metric(source: BudgetSource) -> None:
    """Make alerts on metric "budget" read budget use from `source()` at each evaluation."""
    if not callable(source):
        raise ValueError(f"source must be callable, got {type(source).__name__}")
    with _lock:
        if source not in _sources:
            _sources.append(source)


def unregister_budget_metric(source: BudgetSource) -> None:
    """Stop reading `source` (no error if it was not registered)."""
    with _lock:
        if source in _sources:
            _sources.remove(source)


def budget_usages() -> dict[str, BudgetUsage]:
    """Every registered source's budgets; a source that raises is noted as a fault and
    skipped."""
    with _lock:
        sources = list(_sources)
    found: dict[str, BudgetUsage] = {}
    for source in sources:
        try:
            found.update(source())
        except Exception:
            fault("alerts budget source")
    return found


@dataclass(frozen=True, slots=True)
class BudgetWarning:
    """A budget passed its soft limit."""

    budget: str
    usage: BudgetUsage
    at: datetime


_warnings: deque[BudgetWarning] = deque()
_wake: list[Callable[[], None]] = []


def on_warning(wake: Callable[[], None]) -> None:
    """Call `wake()` after each warning is queued (the evaluator's thread registers)."""
    _wake.append(wake)


def take_warnings() -> list[BudgetWarning]:
    """The warnings queued so far, oldest first, removed from the queue."""
    taken = []
    while _warnings:
        taken.append(_warnings.popleft())
    return taken


@guarded()
def fire_budget_warning(
    budget_name: str, spent_usd: float, limit_usd: float, soft_usd: float | None
) -> None:
    """`budget_name` has passed its soft limit, having spent `spent_usd` of `limit_usd`: alerts
    on metric "budget" watching it (or any budget) fire if the fraction used passes their
    threshold (`above`, else soft / limit). Queued for the evaluator's thread: never blocks,
    never raises; a no-op without budget alerts."""
    if any(alert.metric == "budget" for alert in get_settings().alerts):
        usage = BudgetUsage(float(spent_usd), float(limit_usd), soft_usd)
        _warnings.append(BudgetWarning(budget_name, usage, datetime.now(UTC)))
        for wake in _wake:
            wake()


def _after_fork_in_child() -> None:
    _warnings.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
