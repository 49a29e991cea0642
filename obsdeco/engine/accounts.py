"""Budget accounts: what each budget has spent and what calls in flight hold, and the atomic
reservation that keeps concurrent calls from passing a limit together.

`LocalAccounts` live in this process, behind one lock (session and agent budgets, and project
budgets on a store obsdeco cannot share). `DatabaseAccounts` live in the store's database
(table `budget_accounts`), so every process writing one store shares its project budgets: a
reservation is one conditional UPDATE, which the database applies atomically (PostgreSQL's
row lock, SQLite's write lock), never a read followed by a write.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, and_, case, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite

from obsdeco.models import MAX_NAME_LENGTH
from obsdeco.storage import schema_setup
from obsdeco.storage.schema import budget_accounts

NO_WINDOW = datetime(1970, 1, 1, tzinfo=UTC)
"""The period of a budget without a window: its one account spans all time."""
_MAX_LOCAL_ACCOUNTS = 100_000
"""Accounts kept in memory; beyond, the least recently used one holding nothing is forgotten."""


@dataclass(frozen=True, slots=True)
class AccountKey:
    """One budget's account: for one session, agent or project, in one window."""

    budget: str
    owner: str
    period: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """An account as a reservation found it."""

    spent_usd: float
    reserved_usd: float


class Accounts:
    """Where a budget's accounts are kept."""

    def reserve(self, key: AccountKey, limit_usd: float, estimate_usd: float) -> Balance | None:
        """Hold `estimate_usd` if spent + reserved + it stays within `limit_usd`: None when
        held, else the balance that refuses it."""
        raise NotImplementedError

    def settle(self, key: AccountKey, estimate_usd: float, cost_usd: float) -> Balance:
        """Release a reservation and add what the call really cost; the new balance."""
        raise NotImplementedError

    def balance(self, key: AccountKey) -> Balance:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """A project budget's account in one window, as the store holds it."""

    budget: str
    """The budget's label and the project's name: "label | project"."""
    period: datetime | None
    """When its window started; None for a budget without a window."""
    limit_usd: float
    spent_usd: float
    reserved_usd: float


@dataclass(slots=True)
class _Account:
    spent: float = 0.0
    reserved: float = 0.0


class LocalAccounts(Accounts):
    """Accounts in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: OrderedDict[AccountKey, _Account] = OrderedDict()

    def reserve(self, key: AccountKey, limit_usd: float, estimate_usd: float) -> Balance | None:
        with self._lock:
            account = self._account(key)
            if account.spent + account.reserved + estimate_usd > limit_usd:
                return Balance(account.spent, account.reserved)
            account.reserved += estimate_usd
            return None

    def settle(self, key: AccountKey, estimate_usd: float, cost_usd: float) -> Balance:
        with self._lock:
            account = self._account(key)
            account.reserved = max(account.reserved - estimate_usd, 0.0)
            account.spent += cost_usd
            return Balance(account.spent, account.reserved)

    def balance(self, key: AccountKey) -> Balance:
        with self._lock:
            account = self._accounts.get(key) or _Account()
            return Balance(account.spent, account.reserved)

    def _account(self, key: AccountKey) -> _Account:
        account = self._accounts.get(key)
        if account is not None:
            self._accounts.move_to_end(key)
            return account
        if len(self._accounts) >= _MAX_LOCAL_ACCOUNTS:
            idle = next((old for old, held in self._accounts.items() if not held.reserved), None)
            if idle is not None:
                del self._accounts[idle]
        account = self._accounts[key] = _Account()
        return account


class DatabaseAccounts(Accounts):
    """Accounts in the store's database, shared by every process that writes it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._statements = engine.execution_options(isolation_level="AUTOCOMMIT")
        """Reservations and settlements are one statement each, atomic on its own: sent in
        autocommit they cost no BEGIN and COMMIT round trips."""
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._lock = threading.Lock()
        self._opened: set[AccountKey] = set()
        self._schema_ready = False

    def reserve(self, key: AccountKey, limit_usd: float, estimate_usd: float) -> Balance | None:
        self._open(key, limit_usd)
        row = _row(key)
        statement = (
            update(budget_accounts)
            .where(
                row,
                budget_accounts.c.spent_usd + budget_accounts.c.reserved_usd + estimate_usd
                <= limit_usd,
            )
            .values(reserved_usd=budget_accounts.c.reserved_usd + estimate_usd)
            .returning(budget_accounts.c.spent_usd)
        )
        with self._statements.connect() as connection:
            if connection.execute(statement).first() is not None:
                return None
        return self.balance(key)

    def settle(self, key: AccountKey, estimate_usd: float, cost_usd: float) -> Balance:
        reserved = budget_accounts.c.reserved_usd - estimate_usd
        statement = (
            update(budget_accounts)
            .where(_row(key))
            .values(
                reserved_usd=case((reserved > 0, reserved), else_=0.0),
                spent_usd=budget_accounts.c.spent_usd + cost_usd,
            )
            .returning(budget_accounts.c.spent_usd, budget_accounts.c.reserved_usd)
        )
        with self._statements.connect() as connection:
            found = connection.execute(statement).first()
        return Balance(0.0, 0.0) if found is None else Balance(found[0], found[1])

    def balance(self, key: AccountKey) -> Balance:
        statement = select(budget_accounts.c.spent_usd, budget_accounts.c.reserved_usd).where(
            _row(key)
        )
        with self._statements.connect() as connection:
            found = connection.execute(statement).first()
        return Balance(0.0, 0.0) if found is None else Balance(found[0], found[1])

    def _open(self, key: AccountKey, limit_usd: float) -> None:
        """Make the account's row exist (once per process and account)."""
        if key in self._opened:
            return
        with self._lock:
            if not self._schema_ready:
                schema_setup.prepare_schema(self._engine)  # the store's schema, this table with it
                self._schema_ready = True
        statement = (
            self._insert(budget_accounts)
            .values(
                budget=_stored_name(key),
                period=key.period,
                limit_usd=limit_usd,
                spent_usd=0.0,
                reserved_usd=0.0,
            )
            .on_conflict_do_nothing()
        )
        with self._engine.begin() as connection:
            connection.execute(statement)
        self._opened.add(key)


def _stored_name(key: AccountKey) -> str:
    return f"{key.budget} | {key.owner}"[:MAX_NAME_LENGTH]


def _row(key: AccountKey) -> ColumnElement[bool]:
    return and_(
        budget_accounts.c.budget == _stored_name(key), budget_accounts.c.period == key.period
    )


def stored_accounts(engine: Engine) -> list[StoredAccount]:
    """The project budget accounts in the store, latest windows first (none in a store no
    project budget has used)."""
    if not inspect(engine).has_table(budget_accounts.name):
        return []
    columns = budget_accounts.c
    statement = select(
        columns.budget, columns.period, columns.limit_usd, columns.spent_usd, columns.reserved_usd
    ).order_by(columns.period.desc(), columns.budget)
    with engine.connect() as connection:
        return [
            StoredAccount(name, None if period == NO_WINDOW else period, limit, spent, reserved)
            for name, period, limit, spent, reserved in connection.execute(statement)
        ]
