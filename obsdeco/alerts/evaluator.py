"""The alert state machine: each rule fires once when its metric crosses its threshold and once
when it resolves. A rule's state is kept between evaluations and, when a rule is first seen,
taken from the last event stored for it (so a restart does not fire it again)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from obsdeco.alerts.budget_usage import BudgetWarning, budget_usages
from obsdeco.alerts.counters import alert_counters
from obsdeco.alerts.events import AlertEvent
from obsdeco.alerts.metrics import Measurement, budget_measurement, measure
from obsdeco.alerts.notify import deliver
from obsdeco.alerts.rules import Alert
from obsdeco.analyzers import PriceTable
from obsdeco.config import Settings
from obsdeco.guard import fault
from obsdeco.storage.base import ReportStore

logger = logging.getLogger("obsdeco.alerts")


@dataclass(slots=True)
class _RuleState:
    alert: Alert
    firing: bool


class Evaluator:
    """The rules' states and their evaluation; callers hold `lock` (one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._store: str | None = None
        self._states: dict[str, _RuleState] = {}
        self._failing = False
        """Whether the last evaluation failed somewhere (logged once until one succeeds)."""
        self._failed_now = False

    def evaluate(
        self,
        settings: Settings,
        backend: ReportStore,
        now: datetime,
        warnings: list[BudgetWarning],
        *,
        measured: bool = True,
    ) -> list[AlertEvent]:
        """Apply the budget warnings, then (if `measured`) measure every rule at `now`;
        store and send each transition. Returns the transitions."""
        self._failed_now = False
        try:
            self._sync(settings, backend)
        except Exception as error:
            self._failed("read the alerts' last states", error)
            return []
        events: list[AlertEvent] = []
        for warning in warnings:
            for alert in settings.alerts:
                if alert.metric == "budget" and alert.budget in (None, warning.budget):
                    found = budget_measurement(alert, {warning.budget: warning.usage})
                    if found.breached(alert):
                        events += self._transition(alert, found, warning.at, backend)
        if not measured:
            return events
        prices = PriceTable(settings.pricing_overrides)
        budgets = budget_usages() if any(a.metric == "budget" for a in settings.alerts) else {}
        for alert in settings.alerts:
            try:
                found = measure(alert, backend, prices, now, budgets)
            except Exception as error:
                self._failed(f"measure alert {alert.name!r}", error)
                continue
            events += self._transition(alert, found, now, backend)
        if self._failing and not self._failed_now:
            self._failing = False
            logger.warning("obsdeco alerts are evaluated again")
        return events

    def _sync(self, settings: Settings, backend: ReportStore) -> None:
        """Keep the states of the rules still configured unchanged; take the others' from the
        store (a new store: all of them)."""
        if settings.database_url != self._store:
            self._states, self._store = {}, settings.database_url
        wanted = {alert.name: alert for alert in settings.alerts}
        states = {
            name: state
            for name, state in self._states.items()
            if name in wanted and state.alert == wanted[name]
        }
        missing = [name for name in wanted if name not in states]
        if missing:
            last = {event.alert: event for event in backend.latest_alert_events()}
            for name in missing:
                event = last.get(name)
                states[name] = _RuleState(
                    wanted[name], event is not None and event.state == "firing"
                )
        self._states = states

    def _transition(
        self, alert: Alert, found: Measurement, at: datetime, backend: ReportStore
    ) -> list[AlertEvent]:
        state = self._states[alert.name]
        if not found.known:
            return []
        breached = found.breached(alert)
        if breached == state.firing:
            return []
        state.firing = breached
        event = AlertEvent(
            alert=alert.name,
            metric=alert.metric,
            state="firing" if breached else "resolved",
            value=found.value,
            threshold=found.threshold,
            direction=alert.direction,
            window=alert.window,
            project=alert.project,
            budget=found.budget,
            fired_at=at,
        )
        alert_counters.add("fired" if breached else "resolved")
        try:
            backend.add_alert_event(event)
        except Exception as error:
            self._failed(f"store an event of alert {alert.name!r}", error)
        try:
            deliver(alert, event)
        except Exception:
            fault("alert notification")
        return [event]

    def _failed(self, what: str, error: Exception) -> None:
        alert_counters.add("evaluation_errors")
        self._failed_now = True
        if self._failing:
            return
        self._failing = True
        logger.warning(
            "obsdeco could not %s (%s: %s); alert failures are counted in "
            "obsdeco.stats().alert_evaluation_errors and logged again once evaluation succeeds",
            what,
            type(error).__name__,
            str(error)[:200],
        )
