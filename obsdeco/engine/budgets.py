"""Hard budgets: before a call is sent, its worst-case cost is reserved against every budget in
scope, and the call is refused (`BudgetExceeded`) when one would be passed; when it ends, each
reservation is settled to what the call really cost.

This is the one place obsdeco raises into a user's LLM call, deliberately and only when budgets
are configured. Anything else that goes wrong here lets the call through: a call whose worst
case cannot be known (a model without a price, no bound on its output) is allowed and logged,
and so is one whose project budget's database cannot be reached.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from obsdeco.alerts.budget_usage import BudgetUsage, fire_budget_warning, register_budget_metric
from obsdeco.config import Settings, get_settings
from obsdeco.engine.accounts import (
    NO_WINDOW,
    AccountKey,
    Accounts,
    DatabaseAccounts,
    LocalAccounts,
)
from obsdeco.engine.budget_rules import Budget, BudgetExceeded, BudgetScope
from obsdeco.engine.counters import engine_counters
from obsdeco.engine.worst_case import worst_case_usd
from obsdeco.guard import fault
from obsdeco.models import LLMCall, Session
from obsdeco.runtime import get_runtime
from obsdeco.windows import period_start

logger = logging.getLogger("obsdeco.budgets")

_WATCHED_ACCOUNTS = 1_000
"""Accounts whose use alerts on metric "budget" read: the most recently used ones."""
_SESSION_BUDGET = "session budget_usd"

SessionBudgets = tuple[tuple[str, float], ...]
"""(session id, limit) of each budgeted session the code runs in, outermost first."""

_session_budgets: ContextVar[SessionBudgets] = ContextVar("obsdeco_session_budgets", default=())


def enter_session_budget(session: Session, limit_usd: float) -> Token[SessionBudgets]:
    """Put the calls made in this context under `limit_usd` for `session` (and under the
    budgets of the sessions around it)."""
    return _session_budgets.set((*_session_budgets.get(), (session.id, limit_usd)))


def exit_session_budget(token: Token[SessionBudgets]) -> None:
    _session_budgets.reset(token)


def session_budgeted() -> bool:
    """Whether this code runs in a session with a `budget_usd`."""
    return bool(_session_budgets.get())


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one call holds in one budget's account."""

    accounts: Accounts
    key: AccountKey
    estimate_usd: float
    limit_usd: float
    soft_usd: float | None


@dataclass(frozen=True, slots=True)
class _Scope:
    label: str
    scope: BudgetScope
    limit_usd: float
    soft_usd: float | None
    accounts: Accounts
    key: AccountKey
    window: timedelta | None = None


class _Ledger:
    """The process's accounts, and what it has warned about."""

    def __init__(self) -> None:
        self.local = LocalAccounts()
        self._databases: dict[int, DatabaseAccounts] = {}
        self._lock = threading.Lock()
        self._warned: set[AccountKey] = set()
        self._watched: OrderedDict[AccountKey, _Scope] = OrderedDict()
        self._unpriced: set[str] = set()

    def project_accounts(self) -> Accounts:
        """The store's shared accounts, or this process's when the store has no database."""
        engine = getattr(get_runtime().backend, "engine", None)
        if engine is None:
            return self.local
        with self._lock:
            accounts = self._databases.get(id(engine))
            if accounts is None:
                accounts = self._databases[id(engine)] = DatabaseAccounts(engine)
            return accounts

    def note_unestimated(self, model: str) -> None:
        engine_counters.add("budget_unestimated")
        with self._lock:
            first = model not in self._unpriced
            self._unpriced.add(model)
        if first:
            logger.warning(
                "obsdeco cannot bound the cost of calls to %r (no price, or no limit on its "
                "output): they are let through, outside every budget",
                model,
            )

    def watch(self, scope: _Scope) -> None:
        """Remember an account reserved in, for alerts on metric "budget"."""
        with self._lock:
            self._watched[scope.key] = scope
            self._watched.move_to_end(scope.key)
            if len(self._watched) > _WATCHED_ACCOUNTS:
                self._watched.popitem(last=False)

    def usages(self) -> dict[str, BudgetUsage]:
        """Each budget's most used account in its current window (what alerts watch)."""
        with self._lock:
            watched = list(self._watched.items())
        now = datetime.now(UTC)
        found: dict[str, BudgetUsage] = {}
        for key, scope in watched:
            if scope.window is not None and key.period + scope.window <= now:
                continue  # a window that has ended
            usage = BudgetUsage(
                scope.accounts.balance(key).spent_usd, scope.limit_usd, scope.soft_usd
            )
            known = found.get(key.budget)
            if known is None or usage.fraction > known.fraction:
                found[key.budget] = usage
        return found

    def warn_once(self, reservation: Reservation, spent: float, soft: float) -> None:
        key = reservation.key
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(
            "obsdeco budget %r passed its soft limit: $%.6f spent of a soft $%.6f (%s)",
            key.budget,
            spent,
            soft,
            key.owner,
        )
        fire_budget_warning(key.budget, spent, reservation.limit_usd, soft)


ledger = _Ledger()
register_budget_metric(ledger.usages)


def _period(budget: Budget, now: datetime) -> datetime:
    window = budget.period
    return NO_WINDOW if window is None else period_start(now, window)


def _scopes(settings: Settings, session: Session, agent_name: str | None) -> Iterator[_Scope]:
    """Every budget the call counts in, with its account."""
    now = datetime.now(UTC)
    for session_id, limit in _session_budgets.get():
        key = AccountKey(_SESSION_BUDGET, session_id, NO_WINDOW)
        yield _Scope(_SESSION_BUDGET, "session", limit, None, ledger.local, key)
    for budget in settings.budgets:
        if budget.scope == "session":
            owner = session.id
        elif budget.scope == "agent":
            if agent_name is None or budget.agent not in (None, agent_name):
                continue
            owner = agent_name
        else:
            if budget.project not in (None, session.project_name):
                continue
            owner = session.project_name
        accounts = ledger.project_accounts() if budget.scope == "project" else ledger.local
        key = AccountKey(budget.label, owner, _period(budget, now))
        yield _Scope(
            budget.label,
            budget.scope,
            budget.limit_usd,
            budget.soft_usd,
            accounts,
            key,
            budget.period,
        )


def reserve(
    *,
    session: Session,
    agent_name: str | None,
    provider_name: str,
    model: str,
    api: str,
    body: Mapping[str, Any],
) -> list[Reservation]:
    """Hold the call's worst case in every budget in scope; `BudgetExceeded` (nothing held)
    when one would be passed. The reservations to settle when the call ends."""
    settings = get_settings()
    if not settings.budgets and not _session_budgets.get():
        return []
    try:
        scopes = list(_scopes(settings, session, agent_name))
        estimate = (
            worst_case_usd(get_runtime().prices, provider_name, model, api, body)
            if scopes
            else None
        )
    except Exception:
        fault("budgets.reserve")
        return []
    if not scopes:
        return []
    if estimate is None:
        ledger.note_unestimated(model)
        return []
    held: list[Reservation] = []
    for scope in scopes:
        try:
            refusal = scope.accounts.reserve(scope.key, scope.limit_usd, estimate)
        except Exception:
            _note_unreachable(scope)
            continue
        if refusal is not None:
            settle(held, None)
            engine_counters.add("budget_refusals")
            raise BudgetExceeded(
                scope.label,
                scope.scope,
                scope.limit_usd,
                refusal.spent_usd,
                refusal.reserved_usd,
                estimate,
            )
        held.append(
            Reservation(scope.accounts, scope.key, estimate, scope.limit_usd, scope.soft_usd)
        )
        ledger.watch(scope)
    return held


def _note_unreachable(scope: _Scope) -> None:
    engine_counters.add("budget_unreachable")
    logger.warning(
        "obsdeco could not reach the accounts of budget %r; the call is let through",
        scope.label,
        exc_info=True,
    )


def settle(reservations: list[Reservation], call: LLMCall | None) -> None:
    """Release each reservation and charge what `call` cost (nothing when it failed or was
    never sent; its worst case when its tokens are unknown). Never raises."""
    cost = 0.0 if call is None or not reservations else _real_cost(call, reservations[0])
    for reservation in reservations:
        try:
            balance = reservation.accounts.settle(reservation.key, reservation.estimate_usd, cost)
        except Exception:
            fault("budgets.settle")
            continue
        soft = reservation.soft_usd
        if soft is not None and balance.spent_usd >= soft:
            ledger.warn_once(reservation, balance.spent_usd, soft)


def _real_cost(call: LLMCall, reservation: Reservation) -> float:
    if not call.success:
        return 0.0
    prompt, completion = call.prompt_tokens, call.completion_tokens
    if prompt is None or completion is None:
        return reservation.estimate_usd
    cost = get_runtime().prices.price_call(
        (call.provider_name, call.model_key, call.model),
        prompt,
        call.cached_tokens or 0,
        call.cache_creation_tokens or 0,
        completion,
    )
    return reservation.estimate_usd if cost is None else cost
