"""How budgets tell alerts what they have used: sources polled by each evaluation.

The budgets code registers one source, a callable returning the current use of each budget by
name; alerts on metric "budget" read it (the fraction spent / limit). For the moment a soft
limit is passed, see `obsdeco.alerts.evaluator.fire_budget_warning`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

from obsdeco.guard import fault


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
