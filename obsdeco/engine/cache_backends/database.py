"""SQLite and PostgreSQL through SQLAlchemy: the table `response_cache` (key, value, expires_at),
created if missing, in the database the cache URL names (the store's own or another), through
an engine of the cache's own. Writes are upserts; expired rows are deleted when a read meets
them and, every few minutes, all at once."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from obsdeco.storage.engines import is_sqlite, sqlite_engine

_CONNECT_TIMEOUT_S = 2
_POOL_TIMEOUT_S = 1.0
_SQLITE_BUSY_TIMEOUT_MS = 2_000

metadata = MetaData()
response_cache = Table(
    "response_cache",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("expires_at", Float, nullable=True),
    Index("ix_response_cache_expires_at", "expires_at"),
)
_READ = select(response_cache.c.value).where(response_cache.c.key == bindparam("key"))
_EXPIRED = response_cache.c.expires_at <= bindparam("now")


def _engine(url: str) -> Engine:
    if is_sqlite(url):
        return sqlite_engine(url, _SQLITE_BUSY_TIMEOUT_MS)
    # No pre-ping: it would add a round trip to every hit; a dropped connection is one miss.
    return create_engine(
        url,
        pool_size=5,
        max_overflow=10,
        pool_timeout=_POOL_TIMEOUT_S,
        pool_recycle=1800,
        connect_args={"connect_timeout": _CONNECT_TIMEOUT_S},
        hide_parameters=True,
    )


class DatabaseBackend:
    """A `RemoteBackend` over one SQLAlchemy engine of its own."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)
        self.name = self.engine.url.render_as_string(hide_password=True)
        self._dialect = self.engine.dialect.name
        self._ready = False
        self._creating = threading.Lock()

    def _ensure_table(self) -> None:
        if self._ready:
            return
        with self._creating:
            if self._ready:
                return
            try:
                with self.engine.begin() as connection:
                    connection.execute(CreateTable(response_cache, if_not_exists=True))
                    for index in response_cache.indexes:
                        connection.execute(CreateIndex(index, if_not_exists=True))
            except (IntegrityError, ProgrammingError):
                # PostgreSQL's IF NOT EXISTS can still collide with another process creating it.
                with self.engine.connect() as connection:
                    if not inspect(connection).has_table(response_cache.name):
                        raise
            self._ready = True

    def read(self, key: str) -> bytes | None:
        self._ensure_table()
        with self.engine.connect() as connection:
            value = connection.execute(_READ, {"key": key}).scalar()
        return None if value is None else bytes(value)

    def write(self, items: Sequence[tuple[str, bytes, float | None]], now: float) -> None:
        self._ensure_table()
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        statement = insert(response_cache)
        statement = statement.on_conflict_do_update(
            index_elements=[response_cache.c.key],
            set_={
                "value": statement.excluded.value,
                "expires_at": statement.excluded.expires_at,
            },
        )
        rows = [{"key": key, "value": value, "expires_at": at} for key, value, at in items]
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def delete_expired(self, keys: Sequence[str], now: float) -> None:
        self._ensure_table()
        expired = _EXPIRED if not keys else and_(_EXPIRED, response_cache.c.key.in_(keys))
        with self.engine.begin() as connection:
            connection.execute(delete(response_cache).where(expired), {"now": now})

    def close(self) -> None:
        self.engine.dispose()

    def forget_after_fork(self) -> None:
        self.engine.dispose(close=False)
