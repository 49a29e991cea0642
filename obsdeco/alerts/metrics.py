"""A rule's metric over its trailing window, computed by the store from its rollups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from obsdeco.alerts.budget_usage import BudgetUsage
from obsdeco.alerts.rules import Alert
from obsdeco.analyzers import PriceTable
from obsdeco.analyzers.project import priced_groups
from obsdeco.storage.base import CallFilter, ReportStore


@dataclass(frozen=True, slots=True)
class Measurement:
    """A rule's value now and the threshold it is judged against.

    `known` is False when the value cannot be told (a budget no source reports): the rule
    then keeps its state. A value of None that is known (no calls in the window for a rate or
    a percentile) is not in breach.
    """

    value: float | None
    threshold: float | None
    known: bool = True
    budget: str | None = None

    def breached(self, alert: Alert) -> bool:
        if self.value is None or self.threshold is None:
            return False
        if alert.direction == "below":
            return self.value < self.threshold
        return self.value > self.threshold


def measure(
    alert: Alert,
    backend: ReportStore,
    prices: PriceTable,
    now: datetime,
    budgets: dict[str, BudgetUsage],
) -> Measurement:
    """`alert`'s metric over [now - window, now); for "budget", from `budgets`."""
    if alert.metric == "budget":
        return budget_measurement(alert, budgets)
    where = CallFilter(project=alert.project, since=now - alert.duration, until=now)
    threshold = alert.threshold
    if alert.metric == "cost_usd":
        _, row_cost, _ = priced_groups(backend, where, prices, ())
        return Measurement(sum(cost or 0.0 for cost in row_cost.values()), threshold)
    if alert.metric == "latency_p95_ms":
        found = backend.quantiles(where, "latency_ms", (0.95,))[None].get(None)
        return Measurement(None if found is None else found.values[0], threshold)
    rows = backend.aggregate_calls(where)
    calls = sum(row.calls for row in rows)
    if alert.metric == "calls":
        return Measurement(float(calls), threshold)
    errors = sum(row.errors for row in rows)
    return Measurement(errors / calls if calls else None, threshold)


def budget_measurement(alert: Alert, budgets: dict[str, BudgetUsage]) -> Measurement:
    """The budget `alert` watches (any: the one most in breach, else the most used)."""
    named = [
        (name, usage)
        for name, usage in sorted(budgets.items())
        if alert.budget is None or name == alert.budget
    ]
    if not named:
        return Measurement(None, alert.threshold, known=False)
    candidates = [
        Measurement(usage.fraction, _budget_threshold(alert, usage), budget=name)
        for name, usage in named
    ]
    return max(
        candidates,
        key=lambda found: (found.breached(alert), found.value or 0.0),
    )


def _budget_threshold(alert: Alert, usage: BudgetUsage) -> float | None:
    return alert.above if alert.above is not None else usage.soft_fraction
